"""Runs that survive: a run stopped (by a signal, or by a crash) and resumed ends with the same
metrics.jsonl and summary.json, bit for bit, as the same run left alone (wall-clock fields aside);
checkpoints are written atomically; a diverging run stops cleanly and keeps its last good
checkpoint. All on a tiny model with the NumPy engine, in seconds."""

from __future__ import annotations

import builtins
import dataclasses
import errno
import io
import json
import os
import re
import signal
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import pytest
from clirun import (
    TINY,
    assert_same_run,
    fake_plot_curves,
    file_digests,
    metrics_lines,
    run_cli,
    summary,
)

import tinygrok.checkpoint as checkpoint_mod
import tinygrok.plots
import tinygrok.snapshots
import tinygrok.summary
import tinygrok.train as train_mod
from tinygrok.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from tinygrok.errors import ConfigError
from tinygrok.folders import read_config
from tinygrok.params import n_params
from tinygrok.snapshots import list_snapshots, load_snapshot

REAL_LEARNING_RATE = train_mod.learning_rate
REAL_PLOT_CURVES = tinygrok.plots.plot_curves


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    """curves.png takes seconds to draw on a loaded machine and is not under test here."""
    monkeypatch.setattr("tinygrok.plots.plot_curves", fake_plot_curves)


def signal_at(monkeypatch, step: int | None, sig: int = signal.SIGINT) -> None:
    """Send this process `sig` while it computes `step` (from inside the loop's lr lookup);
    None: no more signals."""

    def learning_rate(cfg, s):
        if s == step:
            os.kill(os.getpid(), sig)
        return REAL_LEARNING_RATE(cfg, s)

    monkeypatch.setattr(train_mod, "learning_rate", learning_rate)


