"""The command line as a user meets it: the installed `tinygrok` script in a subprocess, so that
the real stderr and exit code are checked. Every bad input is one line on stderr that names the
option, exit code 2, and no traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinygrok.config import Config
from tinygrok.params import Params, is_matrix, param_shapes

SCRIPT = shutil.which("tinygrok", path=str(Path(sys.executable).parent)) or shutil.which("tinygrok")
# Without the console script (an unusual install), run the same entry point it would call.
COMMAND = [SCRIPT] if SCRIPT else [sys.executable, "-c", "from tinygrok.cli import main; main()"]
TINY = ["--p", "7", "--layers", "1", "--d-model", "8", "--heads", "2", "--d-mlp", "16"]
TINY += ["--batch-size", "16", "--eval-every", "10", "--patience", "0"]
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "checkpoint.npz", "curves.png")


def tinygrok(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


BAD_INPUT = [
    (["run", "fnord"], "TASK"),
    (["run", "division", "--p", "91"], "--p"),  # 91 = 7 * 13
    (["run", "div", "--p", "1"], "--p"),
    (["run", "add", "--train-frac", "0"], "--train-frac"),
    (["run", "add", "--train-frac", "1"], "--train-frac"),
    (["run", "add", "--train-frac", "1.5"], "--train-frac"),
    (["run", "add", "--train-frac", "-0.2"], "--train-frac"),
    (["run", "add", "--sparse", "1"], "--sparse"),
    (["run", "add", "--sparse", "-0.1"], "--sparse"),
    (["run", "add", "--d-model", "30", "--heads", "4"], "--d-model"),
    (["run", "add", "--layers", "0"], "--layers"),
    (["run", "add", "--layers", "-1"], "--layers"),
    (["run", "add", "--d-model", "0"], "--d-model"),
    (["run", "add", "--heads", "0"], "--heads"),
    (["run", "add", "--batch-size", "0"], "--batch-size"),
    (["run", "add", "--steps", "0"], "--steps"),
    (["run", "add", "--lr", "0"], "--lr"),
    (["run", "add", "--lr", "-0.001"], "--lr"),
    (["run", "add", "--lr", "nan"], "--lr"),
    (["run", "add", "--lr", "inf"], "--lr"),
    (["run", "add", "--weight-decay", "-1"], "--weight-decay"),
    (["run", "add", "--weight-decay", "nan"], "--weight-decay"),
    (["run", "add", "--weight-decay", "inf"], "--weight-decay"),
    (["run", "add", "--layers", "two"], "--layers"),
]


@pytest.mark.parametrize("args, option", BAD_INPUT, ids=[" ".join(a[1:]) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_naming_the_option(args, option, tmp_path):
    r = tinygrok(*args, "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("tinygrok: error: ")
    assert option in lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "run").exists(), "nothing is written for bad input"


def test_help_lists_the_run_command():
    r = tinygrok("--help")
    assert r.returncode == 0, r.stderr
    assert "run" in r.stdout
    r = tinygrok("run", "--help")
    assert r.returncode == 0, r.stderr
    for option in ("--p", "--train-frac", "--sparse", "--weight-decay", "--out", "--force"):
        assert option in r.stdout


@pytest.mark.slow
def test_a_run_is_never_overwritten_without_force(tmp_path):
    out = tmp_path / "run"
    r = tinygrok("run", "addition", *TINY, "--steps", "30", "--out", str(out), "-q")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["steps_run"] == 30
    before = {name: (out / name).read_bytes() for name in RUN_FILES}

    r = tinygrok("run", "addition", *TINY, "--steps", "20", "--out", str(out), "-q")
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "--out" in lines[0] and "--force" in lines[0], r.stderr
    assert {name: (out / name).read_bytes() for name in RUN_FILES} == before

    # with --force the run starts over; this one is README.md's `run division --sparse 0.9`
    r = tinygrok("run", "division", "--sparse", "0.9", *TINY, "--steps", "20", "--out", str(out))
    assert r.returncode == 2, "still refused without --force"
    r = tinygrok(
        "run", "division", "--sparse", "0.9", *TINY, "--steps", "20", "--out", str(out), "--force"
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks"] == ["division"] and summary["steps_run"] == 20
    cfg = Config.from_dict(json.loads((out / "config.json").read_text())["config"])
    assert cfg.sparse == 0.9
    with np.load(out / "checkpoint.npz", allow_pickle=False) as ck:
        mask = Params(param_shapes(cfg), ck["mask"])
    for name, shape in mask.shapes.items():
        zeros = int((mask[name] == 0).sum())
        assert zeros == (round(0.9 * mask[name].size) if is_matrix(name, shape) else 0), name


@pytest.mark.slow
def test_closing_lines_name_the_thresholds_the_run_used(tmp_path):
    args = ["run", "--preset", "tiny", "--steps", "300", "--out", str(tmp_path / "r"), "-q"]
    r = tinygrok(*args, "--memorized-threshold", "0.5", "--generalized-threshold", "0.6")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    lines = r.stdout.splitlines()
    assert lines[0] == f"memorized (train >= 50%):     step {summary['memorized_step']:,}"
    assert lines[1].startswith("generalized (val >= 60%):  ")
