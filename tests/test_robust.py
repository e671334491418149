"""Bad input never crashes the tool or damages a run: for every option and every file tinygrok
reads, a bad value is one line on stderr naming the problem and the fix, exit code 2, no
traceback, and every file already on disk is left as it was."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from clirun import TINY, fake_plot_curves, file_digests, run_cli

from tinygrok.checkpoint import load_checkpoint
from tinygrok.errors import ConfigError
from tinygrok.folders import read_config


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    """curves.png takes seconds to draw on a loaded machine and is not under test here."""
    monkeypatch.setattr("tinygrok.plots.plot_curves", fake_plot_curves)


def assert_clean_error(r, *words: str) -> None:
    """Exit 2 and one line `tinygrok: error: ...` that contains every word."""
    assert r.code == 2, (r.code, r.err)
    assert len(r.err_lines) == 1, r.err
    line = r.err_lines[0]
    assert line.startswith("tinygrok: error: ") and "Traceback" not in r.err
    for w in words:
        assert w in line, (w, line)


# ---- options ----------------------------------------------------------------------------------

BAD_OPTIONS = {
    "unknown task": (["divison"], "TASK"),
    "task twice": (["add", "addition"], "TASK"),
    "composite p for division": (["division", "--p", "12"], "--p"),
    "p too small": (["add", "--p", "1"], "--p"),
    "p negative": (["add", "--p", "-5"], "--p"),
    "p too large for memory": (["add", "--p", "100000"], "--p"),
    "p not an integer": (["add", "--p", "7.5"], "--p"),
    "empty split": (["division", "--p", "3", "--train-frac", "0.1"], "--train-frac"),
    "d_model not divisible": (["add", "--d-model", "10", "--heads", "3"], "--d-model"),
    "model too large for memory": (["add", "--d-model", "1000000", "--heads", "1"], "--d-model"),
    "unknown option": (["add", "--learning-rate", "0.1"], "--learning-rate"),
    "unknown optimizer": (["add", "--optimizer", "adam"], "--optimizer"),
    "unknown activation": (["add", "--activation", "tanh"], "--activation"),
    "unknown dtype": (["add", "--dtype", "float16"], "--dtype"),
    "unknown engine": (["add", "--engine", "cuda"], "--engine"),
    "unknown grokfast": (["add", "--grokfast", "fast"], "--grokfast"),
    "threads 0": (["add", "--threads", "0"], "--threads"),
    # options that would do nothing
    "grokfast-lamb without a filter": (["add", "--grokfast-lamb", "3"], "--grokfast-lamb"),
    "grokfast-alpha without a filter": (["add", "--grokfast-alpha", "0.9"], "--grokfast-alpha"),
    "grokfast-alpha with ma": (["add", "--grokfast", "ma", "--grokfast-alpha", "0.9"], "ema"),
    "grokfast-window with ema": (["add", "--grokfast", "ema", "--grokfast-window", "5"], "ma"),
    "momentum with adamw": (["add", "--momentum", "0.5"], "--optimizer sgd"),
    "keep-mask without sparse": (["add", "--keep-mask"], "--sparse"),
    "keep-mask with an init": (["add", "--keep-mask", "--init", "report-xavier"], "--keep-mask"),
}
# fractions and rates outside their ranges, NaN and infinities included
for option, values in {
    "--train-frac": ["0", "1", "-0.5", "1.5", "nan", "inf"],
    "--sparse": ["1", "-0.1", "nan"],
    "--lr": ["0", "-1e-3", "nan", "inf", "-inf"],
    "--weight-decay": ["-1", "nan", "inf"],
    "--momentum": ["1", "-0.5", "nan"],
    "--beta1": ["1", "nan"],
    "--beta2": ["1.5", "-inf"],
    "--eps": ["0", "nan"],
    "--init-scale": ["0", "-1", "inf"],
    "--memorized-threshold": ["0", "1.01", "nan"],
    "--generalized-threshold": ["-1", "inf"],
    "--grokfast-alpha": ["1", "nan"],
}.items():
    for v in values:
        BAD_OPTIONS[f"{option} {v}"] = (["add", option, v], option)
# sizes and counts that must be positive (or, for some, non-negative)
for option, v in [
    ("--layers", "0"),
    ("--d-model", "0"),
    ("--heads", "0"),
    ("--d-mlp", "-1"),
    ("--batch-size", "0"),
    ("--steps", "0"),
    ("--steps", "-10"),
    ("--eval-every", "0"),
    ("--checkpoint-every", "0"),
    ("--warmup-steps", "-1"),
    ("--patience", "-1"),
    ("--seed", "-1"),
    ("--grokfast-window", "0"),
]:
    BAD_OPTIONS[f"{option} {v}"] = (["add", option, v], option)


@pytest.mark.parametrize("case", BAD_OPTIONS)
def test_bad_option_is_one_line_and_writes_nothing(case, tmp_path):
    args, option = BAD_OPTIONS[case]
    out = tmp_path / "run"
    r = run_cli("run", *TINY, "--steps", "20", *args, "--out", out)  # args override TINY
    assert_clean_error(r, option)
    assert not out.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["run", "add", *TINY],
        ["sweep", "add", *TINY, "--seeds", "0-1"],
        ["experiment", "init", *TINY],
        ["phase", "add", *TINY, "--grid", "weight_decay=0,1"],
    ],
)
def test_an_empty_out_is_refused(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_clean_error(run_cli(*command, "--out", ""), "--out", "empty")
    assert list(tmp_path.iterdir()) == []


def test_options_are_refused_only_where_no_run_uses_them(tmp_path):
    """A sweep over optimizers uses --momentum in its SGD runs, the noise experiment in its SGD
    arms, a grid of filters --grokfast-lamb; refused where no run would."""
    from tinygrok.cli.options import refuse_unused
    from tinygrok.config import Config

    refuse_unused({"momentum"}, [Config(), Config(optimizer="sgd")])
    refuse_unused({"grokfast_lamb"}, [Config(), Config(grokfast="ema")])
    with pytest.raises(ConfigError, match="--grokfast-lamb"):
        refuse_unused({"grokfast_lamb"}, [Config(), Config()])
    out = tmp_path / "exp"
    r = run_cli("experiment", "noise", *TINY, "--momentum", "0.5", "--report-only", "--out", out)
    assert_clean_error(r, "holds no run of this experiment yet")  # --momentum passed the check
    r = run_cli("experiment", "init", *TINY, "--momentum", "0.5", "--report-only", "--out", out)
    assert_clean_error(r, "--momentum", "--optimizer sgd")
    r = run_cli("sweep", "add", *TINY, "--grid", "lr=0.1,1", "--momentum", "0.5", "--out", out)
    assert_clean_error(r, "--momentum")
    assert not out.exists()


def test_presets_that_set_dependent_options_still_run_and_report(tmp_path):
    """The report preset (and its experiment's SGD arms, momentum 0) pass the check."""
    out = tmp_path / "report"
    r = run_cli("experiment", "report", "--preset", "report", "--report-only", "--out", out)
    assert_clean_error(r, "holds no run of this experiment yet")


# ---- run folders --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_runs(tmp_path_factory):
    """A finished 40-step run, and a run interrupted at step 30 of 60 (made once, copied)."""
    import tinygrok.plots
    import tinygrok.train as train_mod

    root = tmp_path_factory.mktemp("base")
    real_plot, tinygrok.plots.plot_curves = tinygrok.plots.plot_curves, fake_plot_curves
    real_lr = train_mod.learning_rate

    def stop_at_30(cfg, step):
        if step == 30:
            os.kill(os.getpid(), signal.SIGINT)
        return real_lr(cfg, step)

    try:
        assert run_cli("run", "division", *TINY, "--steps", "40", "--out", root / "done").code == 0
        train_mod.learning_rate = stop_at_30
        r = run_cli("run", "division", *TINY, "--steps", "60", "--out", root / "cut")
        assert r.code == 130
    finally:
        train_mod.learning_rate = real_lr
        tinygrok.plots.plot_curves = real_plot
    return root


@pytest.fixture
def done(base_runs, tmp_path) -> Path:
    """A copy of the finished run."""
    return Path(shutil.copytree(base_runs / "done", tmp_path / "done"))


@pytest.fixture
def cut(base_runs, tmp_path) -> Path:
    """A copy of the interrupted run."""
    return Path(shutil.copytree(base_runs / "cut", tmp_path / "cut"))


def test_out_holding_a_run_is_refused_and_resume_suggested(done):
    before = file_digests(done)
    r = run_cli("run", "division", *TINY, "--steps", "40", "--out", done)
    assert_clean_error(r, "--out", "already holds a run", f"tinygrok resume {done}", "--force")
    assert file_digests(done) == before


def test_force_starts_the_run_over(done):
    r = run_cli("run", "add", *TINY, "--steps", "20", "--out", done, "--force")
    assert r.code == 0, r.err
    assert json.loads((done / "summary.json").read_text())["tasks"] == ["addition"]
    assert len((done / "metrics.jsonl").read_text().splitlines()) == 3


def test_force_removes_the_old_runs_analysis(done):
    """`tinygrok analyze`'s files describe the old run: starting over removes them with it."""
    from tinygrok.folders import ANALYSIS, ANALYSIS_FIGURES

    for name in (ANALYSIS, *ANALYSIS_FIGURES, "notes.txt"):
        (done / name).write_text("old")
    r = run_cli("run", "add", *TINY, "--steps", "20", "--out", done, "--force")
    assert r.code == 0, r.err
    assert not any((done / name).exists() for name in (ANALYSIS, *ANALYSIS_FIGURES))
    assert (done / "notes.txt").read_text() == "old"  # files of the user's own stay


def test_out_that_is_a_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    assert_clean_error(run_cli("run", "add", *TINY, "--out", f), "--out", str(f))
    assert_clean_error(run_cli("run", "add", *TINY, "--out", f / "run"), "--out")
    assert f.read_text() == "mine"


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process that holds the run's lock until killed (as a second tinygrok would)."""
    code = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(run_dir / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.ftruncate(fd, 0)\n"  # as RunLock does: a longer pid left by an earlier holder goes
        "os.write(fd, f'{os.getpid()}\\n'.encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_process_on_a_run_is_refused(cut):
    before = file_digests(cut)
    holder = hold_lock(cut)
    try:
        r = run_cli("resume", cut)
        assert_clean_error(r, str(cut), f"pid {holder.pid}", "another tinygrok process")
        r = run_cli("run", "division", *TINY, "--out", cut, "--force")
        assert_clean_error(r, f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert file_digests(cut) == before
    assert run_cli("resume", cut).code == 0  # the holder is gone: the lock is free


def test_stale_lock_of_a_dead_process_does_not_block(cut):
    holder = hold_lock(cut)
    holder.send_signal(signal.SIGKILL)  # dies holding the lock, leaving .lock with its pid
    holder.wait()
    assert (cut / ".lock").read_text().strip() == str(holder.pid)
    t0 = time.monotonic()
    r = run_cli("resume", cut)
    assert r.code == 0, r.err
    assert time.monotonic() - t0 < 30


def test_lock_is_held_while_training(tmp_path, monkeypatch):
    """During a run, the folder's lock cannot be taken by anyone else."""
    import tinygrok.train as train_mod

    real_lr, seen = train_mod.learning_rate, []

    def probe(cfg, step):
        if step == 5:
            fd = os.open(tmp_path / "run" / ".lock", os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append("free")
            except BlockingIOError:
                seen.append("held")
            finally:
                os.close(fd)
        return real_lr(cfg, step)

    monkeypatch.setattr(train_mod, "learning_rate", probe)
    assert run_cli("run", "add", *TINY, "--steps", "10", "--out", tmp_path / "run").code == 0
    assert seen == ["held"]


# ---- resume: every file it reads ---------------------------------------------------------------


def corrupt_member(path: Path, member: str) -> None:
    """Flip one byte inside the data of one array of an .npz (its CRC no longer matches)."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    raw = bytearray(path.read_bytes())
    h = info.header_offset  # local file header: 30 bytes, then the name and the extra field
    name_len = int.from_bytes(raw[h + 26 : h + 28], "little")
    extra_len = int.from_bytes(raw[h + 28 : h + 30], "little")
    data = h + 30 + name_len + extra_len
    raw[data + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def rewrite_checkpoint(path: Path, **changes) -> None:
    """Rewrite an .npz with some arrays changed (None: removed)."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    for k, v in changes.items():
        if v is None:
            del arrays[k]
        else:
            arrays[k] = v
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def nan_params(path: Path) -> None:
    with np.load(path) as z:
        params = z["params"]
    rewrite_checkpoint(path, params=np.full_like(params, np.nan))


def edit_config(run_dir: Path, **changes) -> None:
    doc = json.loads((run_dir / "config.json").read_text())
    doc["config"].update(changes)
    (run_dir / "config.json").write_text(json.dumps(doc))


def checkpoint_config(run_dir: Path) -> dict:
    with np.load(run_dir / "checkpoint.npz") as z:
        return json.loads(str(z["config_json"]))


def edit_records(path: Path, change) -> None:
    """Rewrite a checkpoint with `change(run)` applied to its run_json (status, elapsed_s and the
    evaluation records)."""
    with np.load(path) as z:
        run = json.loads(str(z["run_json"]))
    change(run)
    rewrite_checkpoint(path, run_json=np.array(json.dumps(run)))


def nan_array(path: Path, name: str, value: float = np.nan) -> None:
    """Rewrite a checkpoint with one entry of the array `name` made `value`."""
    with np.load(path) as z:
        arr = z[name].copy()
    arr.flat[arr.size // 2] = value
    rewrite_checkpoint(path, **{name: arr})


def set_record(index: int, **fields):
    """A change for `edit_records`: fields of one record replaced."""

    def change(run: dict) -> None:
        run["records"][index].update(fields)

    return change


def edit_threads(run_dir: Path, threads: object) -> None:
    doc = json.loads((run_dir / "config.json").read_text())
    doc["threads"] = threads
    (run_dir / "config.json").write_text(json.dumps(doc))


BAD_RUN_FILES = {
    "config.json missing": (lambda d: (d / "config.json").unlink(), "no config.json"),
    "config.json not JSON": (
        lambda d: (d / "config.json").write_text("{'config': oops"),
        "not valid JSON",
    ),
    "config.json truncated": (
        lambda d: (d / "config.json").write_bytes((d / "config.json").read_bytes()[:100]),
        "not valid JSON",
    ),
    "config.json binary garbage": (
        lambda d: (d / "config.json").write_bytes(b"\xff\xfe\x00garbage"),
        "config.json",
    ),
    "config.json without config": (
        lambda d: (d / "config.json").write_text('{"engine": "numpy"}'),
        '"config"',
    ),
    "config.json a list": (lambda d: (d / "config.json").write_text("[1, 2]"), '"config"'),
    "config.json bad value": (lambda d: edit_config(d, lr=float("nan")), "--lr"),
    "config.json unknown key": (lambda d: edit_config(d, learning_rate=0.1), "learning_rate"),
    "config.json wrong type": (lambda d: edit_config(d, tasks=7), "config.json"),
    "config.json mismatch": (lambda d: edit_config(d, weight_decay=0.5), "weight_decay"),
    "checkpoint missing": (lambda d: (d / "checkpoint.npz").unlink(), "missing"),
    "checkpoint empty": (lambda d: (d / "checkpoint.npz").write_bytes(b""), "corrupted"),
    "checkpoint truncated": (
        lambda d: (d / "checkpoint.npz").write_bytes((d / "checkpoint.npz").read_bytes()[:3000]),
        "corrupted",
    ),
    "checkpoint byte flipped": (
        lambda d: corrupt_member(d / "checkpoint.npz", "params.npy"),
        "corrupted",
    ),
    "checkpoint not a zip": (
        lambda d: (d / "checkpoint.npz").write_text("not a checkpoint"),
        "corrupted",
    ),
    "checkpoint other format version": (
        lambda d: rewrite_checkpoint(d / "checkpoint.npz", format_version=np.array(2)),
        "format version 2",
    ),
    "checkpoint without params": (
        lambda d: rewrite_checkpoint(d / "checkpoint.npz", params=None),
        "params",
    ),
    "checkpoint params wrong shape": (
        lambda d: rewrite_checkpoint(d / "checkpoint.npz", params=np.zeros(5, np.float32)),
        "params",
    ),
    "checkpoint params NaN": (lambda d: nan_params(d / "checkpoint.npz"), "NaN"),
    "checkpoint of another config": (
        lambda d: rewrite_checkpoint(
            d / "checkpoint.npz",
            config_json=np.array(json.dumps(checkpoint_config(d) | {"d_model": 16})),
        ),
        "d_model",
    ),
    "checkpoint with a pickled object": (
        lambda d: rewrite_checkpoint(d / "checkpoint.npz", step=np.array([{"x": 1}], dtype=object)),
        "corrupted",
    ),
    "checkpoint optimizer step mismatch": (
        lambda d: rewrite_checkpoint(d / "checkpoint.npz", **{"optimizer.t": np.array(7)}),
        "optimizer",
    ),
    "checkpoint records broken": (
        lambda d: rewrite_checkpoint(d / "checkpoint.npz", run_json=np.array('{"status": 1}')),
        "corrupted",
    ),
    # finite values and ranges: a damaged checkpoint is named, never taken for a divergence
    "checkpoint optimizer moment NaN": (
        lambda d: nan_array(d / "checkpoint.npz", "optimizer.m"),
        "optimizer.m holds NaN",
    ),
    "checkpoint optimizer moment infinite": (
        lambda d: nan_array(d / "checkpoint.npz", "optimizer.v", np.inf),
        "optimizer.v holds NaN or infinite",
    ),
    "checkpoint parameter infinite": (
        lambda d: nan_array(d / "checkpoint.npz", "params", -np.inf),
        "params holds",
    ),
    "checkpoint mask not 0 or 1": (
        lambda d: nan_array(d / "checkpoint.npz", "mask", 0.5),
        "mask",
    ),
    "checkpoint accuracy above 1": (
        lambda d: edit_records(d / "checkpoint.npz", set_record(2, val_acc=1.5)),
        "val_acc 1.5",
    ),
    "checkpoint accuracy NaN": (
        lambda d: edit_records(d / "checkpoint.npz", set_record(1, train_acc=float("nan"))),
        "train_acc nan",
    ),
    "checkpoint accuracy a string": (
        lambda d: edit_records(d / "checkpoint.npz", set_record(1, train_acc="0.5")),
        "train_acc '0.5'",
    ),
    "checkpoint negative loss": (
        lambda d: edit_records(d / "checkpoint.npz", set_record(1, val_loss=-1.0)),
        "val_loss",
    ),
    "checkpoint negative record step": (
        lambda d: edit_records(d / "checkpoint.npz", set_record(1, step=-10)),
        "step -10",
    ),
    "checkpoint record step not an integer": (
        lambda d: edit_records(d / "checkpoint.npz", set_record(1, step=10.5)),
        "step 10.5",
    ),
    "checkpoint records out of order": (
        lambda d: edit_records(d / "checkpoint.npz", lambda run: run["records"].reverse()),
        "records are at steps 20, 10, 0, not every 10 steps",
    ),
    "checkpoint record missing": (
        lambda d: edit_records(d / "checkpoint.npz", lambda run: run["records"].pop(1)),
        "records are at steps 0, 20, not every",
    ),
    "checkpoint record infinite lr": (
        lambda d: edit_records(d / "checkpoint.npz", set_record(1, lr=float("inf"))),
        "lr inf",
    ),
    "checkpoint elapsed time negative": (
        lambda d: edit_records(d / "checkpoint.npz", lambda run: run.update(elapsed_s=-1.0)),
        "elapsed time",
    ),
    "checkpoint unknown status": (
        lambda d: edit_records(d / "checkpoint.npz", lambda run: run.update(status="paused")),
        "'paused'",
    ),
    "config.json thread count a string": (lambda d: edit_threads(d, {"blas": "two"}), '"two"'),
    "config.json thread count zero": (lambda d: edit_threads(d, {"blas": 0}), "threads"),
    "config.json thread count a float": (lambda d: edit_threads(d, {"blas": 1.5}), "1.5"),
    "summary.json corrupted": (
        lambda d: (d / "summary.json").write_text('{"status": "inter'),
        "summary.json",
    ),
}


@pytest.mark.parametrize("case", BAD_RUN_FILES)
def test_resume_with_a_bad_file_is_one_line_and_damages_nothing(case, cut):
    damage, words = BAD_RUN_FILES[case]
    damage(cut)
    before = file_digests(cut)
    r = run_cli("resume", cut)
    assert_clean_error(r, words)
    assert "diverge" not in r.err
    assert file_digests(cut) == before


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    assert_clean_error(run_cli("resume", tmp_path / "nowhere"), "RUN_DIR", "no config.json")
    (tmp_path / "mine").mkdir()
    assert_clean_error(run_cli("resume", tmp_path / "mine"), "tinygrok run")
    assert not (tmp_path / "mine" / ".lock").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "whole budget"),
        (["--steps", "40"], "--steps"),
        (["--steps", "10"], "--steps"),
        (["--steps", "0"], "--steps"),
        (["--steps", "many"], "--steps"),
        (["--threads", "0"], "--threads"),
    ],
)
def test_resume_of_a_finished_run_needs_more_steps(args, words, done):
    before = file_digests(done)
    assert_clean_error(run_cli("resume", done, *args), words)
    assert file_digests(done) == before


def test_resume_of_a_diverged_run_is_refused(tmp_path):
    out = tmp_path / "run"
    assert run_cli("run", "division", *TINY, "--lr", "1e39", "--out", out).code == 3
    before = file_digests(out)
    assert_clean_error(run_cli("resume", out), "diverged", "--lr")
    assert file_digests(out) == before


def test_resume_of_an_early_stopped_run_is_refused(tmp_path):
    out = tmp_path / "run"
    args = ["--generalized-threshold", "0.06", "--patience", "30", "--steps", "60"]
    assert run_cli("run", "division", *TINY, *args, "--out", out).code == 0
    assert json.loads((out / "summary.json").read_text())["steps_run"] == 40
    assert_clean_error(run_cli("resume", out, "--steps", "100"), "stopped early", "--patience")


def test_interrupted_fixture_is_resumable(cut):
    """The damaged-file cases above start from a run that resumes fine as it is."""
    cfg = read_config(cut)[0]
    assert load_checkpoint(cut / "checkpoint.npz", cfg).step == 30
    assert run_cli("resume", cut).code == 0


@pytest.mark.parametrize("tasks", [["division"], ["addition", "subtraction"]])
def test_an_init_scale_that_overflows_is_a_clean_divergence(tasks, tmp_path):
    """--init-scale 1e39 overflows float32 before the first step: the run diverges at step 0 with
    one line naming the option (no warning, no figure to fail), exit 3, and a closing report with
    no accuracies (of the run or of a task) to show; resume refuses it."""
    out = tmp_path / "run"
    r = run_cli("run", *tasks, *TINY, "--init-scale", "1e39", "--out", out)
    assert r.code == 3 and "Traceback" not in r.err
    assert "status diverged" in r.out and "final" not in r.out, r.out
    assert len(r.err_lines) == 2 and r.err_lines[0].startswith("tinygrok: training"), r.err
    assert r.err_lines[1] == (
        "tinygrok: diverged at step 0: the initial parameters overflow float32; try a smaller "
        "--init-scale"
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "diverged" and s["diverged_step"] == 0 and s["final_val_acc"] is None
    assert_clean_error(run_cli("resume", out), "diverged at step 0", "--init-scale")
