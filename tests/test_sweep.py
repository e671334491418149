"""`tinygrok sweep` and `tinygrok summarize`: every combination of seeds and grid values becomes a
run folder; the local pool and a two-worker Dask cluster give the same runs.csv; a worker killed
mid-sweep still yields every run, identical to the run left alone; a rerun does no new work; bad
grid input is one line and exit 2 before anything runs. Tiny runs (p 11, 1 layer, d_model 8)."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from clirun import TINY, metrics_lines, run_cli, spawn, summary

SWEEP = ["sweep", "add", *TINY, "--steps", "30", "--seeds", "0-1", "--grid", "weight_decay=0.1,1"]
NAMES = [f"weight_decay={wd},seed={s}" for wd in ("0.1", "1") for s in (0, 1)]


def read_csv(path: Path) -> list[dict]:
    """runs.csv rows without wall_s (the one column that differs between two identical runs)."""
    with path.open() as f:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "local"
    r = run_cli(*SWEEP, "--workers", "2", "--out", out)
    assert r.code == 0, r.err
    return out


@pytest.mark.slow
def test_local_sweep_writes_every_run_and_the_aggregates(local_sweep):
    out = local_sweep
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(NAMES)
    rows = read_csv(out / "runs.csv")
    assert [r["run"] for r in rows] == NAMES  # configuration by configuration, seeds inside
    for row in rows:
        s = summary(out / "runs" / row["run"])
        assert row["status"] == s["status"] == "finished"
        assert row["seed"] == str(s["seed"]) and row["run"].endswith(f"seed={s['seed']}")
        assert row["weight_decay"] in row["run"] and row["steps_run"] == "30"
        assert float(row["final_train_acc"]) == s["final_train_acc"]
        # options that differ from the defaults are columns too
        assert (row["p"], row["d_model"], row["steps"]) == ("11", "8", "30")
    table = (out / "summary.md").read_text()
    assert "| weight_decay | seeds | memorized step | generalized step | delay | generalized |" in (
        table
    )
    assert "| 0.1 | 2 |" in table and "| 1 | 2 |" in table
    assert (out / "sweep.png").stat().st_size > 10_000


@pytest.mark.slow
def test_rerun_does_no_new_work_and_summarize_rebuilds(local_sweep):
    out = local_sweep
    before = {n: (out / "runs" / n / "summary.json").stat().st_mtime_ns for n in NAMES}
    csv_before = (out / "runs.csv").read_text()
    r = run_cli(*SWEEP, "--workers", "2", "--out", out)
    assert r.code == 0, r.err
    assert "4 skipped (already done), 0 to resume, 0 to start" in r.err
    assert "| 0.1 | 2 |" in r.out  # the final table is printed
    after = {n: (out / "runs" / n / "summary.json").stat().st_mtime_ns for n in NAMES}
    assert after == before
    for name in ("runs.csv", "summary.md", "sweep.png"):
        (out / name).unlink()
    r = run_cli("summarize", out)
    assert r.code == 0, r.err
    assert (out / "runs.csv").read_text() == csv_before
    assert (out / "summary.md").read_text() == r.out.rstrip("\n") + "\n"
    assert (out / "sweep.png").exists()


@pytest.mark.slow
def test_a_folder_of_another_config_is_an_error(local_sweep):
    r = run_cli(*SWEEP, "--steps", "40", "--out", local_sweep)  # the last --steps counts
    assert r.code == 2
    assert len(
        r.err_lines
    ) == 1 and "holds a sweep of another config (steps 30 there, 40 here)" in (r.err)


@pytest.mark.slow
def test_damaged_run_folders(local_sweep, tmp_path):
    """A run killed between its last checkpoint and its summary is trained again; a run whose
    checkpoint is damaged fails alone: reported, exit 1, and every other run still finishes."""
    out, broken, unsummarized = tmp_path / "s", NAMES[0], NAMES[1]
    for name in (broken, unsummarized):
        shutil.copytree(local_sweep / "runs" / name, out / "runs" / name)
        (out / "runs" / name / "summary.json").unlink()
    (out / "runs" / broken / "checkpoint.npz").write_bytes(b"not a checkpoint")
    r = run_cli(*SWEEP, "--workers", "1", "--out", out)
    assert r.code == 1
    assert "0 skipped (already done), 2 to resume, 2 to start" in r.err
    assert f"run {broken} failed: ConfigError: " in r.err and "checkpoint.npz" in r.err
    rows = {row["run"]: row["status"] for row in read_csv(out / "runs.csv")}
    assert rows == {name: "incomplete" if name == broken else "finished" for name in NAMES}
    assert summary(out / "runs" / unsummarized) == summary(local_sweep / "runs" / unsummarized)
    assert metrics_lines(out / "runs" / unsummarized) == metrics_lines(
        local_sweep / "runs" / unsummarized
    )


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="needs dask")
def test_dask_local_cluster_gives_the_same_runs_csv(local_sweep, tmp_path):
    r = run_cli(*SWEEP, "--executor", "dask", "--workers", "2", "--out", tmp_path / "dask")
    assert r.code == 0, r.err
    assert "on 2 Dask workers" in r.err
    assert read_csv(tmp_path / "dask" / "runs.csv") == read_csv(local_sweep / "runs.csv")


@pytest.mark.slow
def test_another_sweep_into_the_folder_is_refused_unless_extended(tmp_path):
    """Other --grid values into a sweep's folder: one line, exit 2, nothing written; with --extend
    the sweep there grows to the product of all the values, its finished runs left alone."""
    out, small = tmp_path / "s", [*TINY, "--steps", "20", "--workers", "1"]
    assert run_cli("sweep", "add", *small, "--grid", "weight_decay=0.1", "--out", out).code == 0
    definition = (out / "sweep.json").read_text()
    first = out / "runs" / "weight_decay=0.1,seed=0" / "summary.json"
    done_at = first.stat().st_mtime_ns
    r = run_cli("sweep", "add", *small, "--grid", "weight_decay=1", "--out", out)
    assert r.code == 2 and len(r.err_lines) == 1, r.err
    assert "holds another sweep (grid weight_decay=0.1; seeds 0;" in r.err and "--extend" in r.err
    assert (out / "sweep.json").read_text() == definition
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["weight_decay=0.1,seed=0"]
    r = run_cli("sweep", "add", *small, "--grid", "weight_decay=1", "--extend", "--out", out)
    assert r.code == 0, r.err
    assert "1 skipped (already done), 0 to resume, 1 to start" in r.err
    assert json.loads((out / "sweep.json").read_text())["grid"] == {"weight_decay": [0.1, 1.0]}
    assert [row["run"] for row in read_csv(out / "runs.csv")] == [
        "weight_decay=0.1,seed=0",
        "weight_decay=1,seed=0",
    ]
    assert first.stat().st_mtime_ns == done_at
    # another recipe is refused even with --extend, and its own options named
    r = run_cli("sweep", "add", *small, "--lr", "0.01", "--grid", "weight_decay=3", "--extend",
                "--out", out)  # fmt: skip
    assert r.code == 2 and len(r.err_lines) == 1 and "lr 0.001 there, 0.01 here" in r.err


def test_extending_a_sweep_adds_values_and_seeds_after_its_own(tiny_cfg):
    from tinygrok.errors import ConfigError
    from tinygrok.lab.grid import Sweep

    there = Sweep(tiny_cfg, {"weight_decay": (0.1, 1.0), "lr": (1e-3,)}, (0, 1))
    here = Sweep(tiny_cfg, {"weight_decay": (3.0, 1.0), "lr": (1e-3,)}, (1, 5))
    grown = there.extended(here)
    assert grown.grid == {"weight_decay": (0.1, 1.0, 3.0), "lr": (1e-3,)}
    assert grown.seeds == (0, 1, 5) and grown.base == there.base
    assert len(grown.jobs(Path("x"))) == 3 * 3
    with pytest.raises(ConfigError, match="^--extend: the sweep there varies weight_decay, lr"):
        there.extended(Sweep(tiny_cfg, {"sparse": (0.5,)}, (0,)))


def lock_is_free(run: Path) -> bool:
    """Whether no process holds the run folder's lock."""
    import fcntl

    with open(run / ".lock") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def run_in_flight(proc: subprocess.Popen, out: Path) -> Path:
    """A run folder of the sweep `proc` writes into `out` that is in flight and checkpointed (five
    evaluations logged, no summary yet), waiting for one up to 60 s."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        for run in sorted((out / "runs").glob("seed=*")):
            metrics = run / "metrics.jsonl"
            lines = metrics.read_text().count("\n") if metrics.exists() else 0
            if lines >= 5 and not (run / "summary.json").exists():
                return run
        time.sleep(0.02)
    raise AssertionError("no run was ever in flight")


@pytest.mark.slow
def test_a_killed_worker_loses_no_run(tmp_path):
    """Local executor: SIGKILL the worker process that trains one run, mid-run. The pool breaks;
    the sweep restarts it, the runs resume from their checkpoints, and the killed run ends exactly
    as the same run trained alone."""
    out = tmp_path / "killed"
    args = ["sweep", "add", *TINY, "--steps", "200", "--seeds", "0-1", "--workers", "2"]
    proc = spawn(*args, "--out", out)
    victim = run_in_flight(proc, out)
    pid = int((victim / ".lock").read_text())  # the worker that holds the run's lock
    assert pid != proc.pid
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "a worker process died" in stderr
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["seed=0", "seed=1"]
    for name in runs:
        assert summary(out / "runs" / name)["status"] == "finished"
    alone = tmp_path / "alone"
    seed = victim.name.split("=")[1]
    r = run_cli("run", "add", *TINY, "--steps", "200", "--seed", seed, "--out", alone)
    assert r.code == 0, r.err
    assert metrics_lines(victim) == metrics_lines(alone)
    assert summary(victim) == summary(alone)


@pytest.mark.slow
def test_a_killed_sweep_takes_its_workers_along_and_its_rerun_ends_every_run(tmp_path):
    """SIGKILL the `tinygrok sweep` process itself mid-sweep: its workers end with it (none
    trains on, orphaned, holding a run's lock), and the same command run again at once finishes
    every run, the interrupted ones exactly as the same run trained alone."""
    out = tmp_path / "killed"
    args = ["sweep", "add", *TINY, "--steps", "400", "--seeds", "0-1", "--workers", "2"]
    proc = spawn(*args, "--out", out)
    victim = run_in_flight(proc, out)  # at step 40 or so: far from its end
    worker = int((victim / ".lock").read_text())
    try:
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while not lock_is_free(victim) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lock_is_free(victim), "the worker outlived its sweep"
        assert not (victim / "summary.json").exists(), "the worker trained on, orphaned"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)
        proc.stdout.close()
        proc.stderr.close()
    r = run_cli(*args, "--out", out)
    assert r.code == 0, r.err
    alone = tmp_path / "alone"
    seed = victim.name.split("=")[1]
    assert run_cli("run", "add", *TINY, "--steps", "400", "--seed", seed, "--out", alone).code == 0
    for name in ("seed=0", "seed=1"):
        assert summary(out / "runs" / name)["status"] == "finished"
    assert metrics_lines(victim) == metrics_lines(alone)
    assert summary(victim) == summary(alone)


@pytest.mark.slow
@pytest.mark.parametrize("retries", [0, 2])
def test_a_run_that_keeps_failing_is_tried_retries_plus_one_times(tmp_path, retries):
    """A run that fails with an OSError on every attempt is tried 1 + --retries times, then
    reported (exit 1) while the other run finishes.

    The failure: a folder stands where the run writes its step-20 snapshot's temporary file, so
    every attempt fails at step 20 with IsADirectoryError (a fresh start does not clear it, as
    it is no snapshot). The count: the first attempt starts at step 0 and checkpoints step 0;
    every later one resumes from that checkpoint, and each resume is listed in config.json."""
    out, bad = tmp_path / "s", "seed=1"
    (out / "runs" / bad / "snapshots" / ".step_0000020.npz.tmp").mkdir(parents=True)
    r = run_cli(
        "sweep", "add", *TINY, "--steps", "30", "--seeds", "0-1", "--snapshot-every", "10",
        "--workers", "2", "--retries", str(retries), "--out", out,
    )  # fmt: skip
    assert r.code == 1, r.err
    failed = [line for line in r.err_lines if " failed: " in line]
    assert len(failed) == 1 and failed[0].startswith(f"tinygrok: run {bad} failed: ")  # once
    assert r.err_lines[-1].startswith("tinygrok: 1 run failed (reported above)")  # the count ends
    assert "IsADirectoryError" in failed[0] and ".step_0000020.npz.tmp" in failed[0]
    config = json.loads((out / "runs" / bad / "config.json").read_text())
    assert [resume["step"] for resume in config.get("resumes", [])] == [0] * retries
    assert not (out / "runs" / bad / "summary.json").exists()
    assert summary(out / "runs" / "seed=0")["status"] == "finished"
    rows = {row["run"]: row["status"] for row in read_csv(out / "runs.csv")}
    assert rows == {"seed=0": "finished", bad: "incomplete"}


def parent_pid(pid: int) -> int:
    """The parent of a live process, from /proc (field 4 of /proc/PID/stat, after the name)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="needs dask")
