"""Runs in real processes, stopped by real signals: whatever instant a run is killed (SIGKILL), or
asked to stop (Ctrl-C, SIGTERM), running it again ends with the files of the run never stopped.

Every process here is a real `python -m tinygrok` (the console script's entry), on a model that
trains in about a second; the references are made the same way, in their own processes.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clirun import TINY, assert_same_run

from tinygrok.checkpoint import load_checkpoint
from tinygrok.folders import outputs_current, read_config

TINYGROK = [sys.executable, "-m", "tinygrok"]
# A checkpoint at every step: kills land inside checkpoint writes as often as between them.
CRASH_RUN = ["division", *TINY, "--threads", "1", "--patience", "0", "--checkpoint-every", "1"]
# A script that runs the command line with one part of it made slow, as on a large model: it
# writes the file argv[1] when the slow part begins, then runs `tinygrok argv[2:]`.
SLOW = """
import sys, time, pathlib
import tinygrok.plots, tinygrok.train
SLOW = {slow!r}
real_eval, evals = tinygrok.train.evaluate_run, []

def begin_slow_part():
    pathlib.Path(sys.argv[1]).write_text("slow")
    # ten minutes of work that returns to the interpreter often, as an evaluation does: one long
    # sleep would miss a signal that the kernel hands to another of the process's threads
    for _ in range(12_000):
        time.sleep(0.05)

def evaluate_run(params, data, cfg):
    evals.append(None)
    if SLOW == "third evaluation" and len(evals) == 3:
        begin_slow_part()
    return real_eval(params, data, cfg)

def plot_curves(run_dir, out=None):
    if SLOW == "figure":
        begin_slow_part()
    pathlib.Path(out).write_bytes(b"")

tinygrok.train.evaluate_run, tinygrok.plots.plot_curves = evaluate_run, plot_curves
from tinygrok.cli import main
main(sys.argv[2:])
"""


def tinygrok(*args: str | Path, script: list[str] | None = None) -> subprocess.Popen:
    """`tinygrok ARGS...` in a new process (or `script` with ARGS), stdout and stderr piped."""
    return subprocess.Popen(
        (script or TINYGROK) + [str(a) for a in args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    """Wait for `proc`; its exit code and stderr."""
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def wait_for(check, proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    """Until `check()` holds while `proc` is alive, or fail."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return
        assert proc.poll() is None, (what, proc.communicate())
        time.sleep(0.01)
    pytest.fail(f"never: {what}")