CASES = {
    # stop between evaluations and checkpoints: the extra evaluation is dropped on resume
    "off-schedule": (["division"], [], 37),
    # stop on an evaluation and a checkpoint step: that evaluation is left to the resumed run
    "on-schedule": (["division"], [], 50),
    # stop in the budget's last step: the final evaluation too is the resumed run's
    "last-step": (["division"], [], 60),
    "two-tasks-sgd": (["add", "sub"], ["--optimizer", "sgd", "--lr", "0.05"], 23),
    "grokfast-ema": (["mul"], ["--grokfast", "ema"], 41),
    "grokfast-ma": (["mul"], ["--grokfast", "ma", "--grokfast-window", "7"], 41),
    "float64": (["division"], ["--dtype", "float64"], 12),
    # early stop: val acc >= 6% from step 10 on, so the run stops at step 40; stopped at 25,
    # inside the streak, the resumed run must still stop at 40 (not 25 + 30)
    "early-stop-streak": (
        ["division"],
        ["--generalized-threshold", "0.06", "--patience", "30"],
        25,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_interrupted_run_resumes_to_the_same_files(case, tmp_path, monkeypatch):
    tasks, extra, stop_step = CASES[case]
    args = [*tasks, *TINY, *extra, "--steps", "60"]
    ref = run_cli("run", *args, "--out", tmp_path / "ref")
    assert ref.code == 0, ref.err

    signal_at(monkeypatch, stop_step)
    first = run_cli("run", *args, "--out", tmp_path / "cut")
    signal_at(monkeypatch, None)
    assert first.code == 130, first.err
    assert f"interrupted at step {stop_step}" in first.err
    assert f"tinygrok resume {tmp_path / 'cut'}" in first.err
    cut = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert cut["status"] == "interrupted" and cut["steps_run"] == stop_step
    saved = load_checkpoint(tmp_path / "cut" / "checkpoint.npz", read_config(tmp_path / "cut")[0])
    assert saved.step == stop_step and saved.status == "interrupted"

    second = run_cli("resume", tmp_path / "cut")
    assert second.code == 0, second.err
    assert_same_run(tmp_path / "cut", tmp_path / "ref")
    (resumed,) = json.loads((tmp_path / "cut" / "config.json").read_text())["resumes"]
    assert resumed["step"] == stop_step and resumed["command"].startswith("tinygrok resume")
    if case == "early-stop-streak":
        assert summary(tmp_path / "ref")["steps_run"] == 40


def test_run_resumed_twice_matches(tmp_path, monkeypatch):
    args = ["division", *TINY, "--steps", "60"]
    assert run_cli("run", *args, "--out", tmp_path / "ref").code == 0
    signal_at(monkeypatch, 13)
    assert run_cli("run", *args, "--out", tmp_path / "cut").code == 130
    signal_at(monkeypatch, 44)
    assert run_cli("resume", tmp_path / "cut").code == 130
    signal_at(monkeypatch, None)
    assert run_cli("resume", tmp_path / "cut").code == 0
    assert_same_run(tmp_path / "cut", tmp_path / "ref")


def test_crash_without_final_checkpoint_resumes_from_the_last_one(tmp_path, monkeypatch):
    """A crash (like kill -9) at step 58 leaves metrics.jsonl lines after the last checkpoint
    (step 50) and no summary; resume drops those lines and redoes the steps."""
    args = ["division", *TINY, "--steps", "70"]
    assert run_cli("run", *args, "--out", tmp_path / "ref").code == 0

    def crash_at_58(cfg, step):
        if step == 58:
            raise MemoryError("simulated crash")
        return REAL_LEARNING_RATE(cfg, step)

    monkeypatch.setattr(train_mod, "learning_rate", crash_at_58)
    with pytest.raises(MemoryError):
        run_cli("run", *args, "--out", tmp_path / "cut")
    signal_at(monkeypatch, None)
    cut = tmp_path / "cut"
    assert not (cut / "summary.json").exists()
    assert [r["step"] for r in metrics_lines(cut)][-1] == 50
    assert load_checkpoint(cut / "checkpoint.npz", read_config(cut)[0]).step == 50
    assert run_cli("resume", cut).code == 0
    assert_same_run(cut, tmp_path / "ref")


END_CASES = {
    # the end falls between evaluations: its evaluation is only in metrics.jsonl
    "off-schedule-end": ["--steps", "45"],
    # stopped by patience at step 40 of 60
    "early-stop": ["--steps", "60", "--generalized-threshold", "0.06", "--patience", "30"],
}


@pytest.mark.parametrize("case", END_CASES)
@pytest.mark.parametrize("lost", ["both", "curves", "stale-summary"])
def test_run_killed_after_its_final_checkpoint_is_completed(case, lost, tmp_path):
    """SIGKILL between the final checkpoint and summary.json / curves.png: resume writes them from
    the checkpoint and metrics.jsonl, trains nothing, says so in one line and exits 0."""
    out = tmp_path / "run"
    assert run_cli("run", "division", *TINY, *END_CASES[case], "--out", out).code == 0
    before, lines = summary(out), metrics_lines(out)
    if lost == "stale-summary":  # the summary of an earlier interruption
        doc = json.loads((out / "summary.json").read_text()) | {"status": "interrupted"}
        (out / "summary.json").write_text(json.dumps(doc))
    elif lost == "both":
        (out / "summary.json").unlink()
    (out / "curves.png").unlink()
    ckpt = (out / "checkpoint.npz").read_bytes()

    r = run_cli("resume", out)
    assert r.code == 0, r.err
    assert r.out == "" and len(r.err_lines) == 1 and "trained nothing" in r.err, r.err
    assert summary(out) == before and metrics_lines(out) == lines
    assert (out / "curves.png").exists()
    assert (out / "checkpoint.npz").read_bytes() == ckpt  # nothing trained
    saved = load_checkpoint(out / "checkpoint.npz", read_config(out)[0])
    assert json.loads((out / "summary.json").read_text())["wall_s"] == saved.elapsed_s
    # and now the run is whole: resume refuses, as for any finished run
    assert run_cli("resume", out).code == 2


def test_sweep_task_completes_a_run_killed_after_its_final_checkpoint(tmp_path, monkeypatch):
    """run_state / run_task: the same run in a sweep gets its summary and figure, no training."""
    from tinygrok.folders import read_config
    from tinygrok.lab.runner import run_state, run_task

    out = tmp_path / "run"
    assert run_cli("run", "division", *TINY, "--steps", "45", "--out", out).code == 0
    before = summary(out)
    (out / "summary.json").unlink()
    cfg = read_config(out)[0]
    assert run_state(cfg, out) == "resume"

    def no_training(*args, **kwargs):
        raise AssertionError("trained")

    monkeypatch.setattr(train_mod, "train", no_training)
    monkeypatch.setattr(train_mod, "resume", no_training)
    monkeypatch.setattr("tinygrok.threads.set_threads", lambda n: {})
    done = run_task(cfg.to_dict(), str(out))
    assert {k: v for k, v in done.items() if k not in ("wall_s", "steps_per_s")} == before
    assert summary(out) == before and run_state(cfg, out) == "done"


def test_a_figure_that_cannot_be_drawn_is_a_warning(tmp_path, monkeypatch):
    def broken(run_dir, out=None):
        raise RuntimeError("no display\nsecond line")

    monkeypatch.setattr(tinygrok.plots, "plot_curves", broken)
    out = tmp_path / "run"
    r = run_cli("run", "division", *TINY, "--steps", "20", "--out", out)
    assert r.code == 0, r.err
    warnings = [line for line in r.err_lines if "warning" in line]
    assert warnings == [
        f"tinygrok: warning: {out / 'curves.png'} not drawn (RuntimeError: no display)"
    ]
    assert summary(out)["status"] == "finished"


def test_resume_with_more_steps_matches_the_longer_run(tmp_path):
    """A finished 45-step run (final evaluation off the schedule, at 45) trained on to 80 steps
    equals a run of 80 steps from the start."""
    args = ["division", *TINY]
    assert run_cli("run", *args, "--steps", "80", "--out", tmp_path / "ref").code == 0
    assert run_cli("run", *args, "--steps", "45", "--out", tmp_path / "ext").code == 0
    assert metrics_lines(tmp_path / "ext")[-1]["step"] == 45
    r = run_cli("resume", tmp_path / "ext", "--steps", "80")
    assert r.code == 0, r.err
    assert_same_run(tmp_path / "ext", tmp_path / "ref")


def test_checkpoint_holds_the_whole_state_and_no_pickle(tmp_path):
    out = tmp_path / "run"
    assert (
        run_cli("run", "division", *TINY, "--steps", "30", "--grokfast", "ema", "--out", out).code
        == 0
    )
    with np.load(out / "checkpoint.npz", allow_pickle=False) as z:
        files = set(z.files)
        assert all(z[k].dtype != object for k in files)
        assert int(z["format_version"]) == CHECKPOINT_FORMAT
        assert int(z["step"]) == 30 == int(z["optimizer.t"]) == int(z["grad_filter.t"])
        run = json.loads(str(z["run_json"]))
    assert files == {
        "format_version", "config_json", "step", "params", "mask", "run_json",
        "optimizer.m", "optimizer.v", "optimizer.t", "grad_filter.mu", "grad_filter.t",
    }  # fmt: skip
    assert run["status"] == "finished"
    assert [r["step"] for r in run["records"]] == [0, 10, 20, 30]


def test_no_pickle_is_ever_loaded():
    """Every np.load in the package passes allow_pickle=False, and nothing imports pickle."""
    src = Path(train_mod.__file__).parent
    for path in src.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(c?pickle|joblib|dill)\b", text, re.M), path
        for call in re.findall(r"np\.load\(([^)]*)\)", text):
            assert "allow_pickle=False" in call, f"{path}: np.load({call})"


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A crash in the middle of writing a checkpoint leaves the previous one whole."""
    out = tmp_path / "run"
    assert run_cli("run", "division", *TINY, "--steps", "20", "--out", out).code == 0
    before = file_digests(out)
    cfg = read_config(out)[0]
    ckpt = load_checkpoint(out / "checkpoint.npz", cfg)

    def savez_then_crash(f, **arrays):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(checkpoint_mod.np, "savez", savez_then_crash)
        with pytest.raises(OSError):
            checkpoint_mod.save_checkpoint(out / "checkpoint.npz", ckpt)
    assert file_digests(out)["checkpoint.npz"] == before["checkpoint.npz"]
    assert load_checkpoint(out / "checkpoint.npz", cfg).step == 20
    assert run_cli("resume", out, "--steps", "30").code == 0


def test_diverged_run_stops_with_one_line_and_keeps_its_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = ["division", *TINY, "--lr", "3", "--checkpoint-every", "5", "--eval-every", "5"]
    r = run_cli("run", *args, "--steps", "200", "--out", out)
    assert r.code == 3
    assert len(r.err_lines) == 2 and r.err_lines[0].startswith("tinygrok: training")
    s = json.loads((out / "summary.json").read_text())
    step = s["diverged_step"]
    assert s["status"] == "diverged" and 5 < step < 200
    assert f"diverged at step {step}" in r.err_lines[1] and "--lr" in r.err_lines[1]
    ckpt = load_checkpoint(out / "checkpoint.npz", read_config(out)[0])
    assert ckpt.step == (step - 1) // 5 * 5 and np.isfinite(ckpt.params).all()


def test_parameters_turning_infinite_count_as_divergence(tmp_path):
    """lr 1e39 overflows float32 parameters in the first update, while the loss of step 1 (taken
    before the update) is still finite: only the parameter check can catch step 1."""
    out = tmp_path / "run"
    r = run_cli("run", "division", *TINY, "--lr", "1e39", "--steps", "20", "--out", out)
    assert r.code == 3
    assert json.loads((out / "summary.json").read_text())["diverged_step"] == 1
    assert load_checkpoint(out / "checkpoint.npz", read_config(out)[0]).step == 0


def test_curves_of_the_shortest_runs(tmp_path, monkeypatch):
    """A one-step run draws its curves; a run that diverges before its first evaluation draws
    its step-0 evaluation (on a linear step axis) and says so with its one line, no traceback."""
    monkeypatch.setattr(tinygrok.plots, "plot_curves", REAL_PLOT_CURVES)
    one, nan = tmp_path / "one", tmp_path / "nan"
    assert run_cli("run", "division", *TINY, "--steps", "1", "--out", one).code == 0
    assert (one / "curves.png").stat().st_size > 0
    r = run_cli("run", "division", *TINY, "--lr", "1e39", "--out", nan)
    assert r.code == 3 and len(r.err_lines) == 2, r.err
    assert (nan / "curves.png").stat().st_size > 0


def snapshot_arrays(run_dir: Path) -> dict[int, np.ndarray]:
    size = n_params(read_config(run_dir)[0])
    return {step: load_snapshot(path, size)[1] for step, path in list_snapshots(run_dir)}


def test_a_resumed_run_keeps_no_snapshot_of_its_interruption(tmp_path, monkeypatch):
    """Interrupted at step 37, the run saves a snapshot there (the end of what it ran); resumed,
    it drops it, so its snapshots, and `analyze` of them, are those of the run left alone."""
    args = ["division", *TINY, "--steps", "60", "--snapshot-every", "20"]
    assert run_cli("run", *args, "--out", tmp_path / "ref").code == 0
    signal_at(monkeypatch, 37)
    assert run_cli("run", *args, "--out", tmp_path / "cut").code == 130
    signal_at(monkeypatch, None)
    assert sorted(snapshot_arrays(tmp_path / "cut")) == [0, 20, 37]
    assert run_cli("resume", tmp_path / "cut").code == 0
    ref, cut = snapshot_arrays(tmp_path / "ref"), snapshot_arrays(tmp_path / "cut")
    assert sorted(cut) == sorted(ref) == [0, 20, 40, 60]
    for step in ref:
        np.testing.assert_array_equal(cut[step], ref[step])
    for run in ("ref", "cut"):
        assert run_cli("analyze", tmp_path / run, "--threads", "1").code == 0
    ref_analysis, cut_analysis = (
        json.loads((tmp_path / run / "analysis.json").read_text()) | {"run_dir": None}
        for run in ("ref", "cut")
    )
    assert cut_analysis == ref_analysis


def no_space_when(monkeypatch, module, failing) -> None:
    """`np.savez` as seen from `module` writes half a file and fails as a full disk does when
    `failing(arrays)` holds."""
    real = module.np.savez

    def savez(file, **arrays):
        if failing(arrays):
            with open(file, "wb") if isinstance(file, (str, Path)) else nullcontext(file) as f:
                f.write(b"PK\x03\x04 half an archive")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(file, **arrays)

    monkeypatch.setattr(module.np, "savez", savez)


@pytest.mark.parametrize("write", ["checkpoint", "snapshot", "summary"])
def test_a_full_disk_is_one_line_and_the_run_resumes_once_there_is_space(
    write, tmp_path, monkeypatch
):
    """The disk fills while the run writes its checkpoint of step 50, its snapshot of step 40,
    or its summary: one line naming the cause and `tinygrok resume`, no temporary file left, the
    last good checkpoint kept; once there is space, resume ends as the run never stopped."""
    args = ["division", *TINY, "--steps", "60", "--snapshot-every", "20"]
    assert run_cli("run", *args, "--out", tmp_path / "ref").code == 0
    cut = tmp_path / "cut"
    with monkeypatch.context() as m:
        if write == "checkpoint":
            no_space_when(m, checkpoint_mod, lambda a: "config_json" in a and a["step"] == 50)
        elif write == "snapshot":
            no_space_when(
                m, tinygrok.snapshots, lambda a: "config_json" not in a and a["step"] == 40
            )
        else:
            real_write_json = tinygrok.summary.write_json

            def write_json(path, obj):
                if path.name == "summary.json":
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
                real_write_json(path, obj)

            m.setattr(tinygrok.summary, "write_json", write_json)
        r = run_cli("run", *args, "--out", cut)
    assert r.code == 2 and len(r.err_lines) == 2, r.err  # the line that starts training, and it
    assert "No space left on device" in r.err_lines[1] and f"tinygrok resume {cut}" in r.err
    assert not [p for p in cut.rglob("*") if "tmp" in p.name]
    saved = load_checkpoint(cut / "checkpoint.npz", read_config(cut)[0])
    assert saved.step == {"checkpoint": 25, "snapshot": 25, "summary": 60}[write]
    r = run_cli("resume", cut)
    assert r.code == 0, r.err
    assert_same_run(cut, tmp_path / "ref")
    assert sorted(snapshot_arrays(cut)) == [0, 20, 40, 60]


@contextmanager
def read_only(folder: Path, monkeypatch):
    """`folder` cannot be written in: chmod for a normal user; for root, whom no file mode stops,
    every open of a file in it for writing fails as it would."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    real_open = io.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and Path(file).resolve().parent == folder.resolve():
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, mode, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(io, "open", guarded_open)
        m.setattr(builtins, "open", guarded_open)
        yield


def test_resume_of_a_read_only_run_is_one_line_and_works_once_writable(tmp_path, monkeypatch):
    args = ["division", *TINY, "--steps", "60"]
    assert run_cli("run", *args, "--out", tmp_path / "ref").code == 0
    cut = tmp_path / "cut"
    signal_at(monkeypatch, 37)
    assert run_cli("run", *args, "--out", cut).code == 130
    signal_at(monkeypatch, None)
    before = file_digests(cut)
    with read_only(cut, monkeypatch):
        r = run_cli("resume", cut)
    assert r.code == 2 and r.err_lines[0].startswith("tinygrok: resuming"), r.err
    assert len(r.err_lines) == 2 and r.err_lines[1].startswith("tinygrok: error: "), r.err
    assert "Permission denied" in r.err and f"tinygrok resume {cut}" in r.err
    assert file_digests(cut) == before
    assert run_cli("resume", cut).code == 0
    assert_same_run(cut, tmp_path / "ref")


def disk_with(monkeypatch, free: int) -> None:
    """The run folder's disk has `free` bytes left, as `shutil.disk_usage` tells the loop."""
    real = train_mod.shutil.disk_usage

    def disk_usage(path):
        return real(path)._replace(free=free)

    monkeypatch.setattr(train_mod.shutil, "disk_usage", disk_usage)


def test_too_little_space_or_no_permission_is_one_line_before_any_work(tmp_path, monkeypatch):
    """A run, or a resume, that could not write all it will write stops at once with one line:
    a new run leaves no config.json (no run to resume), a resume leaves its files as they were.
    The estimate counts the snapshots: the same run fits without them."""
    args = ["division", *TINY, "--steps", "60"]
    need = train_mod.room_needed  # the estimate, checked against the files a run really writes
    with monkeypatch.context() as m:
        disk_with(m, 2**20)  # 1 MB: the figure alone may take that
        r = run_cli("run", *args, "--out", tmp_path / "full")
    assert r.code == 2 and len(r.err_lines) == 2, r.err
    assert "MB free, but the run may need" in r.err and "run the command again" in r.err
    assert not (tmp_path / "full" / "config.json").exists()
    assert run_cli("run", *args, "--out", tmp_path / "cut", "--snapshot-every", "20").code == 0
    written = sum(p.stat().st_size for p in (tmp_path / "cut").rglob("*") if p.is_file())
    saved = load_checkpoint(tmp_path / "cut" / "checkpoint.npz", read_config(tmp_path / "cut")[0])
    assert need(dataclasses.replace(saved, step=0, records=[])) >= written
    before = file_digests(tmp_path / "cut")
    with monkeypatch.context() as m:
        real_access = os.access
        m.setattr(os, "access", lambda path, mode: mode != os.W_OK and real_access(path, mode))
        r = run_cli("resume", tmp_path / "cut", "--steps", "80")
    assert r.code == 2 and "Permission denied" in r.err_lines[-1], r.err
    assert f"tinygrok resume {tmp_path / 'cut'}" in r.err_lines[-1]
    assert file_digests(tmp_path / "cut") == before


def test_a_run_stopped_early_by_resume_steps_stays_the_planned_run(tmp_path, monkeypatch):
    """An arm interrupted and then ended sooner with `resume --steps N` (where the baseline had
    generalized) is done for the sweep or experiment that planned the longer budget; a run that
    was started with another budget is still another config, resumed or not."""
    from tinygrok.folders import read_config
    from tinygrok.lab.runner import run_state

    out = tmp_path / "run"
    signal_at(monkeypatch, 30)
    assert run_cli("run", "division", *TINY, "--steps", "60", "--out", out).code == 130
    signal_at(monkeypatch, None)
    planned = read_config(out)[0]
    assert run_state(planned, out) == "resume"
    r = run_cli("resume", out, "--steps", "45")
    assert r.code == 0, r.err
    assert summary(out)["steps_run"] == 45 and summary(out)["status"] == "finished"
    resumed = json.loads((out / "config.json").read_text())["resumes"][-1]
    assert (resumed["steps_before"], resumed["steps"]) == (60, 45)
    assert run_state(planned, out) == "done"

    # started with 45 steps, interrupted and resumed as it was: another run than the planned
    other = tmp_path / "other"
    signal_at(monkeypatch, 30)
    assert run_cli("run", "division", *TINY, "--steps", "45", "--out", other).code == 130
    signal_at(monkeypatch, None)
    assert run_cli("resume", other).code == 0
    with pytest.raises(ConfigError, match="another config"):
        run_state(planned, other)
