"""Executors: how the runs of a sweep or an experiment are spread over processes (a local pool of
spawned processes, or a Dask cluster), and the status line that follows them.

Parallelism is one process per run and one thread per process: small models gain nothing from
several BLAS threads, and on a shared machine extra threads spin and slow everyone down.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import multiprocessing
import os
import time
import typing
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from tinygrok.errors import ConfigError
from tinygrok.lab.grid import Job
from tinygrok.lab.runner import DONE, init_pool_worker, run_task
from tinygrok.status import StatusLine, format_seconds

if typing.TYPE_CHECKING:
    from tinygrok.interrupt import StopFlag

# Read by BLAS, OpenMP and numba when they load, so they must be set before a worker imports numpy.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


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
                workers,
                mp_context=ctx,
                initializer=init_pool_worker,
                initargs=(event, os.getpid()),
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
