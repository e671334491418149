"""The examples run (in their quick mode) and assert what they claim; the reading guide's line
counts are those of the files."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

# example -> (extra arguments, a line its output must contain, files it must write under OUT)
EXAMPLES = {
    "01_data.py": ([], "checked", []),
    "02_forward.py": ([], "the logits match model.forward", []),
    "03_backward.py": ([], "every gradient matches its finite differences", []),
    "04_train_addition.py": (["--out", "OUT"], "memorized (train >= 99%)", ["curves.png"]),
    "05_toy_linear_grokking.py": (
        ["--out", "OUT"],
        "half the weight decay: generalized",
        ["05_toy_linear_grokking.png"],
    ),
    "06_sparse_vs_dense.py": (
        ["--out", "OUT"],
        "sparse start: 90.0% of the weight-matrix entries are zero",
        ["dense/summary.json", "sparse/summary.json"],
    ),
    "07_notebook.py": (
        ["--out", "OUT"],
        "6 + 3 mod 23 = ",
        ["run/summary.json", "07_curves.png", "07_spectrum.png", "07_attention.png"],
    ),
}


def test_every_example_is_run_here():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs_quick(name, tmp_path):
    args, expected, files = EXAMPLES[name]
    out = tmp_path / "out"
    argv = [str(out) if a == "OUT" else a for a in args]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), "--quick", *argv],
        cwd=tmp_path,  # anything written to a default path lands here, not in the repository
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert expected in proc.stdout
    for f in files:
        assert (out / f).stat().st_size > 0, f


def load_tool():
    spec = importlib.util.spec_from_file_location(
        "reading_lengths", ROOT / "tools/reading_lengths.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_reading_guide_line_counts_match_the_files():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools/reading_lengths.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout


def test_line_count_check_can_fail():
    tool = load_tool()
    real = tool.wc_l(ROOT / "tinygrok/model.py")
    text = (
        "| # | file | lines | what |\n|---|---|---|---|\n"
        f"| 1 | [m](../tinygrok/model.py) | {real + 1} | x |\n"
        f"| 2 | [t](../tinygrok/tasks.py) | 1 | x |\n"
        "| | **total** | 0 | |\n\nafter the table"
    )
    new = tool.updated(text)
    assert new != text
    total = real + tool.wc_l(ROOT / "tinygrok/tasks.py")
    assert f"| {real} |" in new and f"| **total** | {total} |" in new
    assert "tinygrok/model.py" not in tool.unlisted_modules(text)
    assert "tinygrok/train.py" in tool.unlisted_modules(text)


def test_same_metrics_tells_a_recomputed_run_from_another(tmp_path):
    """tools/same_metrics.py: equal at every shared evaluation but wall-clock -> exit 0; a loss
    that differs in its last digit -> exit 1, naming the step, then the two runs side by side at
    the last step they share."""
    rows = [
        {"step": s, "train_loss": 1.0 / (s + 1), "val_acc": 0.01, "elapsed_s": float(s)}
        for s in range(0, 300, 50)
    ]

    def write(name: str, records: list[dict]) -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return path

    def run(a: Path, b: Path) -> subprocess.CompletedProcess:
        tool = str(ROOT / "tools/same_metrics.py")
        return subprocess.run([sys.executable, tool, a, b], capture_output=True, text=True)

    kept = write("kept.jsonl", rows[:4])  # a run stopped earlier
    longer = write("again.jsonl", [r | {"elapsed_s": 2 * r["elapsed_s"]} for r in rows])
    same = run(kept, longer)
    assert (
        same.returncode == 0 and "4 evaluations in common, steps 0 to 150: identical" in same.stdout
    )
    rows[2]["train_loss"] = np.nextafter(rows[2]["train_loss"], 1.0)
    other = run(kept, write("other.jsonl", rows))
    assert other.returncode == 1 and "first difference at step 100" in other.stdout
    rows[3]["val_acc"] = 0.5
    apart = run(kept, write("apart.jsonl", rows)).stdout.splitlines()[1]
    assert apart == "at step 150: training loss 0.00662 and 0.00662, validation 1.00% and 50.00%"


def test_after_fit_gives_each_runs_range_in_the_window(tmp_path):
    """tools/after_fit.py: per run, the training loss's range, the lowest training and highest
    validation accuracy within --from/--to only; a folder without metrics: one line, exit 2."""
    run = tmp_path / "run"
    run.mkdir()
    rows = [
        {"step": 0, "train_loss": 5.0, "train_acc": 0.01, "val_acc": 0.5},
        {"step": 100, "train_loss": 1e-8, "train_acc": 1.0, "val_acc": 0.02},
        {"step": 200, "train_loss": 0.3, "train_acc": 0.9, "val_acc": 0.03},
        {"step": 300, "train_loss": 1e-9, "train_acc": 0.2, "val_acc": 0.9},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tool = [sys.executable, str(ROOT / "tools/after_fit.py"), "--from", "100", "--to", "200"]
    out = subprocess.run([*tool, run], capture_output=True, text=True)
    assert out.returncode == 0
    assert f"{run}\n  loss 1.0e-08-3.0e-01, train >= 90.0%, val <= 3.0%, step 200" in out.stdout
    missing = subprocess.run([*tool, tmp_path / "none"], capture_output=True, text=True)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def test_report_runs_gives_a_line_per_run_finished_or_still_training(tmp_path):
    """tools/report_runs.py: a finished run's line from its summary.json; a run still training
    (its summary.json of an earlier budget, its evaluations past it) from its evaluations, the
    same numbers with status "running"; then the CPU the runs started on, naming them; a folder
    with no runs: one line on stderr, exit 2."""
    done = tmp_path / "exp" / "tiny" / "seed3"
    cmd = [sys.executable, "-m", "tinygrok", "run", "division", "--preset", "tiny", "--seed", "3"]
    cmd += ["--steps", "300", "-q", "--threads", "1", "--out", str(done)]
    subprocess.run(cmd, check=True, capture_output=True)
    training = tmp_path / "exp" / "tiny-again" / "seed3"
    training.mkdir(parents=True)
    for name in ("config.json", "metrics.jsonl"):
        (training / name).write_bytes((done / name).read_bytes())
    # and the summary of an earlier, shorter budget, which a resume has carried the run past
    stale = json.loads((done / "summary.json").read_text()) | {"steps_run": 100, "step_budget": 100}
    (training / "summary.json").write_text(json.dumps(stale))
    tool = [sys.executable, str(ROOT / "tools/report_runs.py")]
    out = subprocess.run([*tool, tmp_path / "exp"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    header, finished, again, blank, on = out.stdout.splitlines()  # in folder order
    assert header.split() == ["arm", "seed", "status", "steps", "mem", "gen", "val", "max", "last"]
    summary = json.loads((done / "summary.json").read_text())
    assert finished.split()[:3] == ["tiny", "3", "finished"]
    assert again.split()[:3] == ["tiny-again", "3", "running"]
    assert finished.split()[3:] == again.split()[3:]  # the same steps, thresholds, accuracies
    assert finished.split()[3] == "300/300" and finished.split()[4] == str(
        summary["memorized_step"]
    )
    cpu = json.loads((done / "config.json").read_text())["provenance"]["cpu"]
    assert blank == "" and on == f"on {cpu}: tiny 3, tiny-again 3"
    empty = subprocess.run([*tool, tmp_path / "none"], capture_output=True, text=True)
    assert empty.returncode == 2 and len(empty.stderr.strip().splitlines()) == 1
