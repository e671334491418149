"""Sweeps: one recipe over many seeds and a grid of options, on a local process pool or a Dask
cluster.

A sweep is the product  seeds x grid[k1] x grid[k2] x ...  of an ordinary run config. Each
combination is one run folder, `DIR/runs/k1=v1,k2=v2,seed=s`, written by `train` exactly as
`tinygrok run` writes it, so every tool that reads one run reads a sweep's runs too.

Every run is an idempotent task (`run_task`): a folder that holds a finished (or diverged) run of
the same config is left alone, one with a checkpoint is resumed (a run that had finished but lost
its summary or figure only gets them written), anything else starts from step 0.
So running the sweep again, a retried task, and a task moved off a lost worker all redo only the
missing work. A folder that holds a run of another config is an error, never overwritten.

`DIR/sweep.json` holds the definition (base config, grid, seeds), so `tinygrok summarize DIR`
can rebuild the aggregates (`tinygrok.aggregate`) from the folder alone.

Parallelism is one process per run and one thread per process: small models gain nothing from
several BLAS threads, and on a shared machine extra threads spin and slow everyone down.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import math
import multiprocessing
import os
import re
import signal
import sys
import tempfile
import time
import types
import typing
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from tinygrok import __version__
from tinygrok.config import Config, validate
from tinygrok.errors import ConfigError
from tinygrok.tasks import did_you_mean

if typing.TYPE_CHECKING:
    from tinygrok.interrupt import StopFlag

SWEEP_FILE = "sweep.json"
RUNS_DIR = "runs"
# Summary statuses that end a run for good: rerunning the same config reproduces them exactly.
DONE = ("finished", "diverged")
# More seeds than this is a typo, not a sweep (each is a run folder).
MAX_SEEDS = 100_000
# Config fields a grid may not vary, and what to use instead.
NOT_IN_GRID = {
    "tasks": "give the tasks as arguments; one sweep trains one task list",
    "seed": "give seeds with --seeds",
}
# Read by BLAS, OpenMP and numba when they load, so they must be set before a worker imports numpy.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def format_value(v: object) -> str:
    """A grid value as folder names and tables show it: 1.0 -> '1', 0.001 -> '0.001', True ->
    'true'. Floats use the shortest repr that reads back to the same number, so distinct values
    always give distinct names."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        text = repr(v)
        return text[:-2] if text.endswith(".0") else text
    return str(v)


def _field_kinds() -> dict[str, tuple[type, bool]]:
    """Config field -> (the type of its values, whether it may be None): `float | None` ->
    (float, True)."""
    kinds = {}
    for name, hint in typing.get_type_hints(Config).items():
        if isinstance(hint, types.UnionType):
            kinds[name] = (next(a for a in typing.get_args(hint) if a is not type(None)), True)
        else:
            kinds[name] = (hint, False)
    return kinds


def _parse_value(key: str, text: str, kind: type, optional: bool) -> object:
    if not text:
        raise ConfigError(f"--grid {key}: empty value; write {key}=V1,V2,...")
    if optional and text.lower() == "none":
        return None
    if kind is bool:
        truth = {"1": True, "true": True, "yes": True, "on": True}
        truth |= {"0": False, "false": False, "no": False, "off": False}
        if text.lower() not in truth:
            raise ConfigError(f"--grid {key}: {text!r} is not a yes/no value (true, false, 1, 0)")
        return truth[text.lower()]
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"--grid {key}: {text!r} is not {what}") from None