def lines_in(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def reference(out: Path, *args: str | Path) -> tuple[float, float, float]:
    """The run `tinygrok run ARGS --out OUT`, left alone; returns when, in seconds after its
    start, it wrote config.json (start-up over, training begins) and summary.json (training
    over, the figure follows), and when it ended."""
    t0 = time.time()
    code, err = finish(tinygrok("run", *args, "--out", out))
    assert code == 0, err
    took = time.time() - t0
    config, end = ((out / name).stat().st_mtime - t0 for name in ("config.json", "summary.json"))
    return config, end, took


def start_up_s() -> float:
    """How long Python takes to reach tinygrok's own code (its interpreter and `site` start-up,
    when a Ctrl-C is Python's, not tinygrok's, to report)."""
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import tinygrok"], check=True)
    return time.monotonic() - t0


def again(out: Path, args: list[str]) -> list[str | Path]:
    """The command that carries on: resume a folder that holds a run, else start it."""
    if (out / "config.json").exists():
        return ["resume", out]
    return ["run", *args, "--out", out]


def stop_repeatedly(out: Path, args: list[str], sig: int, instants: list[float]) -> None:
    """Run, then resume, the run in `out`, sending `sig` to each process the given number of
    seconds after it starts, until the run is whole; each process must end as that signal
    allows (SIGINT and SIGTERM: finished, interrupted, or killed before Python handed it to
    tinygrok)."""
    allowed = {0, 130, -sig} if sig != signal.SIGKILL else {0, -sig}
    for instant in instants:
        if outputs_current(out):
            break
        proc = tinygrok(*again(out, args))
        try:
            proc.wait(timeout=instant)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
        code, err = finish(proc)
        assert code in allowed, (instant, code, err)
        assert "Traceback" not in err, err
    if not outputs_current(out):
        code, err = finish(tinygrok(*again(out, args)))
        assert code == 0, err
    assert not list(out.glob(".*tmp*")), "a temporary file was left"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("engine", "sig", "kills"),
    [
        ("numpy", signal.SIGKILL, 12),
        ("numba", signal.SIGKILL, 6),
        ("numpy", signal.SIGTERM, 4),
        ("numpy", signal.SIGINT, 4),
    ],
)
def test_a_run_stopped_at_random_instants_ends_as_the_run_left_alone(engine, sig, kills, tmp_path):
    """A checkpoint every step; each process is stopped at a random instant of its course, then
    resumed: kills fall in start-up, in checkpoint writes, between evaluations and in the end of
    the run (its summary and figure). The run ends with the same metrics.jsonl, summary.json,
    checkpoint and a curves.png, as the run never stopped."""
    args = [*CRASH_RUN, "--engine", engine, "--steps", "60"]
    if engine == "numba":  # compiled once first, so that no instant falls in a compilation
        reference(tmp_path / "warm", *args)
    training, end, took = reference(tmp_path / "ref", *args)
    rng = random.Random(f"{engine}-{sig}")
    earliest = 0.0 if sig == signal.SIGKILL else 2 * start_up_s()
    # half the instants in training (a resumed run trains less: some fall in its end), a quarter
    # in the end of the run, a quarter in start-up
    windows = [(training, end)] * 2 + [(end, took), (earliest, training)]
    instants = [rng.uniform(*windows[i % 4]) for i in range(kills)]
    stop_repeatedly(tmp_path / "cut", args, sig, instants)
    assert_same_run(tmp_path / "cut", tmp_path / "ref")
    assert (tmp_path / "cut" / "curves.png").stat().st_size > 0


@pytest.mark.slow
def test_sigterm_to_a_real_process_interrupts_and_resumes_exactly(tmp_path):
    """SIGTERM to a real `tinygrok run` (as Ctrl-C, in the tests below): it finishes its step,
    saves, prints the resume command and exits 130; resumed, it ends as a run never stopped."""
    cut, ref = tmp_path / "cut", tmp_path / "ref"
    args = ["division", *TINY, "--threads", "1"]
    proc = tinygrok("run", *args, "--steps", "100000", "--out", cut)
    wait_for(lambda: lines_in(cut / "metrics.jsonl") >= 2, proc, "two evaluations")
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc, timeout=60)
    assert code == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith(f"Resume with: tinygrok resume {cut}")
    stopped = json.loads((cut / "summary.json").read_text())
    k = stopped["steps_run"]
    assert stopped["status"] == "interrupted" and 10 <= k < 100000
    assert load_checkpoint(cut / "checkpoint.npz", read_config(cut)[0]).step == k
    # the budget becomes k + 25 steps; the reference runs that budget from the start
    steps = str(k + 25)
    code, err = finish(tinygrok("resume", cut, "--steps", steps, "--threads", "1"))
    assert code == 0, err
    reference(ref, *args, "--steps", steps)
    assert_same_run(cut, ref)