def test_a_killed_dask_worker_loses_no_run(tmp_path):
    """Dask executor: SIGKILL the worker process of the local cluster that trains one run,
    mid-run, after its first checkpoint. Dask moves the run to another worker, where it resumes
    from its checkpoint: every run finishes, with the runs.csv of a local-pool sweep."""
    args = ["sweep", "add", *TINY, "--steps", "200", "--seeds", "0-1", "--workers", "2"]
    out = tmp_path / "dask"
    proc = spawn(*args, "--executor", "dask", "--out", out)
    victim = run_in_flight(proc, out)
    pid = int((victim / ".lock").read_text())  # the Dask worker that holds the run's lock
    assert parent_pid(pid) == proc.pid  # a worker process of this sweep's local cluster
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "on 2 Dask workers" in stderr and "failed" not in stderr
    config = json.loads((victim / "config.json").read_text())
    assert [resume["step"] > 0 for resume in config["resumes"]] == [True]  # resumed once
    r = run_cli(*args, "--out", tmp_path / "local")
    assert r.code == 0, r.err
    rows = read_csv(out / "runs.csv")
    assert [row["status"] for row in rows] == ["finished", "finished"]
    assert rows == read_csv(tmp_path / "local" / "runs.csv")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--grid", "wd=0.1"], "--grid: 'wd' is not a run option"),
        (["--grid", "weight_decay=0.1,abc"], "--grid weight_decay: 'abc' is not a number"),
        (["--grid", "layers=1,2.5"], "--grid layers: '2.5' is not an integer"),
        (["--grid", "weight_decay"], "--grid: expected KEY=V1,V2,..."),
        (
            ["--grid", "weight-decay=0.1,1", "--grid", "lr=0.1,0.1"],
            "--grid lr: 0.1 is listed twice",
        ),
        (["--grid", "seed=1,2"], "--grid seed: not a grid key; give seeds with --seeds"),
        (["--grid", "train_frac=0.5,1"], "train_frac=1,seed=0: --train-frac: must be in (0, 1)"),
        (["--grid", "sparse=0,1"], "sparse=1,seed=0: --sparse: must be in [0, 1)"),
        (["--grid", "lr=0.1", "--lr", "0.2"], "--grid lr: also given as --lr"),
        (["--seeds", "3-1"], "--seeds: the range 3-1 runs backwards"),
        (["--seeds", "0-2,2"], "--seeds: seed 2 is listed twice"),
        (["--seeds", "a"], "--seeds: expected seeds such as 0-9"),
        (["--seeds", "0-99999999999"], "--seeds: at most 100,000 seeds"),
        (["--seeds", "0-60000,70000-130000"], "--seeds: at most 100,000 seeds"),
        (["--seeds", "0-1", "--seed", "3"], "--seed: a sweep takes its seeds from --seeds"),
        (["--workers", "0"], "--workers: must be an integer >= 1"),
        (["--scheduler", "tcp://x:1"], "--scheduler: only with --executor dask"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_anything_runs(tmp_path, extra, message):
    r = run_cli("sweep", "add", *TINY, "--steps", "30", *extra, "--out", tmp_path / "s")
    assert r.code == 2
    assert r.err_lines == [f"tinygrok: error: {r.err_lines[0].split('error: ', 1)[1]}"]
    assert message in r.err
    assert not (tmp_path / "s" / "runs").exists() and not (tmp_path / "s" / "sweep.json").exists()


def test_without_dask_the_dask_executor_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    r = run_cli("sweep", "add", *TINY, "--executor", "dask", "--out", tmp_path / "s")
    assert r.code == 2
    assert r.err_lines == [
        'tinygrok: error: --executor dask: Dask is not installed; pip install "tinygrok[dask]"'
    ]


def test_summarize_of_a_folder_that_is_no_sweep(tmp_path):
    r = run_cli("summarize", tmp_path)
    assert r.code == 2 and "holds no sweep.json" in r.err
