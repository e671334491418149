"""What a user reads while things run: the status lines of a run and of a sweep fit the terminal
they are drawn on, and keep full lines in a log file; the time left counts to the step budget until
the model has generalized, then to the early stop; a mistyped name gets a suggestion; a benchmark
that needs PyTorch says how to install it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import TINY, run_cli

from tinygrok.config import Config, from_preset
from tinygrok.errors import ConfigError
from tinygrok.lab import sweep as sweep_module
from tinygrok.lab.executors import SweepDisplay
from tinygrok.lab.grid import Sweep
from tinygrok.lab.sweep import run_sweep
from tinygrok.metrics import generalized_since
from tinygrok.status import Progress
from tinygrok.tasks import canonical_task, did_you_mean
from tinygrok.train import train

ROOT = Path(__file__).parents[1]
RECORD = {"train_acc": 1.0, "val_acc": 0.953, "train_loss": 0.00123, "val_loss": 0.0456}


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal; having no file descriptor, its width is $COLUMNS."""

    def isatty(self) -> bool:
        return True


def screen_lines(text: str) -> list[str]:
    """Every line a terminal showed: each redraw starts with a carriage return and erase-line."""
    return [seg.removesuffix("\n") for seg in text.split("\r\033[K") if seg]


def records(steps: range, val_acc: float) -> list[dict]:
    return [RECORD | {"step": s, "val_acc": val_acc} for s in steps]


def drawn(cfg: Config, history: list[dict], step: int, width: int, monkeypatch) -> str:
    """The status line at `step` on a terminal `width` columns wide, at 100 steps/s."""
    monkeypatch.setenv("COLUMNS", str(width))
    term = FakeTerminal()
    bar = Progress(cfg.step_budget, True, 0, cfg=cfg, records=history, stream=term)
    bar.rate = 100.0  # as measured between two draws
    bar.update(step, history[-1] if history else None)
    (line,) = screen_lines(term.getvalue())
    assert "\n" not in line
    return line


@pytest.mark.parametrize("width", [200, 120, 80, 60, 40, 30, 12])
@pytest.mark.parametrize("preset", ["power", "report"])  # budgets of 20,000 and 400,000 steps
@pytest.mark.parametrize("generalized", [False, True])
def test_the_status_line_never_wraps(width, preset, generalized, monkeypatch):
    cfg = from_preset(preset, ("division",))
    history = records(range(cfg.eval_every, 12_001, cfg.eval_every), 0.4)
    history += records(range(12_050, 12_301, 50), 0.97 if generalized else 0.4)
    line = drawn(cfg, history, 12_345, width, monkeypatch)
    assert len(line) <= width - 1
    if width >= 30:  # fields are dropped or shortened whole, never cut
        assert line.endswith("to budget" if not generalized else "s")
        assert "stops" in line if generalized else "to budget" in line


def test_fields_go_in_order_the_loss_pair_first(monkeypatch):
    cfg = Config()
    history = records(range(50, 12_301, 50), 0.4)
    wide = drawn(cfg, history, 12_345, 200, monkeypatch)
    assert wide == (
        "step 12,345/20,000   100.0 steps/s  train 100.0%  val  40.0%  loss 0.00123/0.0456  "
        "ETA 1m17s to budget"
    )
    at_80 = drawn(cfg, history, 12_345, 80, monkeypatch)
    assert "loss" not in at_80 and "train 100.0%" in at_80 and "ETA 1m17s to budget" in at_80
    assert len(at_80) <= 79