def parse_grid(items: tuple[str, ...]) -> dict[str, tuple]:
    """`("weight_decay=0.1,1", "sparse=0,0.9")` -> `{"weight_decay": (0.1, 1.0), "sparse": (0.0,
    0.9)}`. Keys are Config field names (the dashed option spelling works too); values are parsed
    by the field's type. ConfigError for anything else."""
    kinds = _field_kinds()
    grid: dict[str, tuple] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise ConfigError(
                f"--grid: expected KEY=V1,V2,... such as weight_decay=0.1,1 (got {item!r})"
            )
        if key in NOT_IN_GRID:
            raise ConfigError(f"--grid {key}: not a grid key; {NOT_IN_GRID[key]}")
        if key not in kinds:
            hint = did_you_mean(key, [k for k in kinds if k not in NOT_IN_GRID])
            raise ConfigError(
                f"--grid: {key!r} is not a run option; {hint + ' ' if hint else ''}(keys are run "
                "options such as weight_decay, lr, train_frac, sparse)"
            )
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice; list all its values in one --grid")
        parsed = tuple(_parse_value(key, v.strip(), *kinds[key]) for v in values.split(","))
        repeated = [format_value(v) for v, n in Counter(parsed).items() if n > 1]
        if repeated:
            raise ConfigError(f"--grid {key}: {repeated[0]} is listed twice")
        grid[key] = parsed
    return grid


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0-9' -> 0..9; '0,3,7'; '0-4,10-12'. ConfigError for anything else, a repeated seed, or
    more than MAX_SEEDS seeds (checked before the list is built, so a huge range costs nothing)."""
    seeds: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ConfigError(
                f"--seeds: expected seeds such as 0-9, 0,3,7 or 0-4,10 (got {text!r})"
            )
        lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if hi < lo:
            raise ConfigError(f"--seeds: the range {lo}-{hi} runs backwards; write {hi}-{lo}")
        if len(seeds) + hi - lo + 1 > MAX_SEEDS:
            raise ConfigError(f"--seeds: at most {MAX_SEEDS:,} seeds, one run each (got {text!r})")
        seeds.extend(range(lo, hi + 1))
    repeated = [s for s, n in Counter(seeds).items() if n > 1]
    if repeated:
        raise ConfigError(f"--seeds: seed {repeated[0]} is listed twice")
    return tuple(seeds)


@dataclass(frozen=True)
class Job:
    """One run of a sweep."""

    name: str  # folder name: "weight_decay=0.1,sparse=0.9,seed=3"
    label: str  # its configuration without the seed: "weight_decay=0.1,sparse=0.9" ("" if no grid)
    values: dict  # grid values and the seed, by field name
    cfg: Config  # validated
    out: Path  # run folder


@dataclass(frozen=True)
class Sweep:
    """The definition of a sweep: every run is `base` with one grid combination and one seed."""

    base: Config  # the config of the first combination: every run is this with `values` replaced
    grid: dict[str, tuple]
    seeds: tuple[int, ...]

    def jobs(self, out: Path) -> list[Job]:
        """Every run, configuration by configuration, seeds innermost; each config validated
        (ConfigError naming the combination otherwise)."""
        jobs = []
        for combo in itertools.product(*self.grid.values()):
            grid_values = dict(zip(self.grid, combo, strict=True))
            label = ",".join(f"{k}={format_value(v)}" for k, v in grid_values.items())
            for seed in self.seeds:
                values = grid_values | {"seed": seed}
                name = ",".join(f"{k}={format_value(v)}" for k, v in values.items())
                try:
                    cfg = validate(self.base.replace(**values))
                except ConfigError as e:
                    raise ConfigError(f"{name}: {e}") from None
                jobs.append(Job(name, label, values, cfg, Path(out) / RUNS_DIR / name))
        return jobs

    def to_dict(self) -> dict:
        """sweep.json: enough to list every run and its config again."""
        return {
            "tinygrok_version": __version__,
            "base": self.base.to_dict(),
            "grid": {k: list(v) for k, v in self.grid.items()},
            "seeds": list(self.seeds),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Sweep:
        """Inverse of `to_dict`."""
        return cls(
            Config.from_dict(d["base"]),
            {k: tuple(v) for k, v in d["grid"].items()},
            tuple(d["seeds"]),
        )


def make_sweep(
    build: Callable[[dict], Config],
    grid_items: tuple[str, ...],
    seeds: str | None,
    given: set[str] = frozenset(),
) -> Sweep:
    """The sweep the command line asks for. `build(values)` is the validated config of the run
    options the user gave (the fields in `given`) with `values` on top, exactly as `tinygrok run`
    would build it. Every combination is validated here, before anything runs."""
    grid = parse_grid(grid_items)
    for key in grid:
        if key in given:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"--grid {key}: also given as {flag}; set it in one place")
    if seeds is not None and "seed" in given:
        raise ConfigError("--seed: a sweep takes its seeds from --seeds; give only --seeds")
    first = {k: v[0] for k, v in grid.items()}
    try:
        base = build(first)
    except ConfigError as e:
        name = ",".join(f"{k}={format_value(v)}" for k, v in first.items())
        raise ConfigError(f"{name}: {e}" if name else str(e)) from None
    sweep = Sweep(base, grid, parse_seeds(seeds) if seeds is not None else (base.seed,))
    sweep.jobs(Path("."))  # validates every combination
    return sweep


def load_sweep(out: Path) -> Sweep:
    """The definition saved in `out/sweep.json` (ConfigError if there is none)."""
    path = Path(out) / SWEEP_FILE
    try:
        return Sweep.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"DIR: {out} holds no {SWEEP_FILE}; is it a sweep folder?") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: unreadable sweep definition ({e})") from None


def save_sweep(sweep: Sweep, out: Path) -> None:
    """Write `out/sweep.json`."""
    from tinygrok.checkpoint import write_json

    Path(out).mkdir(parents=True, exist_ok=True)
    write_json(Path(out) / SWEEP_FILE, sweep.to_dict())


def read_summary(run_dir: Path) -> dict | None:
    """A run's summary.json, or None if it has none yet."""
    try:
        return json.loads((Path(run_dir) / "summary.json").read_text())
    except FileNotFoundError:
        return None