def test_ctrl_c_abandons_an_evaluation_and_resume_does_it_again(tmp_path):
    """Ctrl-C during a long evaluation (here the one of step 20) stops the run within seconds,
    not at the evaluation's end; the checkpoint of step 20 lacks that evaluation, and the resumed
    run does it, ending as the run never stopped."""
    cut, ref, marker = tmp_path / "cut", tmp_path / "ref", tmp_path / "slow"
    args = ["division", *TINY, "--threads", "1", "--steps", "50"]
    script = [sys.executable, "-c", SLOW.format(slow="third evaluation"), str(marker)]
    proc = tinygrok("run", *args, "--out", cut, script=script)
    wait_for(marker.exists, proc, "the slow evaluation")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc, timeout=60)
    assert time.monotonic() - t0 < 5, "Ctrl-C waited for the evaluation"
    assert code == 130 and "Traceback" not in err, err
    assert "interrupted at step 20" in err
    saved = load_checkpoint(cut / "checkpoint.npz", read_config(cut)[0])
    assert saved.step == 20 and [r["step"] for r in saved.records] == [0, 10]
    code, err = finish(tinygrok("resume", cut))
    assert code == 0, err
    reference(ref, *args)
    assert_same_run(cut, ref)


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_checkpoint(tmp_path):
    """After a first Ctrl-C the run saves and draws its figure (made slow here); a second Ctrl-C
    stops it at once with one line, leaving no temporary file and a checkpoint that resumes to
    the run never stopped."""
    cut, ref, marker = tmp_path / "cut", tmp_path / "ref", tmp_path / "slow"
    args = ["division", *TINY, "--threads", "1"]
    script = [sys.executable, "-c", SLOW.format(slow="figure"), str(marker)]
    proc = tinygrok("run", *args, "--steps", "100000", "--out", cut, script=script)
    wait_for(lambda: lines_in(cut / "metrics.jsonl") >= 2, proc, "two evaluations")
    proc.send_signal(signal.SIGINT)
    wait_for(marker.exists, proc, "the slow figure")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code, err = finish(proc, timeout=60)
    assert time.monotonic() - t0 < 5
    assert code == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        "tinygrok: SIGINT again: stopped at once; the last checkpoint is kept, resume continues "
        "from it"
    )
    assert not list(cut.glob(".*tmp*"))
    k = load_checkpoint(cut / "checkpoint.npz", read_config(cut)[0]).step
    steps = str(k + 25)
    code, err = finish(tinygrok("resume", cut, "--steps", steps))
    assert code == 0, err
    reference(ref, *args, "--steps", steps)
    assert_same_run(cut, ref)


@pytest.mark.slow
def test_ctrl_c_while_the_command_starts_is_one_line(tmp_path):
    """Ctrl-C at instants through the first second (modules loading, the folder and the first
    checkpoint being made): exit 130 and one line, no traceback; the folder is then resumed, or
    run again when it holds no run yet, to the run never stopped."""
    # a run that outlasts the last instant twice over on the machine as loaded as it is now (a
    # machine whose load swings can run the next four twice as fast as this one)
    steps = 300
    while True:
        args = ["division", *TINY, "--threads", "1", "--steps", str(steps)]
        ref = tmp_path / f"ref{steps}"
        reference(tmp_path / f"warm{steps}", *args)  # a fresh checkout's first run is slower
        _, training_over, _ = reference(ref, *args)
        instants = [2 * start_up_s() + k * 0.3 for k in range(4)]
        if training_over > 2 * instants[-1] or steps >= 9600:
            break
        steps *= 2
    interrupted = 0
    for i, instant in enumerate(instants):
        out = tmp_path / f"cut{i}"
        proc = tinygrok("run", *args, "--out", out)
        time.sleep(instant)
        proc.send_signal(signal.SIGINT)
        code, err = finish(proc)
        if code == 0:  # it had already finished
            continue
        lines = err.strip().splitlines()
        assert code == 130 and "Traceback" not in err, (instant, err)
        assert lines[-1].startswith("tinygrok: ") and "interrupt" in lines[-1], err
        assert len([line for line in lines if "interrupt" in line]) == 1, err
        interrupted += 1
        code, err = finish(tinygrok(*again(out, args)))
        assert code == 0, err
        assert_same_run(out, ref)
    assert interrupted, "every run had finished before its Ctrl-C"


def test_a_second_process_on_a_running_run_is_refused(tmp_path):
    """While `tinygrok run` trains in a folder, another `resume` or `run --force` of that folder
    is refused in one line naming the first one's pid, and changes nothing the first one wrote."""
    out = tmp_path / "run"
    args = ["division", *TINY, "--threads", "1", "--steps", "100000"]
    first = tinygrok("run", *args, "--out", out)
    wait_for(lambda: lines_in(out / "metrics.jsonl") >= 2, first, "two evaluations")
    config = (out / "config.json").read_text()
    for second in (["resume", out], ["run", *args, "--out", out, "--force"]):
        code, err = finish(tinygrok(*second))
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"another tinygrok process (pid {first.pid})" in err
    assert (out / "config.json").read_text() == config
    assert first.poll() is None  # still training
    first.send_signal(signal.SIGTERM)
    code, err = finish(first)
    assert code == 130, err