def test_off_a_terminal_a_full_line_every_15_seconds(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")  # no terminal: the width does not matter
    log = io.StringIO()
    cfg = Config()
    bar = Progress(cfg.step_budget, True, 0, cfg=cfg, records=[], stream=log)
    bar.update(1, RECORD | {"step": 0})
    bar.update(2, RECORD | {"step": 0})  # within 15 s of the last line: nothing
    bar.rate = 100.0
    bar.update(3, RECORD | {"step": 0}, force=True)
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in log.getvalue()
    assert lines[0] == "step 1/20,000  train 100.0%  val  95.3%  loss 0.00123/0.0456"  # no rate yet
    assert lines[1].startswith("step 3/20,000 ") and "steps/s" in lines[1] and "loss" in lines[1]


def test_time_left_is_to_the_budget_until_generalized_then_to_the_early_stop(monkeypatch):
    cfg = Config()  # patience 1,000, evaluations every 50 steps, budget 20,000
    bar = Progress(cfg.step_budget, cfg=cfg, records=records(range(50, 2001, 50), 0.4))
    bar.rate = 100.0
    assert bar.stop_step() == 20_000
    assert bar.time_left(2_000)[0] == "ETA 3m00s to budget"
    # val >= 95% since step 1,700, and stays: the loop stops at 1,700 + 1,000
    bar.records = records(range(50, 1651, 50), 0.4) + records(range(1700, 2001, 50), 0.99)
    assert generalized_since(bar.records, cfg.generalized_threshold) == 1700
    assert bar.stop_step() == 2_700
    assert bar.time_left(2_000)[0] == "generalized, stops in ~7s"
    assert bar.time_left(2_700)[0] == "generalized, stopped"
    # a fall below the threshold: back to the budget
    bar.records = bar.records + records(range(2050, 2051), 0.5)
    assert bar.time_left(2_050)[0].endswith("to budget")
    assert bar.time_left(20_000)[0] == "done"
    # patience 1,010 is not a multiple of eval_every: the stop is at the next evaluation
    bar.cfg = cfg.replace(patience=1010)
    bar.records = records(range(1700, 2001, 50), 0.99)
    assert bar.stop_step() == 2_750
    # no early stop: the budget is the end, and needs no qualifier
    bar.cfg = cfg.replace(patience=0)
    assert bar.time_left(2_000)[0] == "ETA 3m00s"


def test_the_stop_step_shown_is_where_the_loop_stops(tiny_cfg, tmp_path, capsys):
    """A run that stops early: at every evaluation of its final streak the status line named the
    step the run then stopped at (patience 25 ends between two evaluations), and its last line
    says it stopped."""
    cfg = tiny_cfg.replace(p=11, steps=300, generalized_threshold=0.06, patience=25)
    cfg = cfg.replace(engine="numpy")
    summary = train(cfg, tmp_path, progress=True)
    err = capsys.readouterr().err
    assert summary["steps_run"] < cfg.step_budget
    assert err.splitlines()[-1].endswith("generalized, stopped")
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    since = generalized_since(history, cfg.generalized_threshold)
    streak = [i for i, r in enumerate(history) if r["step"] >= since]
    for i in streak:
        bar = Progress(cfg.step_budget, cfg=cfg, records=history[: i + 1])
        assert bar.stop_step() == summary["steps_run"]


@pytest.mark.parametrize("width", [120, 80, 40, 20])
def test_the_sweep_line_never_wraps_and_notes_get_their_own_line(width, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(width))
    term = FakeTerminal()
    display = SweepDisplay(1_200, 300, stream=term)
    display.update(running=2, force=True)
    display.note("run weight_decay=0.1,seed=3 failed: ValueError: boom")
    display.update(running=2, force=True)
    display.close()
    shown = screen_lines(term.getvalue())
    assert shown[1] == "tinygrok: run weight_decay=0.1,seed=3 failed: ValueError: boom"
    for line in shown[:1] + shown[2:]:
        assert len(line) <= width - 1 and "\n" not in line
    assert shown[-1].startswith("sweep: 300/1200 runs done" if width >= 80 else "300/1200")
    assert term.getvalue().endswith("\n")


@pytest.mark.parametrize(
    "workers, where", [(2, "2 local worker processes"), (1, "1 local worker process ")]
)
def test_the_sweep_names_its_worker_processes(
    tiny_cfg, tmp_path, monkeypatch, capsys, workers, where
):
    monkeypatch.setattr(sweep_module, "warm_kernels", lambda cfg: None)
    monkeypatch.setattr(sweep_module, "run_local", lambda *args: {})
    plan = Sweep(tiny_cfg, {"weight_decay": (0.1, 1.0)}, (0, 1))
    run_sweep(plan, tmp_path, workers=workers, progress=False)
    err = capsys.readouterr().err
    assert f"on {where}" in err and "processs" not in err


def test_a_mistyped_task_gets_the_closest_names():
    with pytest.raises(
        ConfigError, match=r"^TASK: unknown task 'divsion'; did you mean division\? "
    ):
        canonical_task("Divsion")
    with pytest.raises(ConfigError, match=r"^TASK: unknown task 'fnord'; choose from addition, "):
        canonical_task("fnord")
    # an alias close to the word names its task, once
    assert did_you_mean("dvi", {"div": "division", "division": "division"}) == (
        "did you mean division?"
    )
    assert did_you_mean("beta", ["beta1", "beta2", "lr"]) == "did you mean beta2 or beta1?"
    assert did_you_mean("zzz", ["beta1", "lr"]) == ""


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "divsion", *TINY], "TASK: unknown task 'divsion'; did you mean division? (choose"),
        (
            ["sweep", "add", *TINY, "--grid", "wieght_decay=1", "--out", "never"],
            "--grid: 'wieght_decay' is not a run option; did you mean weight_decay? (keys",
        ),
        (["experiment", "divrsity"], "(got 'divrsity'; did you mean diversity?)"),
    ],
)
def test_the_command_line_suggests_in_its_one_line_error(args, message):
    r = run_cli(*args)
    assert r.code == 2 and len(r.err_lines) == 1
    assert r.err_lines[0].startswith("tinygrok: error: ") and message in r.err


@pytest.mark.parametrize(
    "script, alone",
    [("torch_reference.py", False), ("step_speed.py", True), ("time_to_grok.py", True)],
)
def test_a_benchmark_without_pytorch_says_how_to_install_it(tmp_path, script, alone):
    # a module named torch whose import fails, ahead of any installed torch
    (tmp_path / "torch.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
    )
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    r = subprocess.run(
        [sys.executable, f"benchmarks/{script}"],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stdout == ""
    hint = " (or pass --no-torch to time tinygrok alone)" if alone else ""
    assert r.stderr == f"{script}: install PyTorch to compare: pip install -e '.[parity]'{hint}\n"


def test_compare_commits_refuses_what_it_cannot_compare(tmp_path):
    """benchmarks/compare_commits.py needs a tinygrok checkout of another commit: a folder that
    is none, or this checkout itself, is one line and exit code 2, before anything is timed."""
    for other, message in [(tmp_path, "is not a tinygrok checkout"), (ROOT, "the same commit")]:
        r = subprocess.run(
            [sys.executable, "benchmarks/compare_commits.py", str(other)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 2 and r.stdout == ""
        assert len(r.stderr.splitlines()) == 1 and message in r.stderr