def run_state(cfg: Config, run_dir: Path) -> str:
    """What a run folder needs: "new" (start at step 0), "resume" (continue from its checkpoint,
    or only write the summary and figure of a run killed after its final checkpoint) or "done"
    (diverged, or finished with a current curves.png). ConfigError if it holds a run of another
    config."""
    if not (run_dir / "config.json").exists():
        return "new"
    from tinygrok.checkpoint import read_config

    saved, _ = read_config(run_dir)
    a, b = saved.to_dict(), cfg.to_dict()
    diff = [f"{k} {format_value(a[k])} there, {format_value(b[k])} here" for k in a if a[k] != b[k]]
    if diff:
        raise ConfigError(
            f"--out: {run_dir} holds a run of another config ({'; '.join(diff)}); "
            "remove that folder or choose another --out"
        )
    from tinygrok.checkpoint import outputs_current

    summary, checkpoint = read_summary(run_dir), (run_dir / "checkpoint.npz").exists()
    # a finished run whose figure is missing or stale is completed from its checkpoint
    status = summary["status"] if summary is not None else None
    if status == "diverged" or (
        status == "finished" and (not checkpoint or outputs_current(run_dir))
    ):
        return "done"
    return "resume" if checkpoint else "new"


class PoolStop:
    """The stop flag of a run in a local pool worker: up once the parent sets the pool's Event
    (the loop in `train` reads `reason` and enters `abandonable()`, as of a `StopFlag`)."""

    def __init__(self, event):
        self.event = event

    @property
    def reason(self) -> str | None:
        """Why the run should stop, or None while it should go on."""
        return "the sweep was stopped" if self.event.is_set() else None

    def abandonable(self) -> contextlib.AbstractContextManager:
        """An evaluation in a worker runs to its end: the Event is read between steps."""
        return contextlib.nullcontext()


_pool_event = None  # in a local pool worker: the Event the parent sets to stop the sweep


def _init_pool_worker(event) -> None:
    global _pool_event
    _pool_event = event
    # Ctrl-C reaches the whole process group; the parent alone decides, and sets the event.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_task(cfg_dict: dict, run_dir: str) -> dict | None:
    """One run of a sweep, idempotent (see the module docstring); returns its summary, or None if
    the sweep was stopped before the run began.

    Runs in a worker, a process of the local pool or a Dask worker thread, holding the run
    folder's lock. In the local pool, a stopped sweep stops the run after its current step, with
    a checkpoint.
    """
    from tinygrok.checkpoint import read_run
    from tinygrok.runlock import RunLock
    from tinygrok.summary import complete_run
    from tinygrok.threads import set_threads
    from tinygrok.train import resume, train

    stop = PoolStop(_pool_event) if _pool_event is not None else None
    if stop and stop.reason:
        return None
    set_threads(1)
    cfg, out = Config.from_dict(cfg_dict), Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        state = run_state(cfg, out)
        if state == "done":
            return read_summary(out)
        if state == "resume":
            # a run killed after its final checkpoint only has its summary and figure written
            saved = read_run(out)
            if saved.complete_only:
                return complete_run(saved)
            return resume(saved, progress=False, stop=stop)
        return train(cfg, out, progress=False, stop=stop)


def warm_kernels(cfg: Config) -> None:
    """Compile (or load from the numba cache) every kernel `cfg` uses, once, in this process, so
    the workers started next all find them in the cache instead of compiling them side by side.
    A no-op for the NumPy engine."""
    if cfg.engine == "numpy":
        return
    from tinygrok.train import train

    with tempfile.TemporaryDirectory() as tmp:
        train(cfg.replace(steps=1, eval_every=1), Path(tmp), progress=False)


