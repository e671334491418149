"""Sweeps: one recipe over many seeds and a grid of options (`tinygrok.lab.grid`), each run an
ordinary run folder written by `train` exactly as `tinygrok run` writes it, so every tool that reads
one run reads a sweep's runs too; run on a local process pool or a Dask cluster
(`tinygrok.lab.executors`), every run an idempotent task (`tinygrok.lab.runner`).

`DIR/sweep.json` holds the definition (base config, grid, seeds), so `tinygrok summarize DIR`
can rebuild the aggregates (`tinygrok.lab.aggregate`) from the folder alone. One folder holds one
sweep: a sweep of another definition is refused, unless it is to extend the one there (its grid
values and seeds are added to the sweep's, which then runs the product of them all).
"""

from __future__ import annotations

import sys
import typing
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tinygrok.errors import ConfigError
from tinygrok.folders import SWEEP
from tinygrok.lab.executors import SweepDisplay, run_dask, run_local
from tinygrok.lab.grid import Job, Sweep, differences, load_sweep, save_sweep
from tinygrok.lab.runner import run_state, warm_kernels

if typing.TYPE_CHECKING:
    from tinygrok.interrupt import StopFlag


@dataclass
class SweepOutcome:
    """What `run_sweep` or `run_jobs` did."""

    failures: dict[str, str]  # run name -> error, for runs that failed every attempt
    interrupted: bool
    sweep: Sweep | None = None  # the sweep that ran (with --extend, the one in the folder grown)


def pending(jobs: list[Job]) -> tuple[list[Job], Counter]:
    """The jobs not done yet, and how many of `jobs` are "new", "resume" or "done" (run_state).
    Every run folder is checked, so a folder holding another config is a ConfigError before
    anything runs."""
    states: Counter = Counter()
    todo = []
    for job in jobs:
        state = run_state(job.cfg, job.out)
        states[state] += 1
        if state != "done":
            todo.append(job)
    return todo, states


def run_jobs(
    todo: list[Job],
    total: int,
    stop: StopFlag,
    executor: str = "local",
    workers: int = 1,
    retries: int = 2,
    scheduler: str | None = None,
    progress: bool = True,
) -> SweepOutcome:
    """Run the jobs `todo` (of `total` runs, the others done) on `executor`, `workers` at a time,
    each tried `retries` more times if it fails; the status line counts all `total`."""
    if scheduler is None:  # the local workers share this machine's numba cache
        warm_kernels(job.cfg for job in todo)
    display = SweepDisplay(total, total - len(todo), progress)
    failures: dict[str, str] = {}
    try:
        if todo and executor == "dask":
            failures = run_dask(todo, workers, retries, scheduler, display, stop)
        elif todo:
            failures = run_local(todo, workers, retries, display, stop)
    finally:
        display.close()
    return SweepOutcome(failures, stop.reason is not None)


def settle(sweep: Sweep, out: Path, extend: bool) -> Sweep:
    """The sweep to run into `out`: `sweep` itself if `out` holds no sweep or the same one; with
    `extend`, the one in `out` grown by `sweep` (Sweep.extended). A ConfigError for a sweep of
    another recipe (run options), or of other grid values or seeds without `extend`."""
    if not (Path(out) / SWEEP).exists():
        return sweep
    saved = load_sweep(out)
    diff = differences(saved.base, sweep.base, skip={*saved.grid, *sweep.grid, "seed"})
    if diff:
        raise ConfigError(
            f"--out: {out} holds a sweep of another config ({'; '.join(diff)}); give the same "
            "run options to continue it, or choose another --out"
        )
    if (saved.grid, saved.seeds) == (sweep.grid, sweep.seeds):
        return sweep
    if extend:
        return saved.extended(sweep)
    raise ConfigError(
        f"--out: {out} holds another sweep ({saved.describe()}; here {sweep.describe()}); give its "
        "--grid and --seeds to continue it, --extend to add these to it, or choose another --out"
    )


def run_sweep(
    sweep: Sweep,
    out: Path,
    executor: str = "local",
    workers: int = 1,
    retries: int = 2,
    scheduler: str | None = None,
    progress: bool = True,
    stop: StopFlag | None = None,
    extend: bool = False,
) -> SweepOutcome:
    """Run every run of `sweep` that is not done yet into `out/runs/`, and write `out/sweep.json`.

    A folder holding another sweep is refused unless `extend` (`settle`). Every run folder is
    checked first, so a folder holding another config stops the sweep (with a ConfigError) before
    anything runs. Runs are handed out seed by seed, so a sweep stopped early still covers every
    configuration. `stop` (default: one that never rises) stops it cleanly.
    """
    from tinygrok.interrupt import StopFlag

    stop = stop or StopFlag()
    sweep = settle(sweep, out, extend)
    jobs = sweep.jobs(out)
    todo, states = pending(jobs)
    save_sweep(sweep, out)
    n_configs = len(jobs) // len(sweep.seeds)
    workers = max(1, min(workers, len(todo)))  # no idle processes

    def count(n: int, what: str, plural: str | None = None) -> str:
        return f"{n} {what if n == 1 else plural or what + 's'}"

    kind = ("local worker process", "local worker processes")
    kind = kind if executor == "local" else ("Dask worker", "Dask workers")
    where = f"the Dask cluster at {scheduler}" if scheduler else count(workers, *kind)
    print(
        f"tinygrok: sweep of {count(len(jobs), 'run')} ({count(n_configs, 'configuration')} x "
        f"{count(len(sweep.seeds), 'seed')}) on {where} -> {out}\n"
        f"tinygrok: {states['done']} skipped (already done), {states['resume']} to resume, "
        f"{states['new']} to start",
        file=sys.stderr,
    )
    todo.sort(key=lambda j: sweep.seeds.index(j.values["seed"]))
    outcome = run_jobs(todo, len(jobs), stop, executor, workers, retries, scheduler, progress)
    outcome.sweep = sweep
    return outcome