@contextlib.contextmanager
def one_thread_children():
    """Processes started inside this block load BLAS, OpenMP and numba with one thread.

    Setting the variables in the worker itself would be too late: a spawned worker first imports
    the parent's main module (the `tinygrok` script, hence numpy) and only then runs any code of
    ours. So they are set here, in the parent, for the pool's lifetime, and inherited.
    """
    saved = {k: os.environ.get(k) for k in THREAD_ENV}
    os.environ.update(dict.fromkeys(THREAD_ENV, "1"))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def one_line(error: BaseException) -> str:
    """An exception as one line: 'TypeName: first line of the message'."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


class SweepDisplay:
    """The sweep's status line (`tinygrok.status.StatusLine`): runs done of total, running,
    failed, ETA."""

    def __init__(
        self, total: int, skipped: int, enabled: bool = True, stream: typing.TextIO | None = None
    ):
        from tinygrok.status import StatusLine

        self.total, self.skipped = total, skipped
        self.done, self.failed, self.ran = skipped, 0, 0
        self.line = StatusLine(enabled, stream)
        self.t0 = time.perf_counter()

    def finished(self, summary: dict | None) -> None:
        """A run returned `summary` (None: the sweep stopped before it began)."""
        if summary is not None and summary["status"] in DONE:
            self.done += 1
            self.ran += 1

    def failure(self) -> None:
        """A run failed for good."""
        self.failed += 1

    def note(self, message: str) -> None:
        """A message on its own line (the status line is redrawn after it)."""
        self.line.message(f"tinygrok: {message}")

    def update(self, running: int, force: bool = False) -> None:
        """Redraw with `running` runs in flight, at most every 0.5 s (15 s off a terminal)."""
        if not self.line.due(force):
            return
        from tinygrok.status import format_seconds

        left = self.total - self.done - self.failed
        elapsed = time.perf_counter() - self.t0
        eta = format_seconds(left * elapsed / self.ran if self.ran else math.inf) if left else "0s"
        done, failed = f"{self.done}/{self.total}", f"{self.failed} failed"
        self.line.draw(
            f"sweep: {done} runs done ({self.skipped} skipped), {running} running, {failed}, "
            f"ETA {eta}",
            f"sweep: {done} done, {running} running, {failed}, ETA {eta}",
            f"{done} done, {running} running, {failed}, ETA {eta}",
            f"{done} done, {failed}, ETA {eta}",
            f"{done}, ETA {eta}",
        )

    def close(self) -> None:
        """Draw the final state and end the line."""
        self.update(0, force=True)
        self.line.close()


def check_executor(executor: str) -> None:
    """ConfigError, before anything runs, if `executor` needs a package that is not installed."""
    if executor == "dask" and importlib.util.find_spec("distributed") is None:
        raise ConfigError('--executor dask: Dask is not installed; pip install "tinygrok[dask]"')


def run_local(
    jobs: list[Job], workers: int, retries: int, display: SweepDisplay, stop: StopFlag
) -> dict[str, str]:
    """Run `jobs` on `workers` spawned processes; returns {run name: error} of the runs that
    failed `retries` + 1 times.

    A worker that dies (killed, out of memory) breaks a `ProcessPoolExecutor`: every run not yet
    returned fails with BrokenProcessPool. The pool is then started again with those runs; the
    ones that were in flight count an attempt (which of them killed the worker is unknown), and
    each resumes from its checkpoint.
    """
    ctx = multiprocessing.get_context("spawn")
    event = ctx.Event()  # set on stop: the workers end their runs and start no others
    attempts: Counter = Counter()
    failures: dict[str, str] = {}
    todo = list(jobs)
    while todo and not stop.reason:
        with (
            one_thread_children(),
            ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_init_pool_worker, initargs=(event,)
            ) as pool,
        ):
            futures = {pool.submit(run_task, j.cfg.to_dict(), str(j.out)): j for j in todo}
            todo, lost, started = [], 0, set()
            while futures:
                done, _ = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = futures.pop(fut)
                    if fut.cancelled():
                        continue
                    error = fut.exception()
                    if error is None:
                        display.finished(fut.result())
                        continue
                    broken = isinstance(error, BrokenProcessPool)
                    if broken and job.name not in started:
                        todo.append(job)  # queued behind the run that broke the pool
                        continue
                    attempts[job.name] += 1
                    lost += broken
                    if isinstance(error, ConfigError) or attempts[job.name] > retries:
                        failures[job.name] = one_line(error)
                        display.failure()
                        display.note(f"run {job.name} failed: {one_line(error)}")
                    elif broken:
                        todo.append(job)
                    else:
                        futures[pool.submit(run_task, job.cfg.to_dict(), str(job.out))] = job
                if stop.reason:
                    event.set()
                    for fut in futures:
                        fut.cancel()
                started = {futures[f].name for f in futures if f.running()}
                display.update(min(len(started), workers))
        if todo and not stop.reason:
            display.note(
                f"a worker process died ({lost} run(s) in flight); restarting the pool for the "
                f"{len(todo)} unfinished run(s), which resume from their checkpoints"
            )
    return failures


def run_dask(
    jobs: list[Job],
    workers: int,
    retries: int,
    scheduler: str | None,
    display: SweepDisplay,
    stop: StopFlag,
) -> dict[str, str]:
    """Run `jobs` on a Dask cluster: the one at `scheduler`, or a LocalCluster of `workers`
    processes with one thread each. Dask retries a failed run `retries` times and moves the runs
    of a lost worker to another one; returns {run name: error} of the runs that still failed."""
    import logging

    from distributed import Client, LocalCluster

    failures: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if scheduler is None:
            stack.enter_context(one_thread_children())
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            )
        try:
            client = stack.enter_context(Client(scheduler or cluster, timeout="20s"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"--scheduler: cannot reach {scheduler} ({one_line(e)})") from None
        futures = {
            client.submit(run_task, j.cfg.to_dict(), str(j.out), retries=retries, pure=False): j
            for j in jobs
        }
        while futures:
            time.sleep(0.5)
            for fut in [f for f in futures if f.done()]:
                job = futures.pop(fut)
                if fut.status == "finished":
                    display.finished(fut.result())
                elif fut.status != "cancelled":
                    error = one_line(fut.exception())
                    failures[job.name] = error
                    display.failure()
                    display.note(f"run {job.name} failed: {error}")
            if stop.reason:
                client.cancel(list(futures))
                break
            # "processing" includes the runs a worker holds queued behind the one it trains
            busy = sum(len(keys) for keys in client.processing().values())
            display.update(min(busy, sum(client.nthreads().values())))
    return failures


@dataclass
class SweepOutcome:
    """What `run_sweep` did."""

    failures: dict[str, str]  # run name -> error, for runs that failed every attempt
    interrupted: bool


def run_sweep(
    sweep: Sweep,
    out: Path,
    executor: str = "local",
    workers: int = 1,
    retries: int = 2,
    scheduler: str | None = None,
    progress: bool = True,
    stop: StopFlag | None = None,
) -> SweepOutcome:
    """Run every run of `sweep` that is not done yet into `out/runs/`, and write `out/sweep.json`.

    Every run folder is checked first, so a folder holding another config stops the sweep (with
    a ConfigError) before anything runs. Runs are handed out seed by seed, so a sweep stopped early
    still covers every configuration.
    """
    from tinygrok.interrupt import StopFlag

    stop = stop or StopFlag()
    jobs = sweep.jobs(out)
    states = Counter()
    todo = []
    for job in jobs:
        state = run_state(job.cfg, job.out)
        states[state] += 1
        if state != "done":
            todo.append(job)
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
    if scheduler is None:  # the local workers share this machine's numba cache
        kernels = {}  # one config per combination of the fields that pick the kernels
        for c in (job.cfg for job in todo if job.cfg.engine != "numpy"):
            key = (c.engine, c.dtype, c.activation, c.layer_norm, c.optimizer, c.grokfast)
            kernels.setdefault(key, c)
        if kernels:
            print(
                "tinygrok: loading the numba kernels once, before the workers start",
                file=sys.stderr,
            )
        for cfg in kernels.values():
            warm_kernels(cfg)
    display = SweepDisplay(len(jobs), states["done"], progress)
    failures: dict[str, str] = {}
    try:
        if todo and executor == "dask":
            failures = run_dask(todo, workers, retries, scheduler, display, stop)
        elif todo:
            failures = run_local(todo, workers, retries, display, stop)
    finally:
        display.close()
    return SweepOutcome(failures, stop.reason is not None)
