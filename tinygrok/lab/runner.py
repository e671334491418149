"""The run runner: what one run of a sweep or an experiment needs, and the task a worker runs.

Every run is an idempotent task (`run_task`): a folder that holds a finished (or diverged) run of
the same config is left alone, one with a checkpoint is resumed (a run that had finished but lost
its summary or figure only gets them written), anything else starts from step 0. So running the
sweep again, a retried task, and a task moved off a lost worker all redo only the missing work.
A folder that holds a run of another config is an error, never overwritten (a budget changed by
`tinygrok resume --steps` does not make it another).

A worker of the local pool dies with the process that started it (`init_pool_worker`), so that
a sweep killed outright leaves no worker training on and holding its runs' locks.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from tinygrok.config import Config
from tinygrok.errors import ConfigError
from tinygrok.folders import CHECKPOINT, CONFIG, outputs_current, read_config, read_summary
from tinygrok.lab.grid import differences

# Summary statuses that end a run for good: rerunning the same config reproduces them exactly.
DONE = ("finished", "diverged")
# The Config fields that pick the numba kernels a run compiles (see `warm_kernels`).
KERNEL_FIELDS = (
    "engine",
    "dtype",
    "loss_dtype",
    "activation",
    "layer_norm",
    "optimizer",
    "grokfast",
)
PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent ends (Linux)


def started_budget(doc: dict, saved: Config) -> int:
    """The steps per task a run started with: its first resume's budget before that resume, or
    (never resumed, or resumed before resumes recorded budgets) the config's own."""
    first = (doc.get("resumes") or [{}])[0]
    steps = first.get("steps_before") if isinstance(first, dict) else None
    return steps if isinstance(steps, int) and steps > 0 else saved.steps


def check_run(cfg: Config, run_dir: Path, any_budget: bool = False) -> Config:
    """The config of the run in run_dir (which must hold one), checked to be `cfg`'s: a
    ConfigError if it is another's, or if config.json is damaged. `tinygrok resume RUN --steps
    N` may have changed its budget since (an arm ended where the baseline generalized, or
    trained longer): it is the planned run if it started with the planned budget, or, with
    `any_budget` (to read the runs as they are, not to run them), whatever its budget: a budget
    says where a run ends, not what it computes on the way."""
    saved, doc = read_config(run_dir)
    steps = cfg.steps if any_budget else started_budget(doc, saved)
    diff = differences(saved.replace(steps=steps), cfg)
    if diff:
        budget_only = not differences(saved, cfg, skip={"steps"})
        fix = (
            "run with the budget it started with, or choose another --out (an experiment's "
            "--report-only reads runs of any budget)"
            if budget_only
            else "remove that folder or choose another --out"
        )
        raise ConfigError(
            f"--out: {run_dir} holds a run of another config ({'; '.join(diff)}); {fix}"
        )
    return saved


def run_state(cfg: Config, run_dir: Path) -> str:
    """What a run folder needs: "new" (start at step 0), "resume" (continue from its checkpoint,
    or only write the summary and figure of a run killed after its final checkpoint) or "done"
    (diverged, or finished with a current curves.png). ConfigError if it holds a run of another
    config (`check_run`), or a damaged config.json or summary.json."""
    if not (run_dir / CONFIG).exists():
        return "new"
    saved = check_run(cfg, run_dir)
    summary = read_summary(run_dir, "delete it (the run's end writes it again)", saved)
    checkpoint = (run_dir / CHECKPOINT).exists()
    # a finished run whose figure is missing or stale is completed from its checkpoint
    status = summary.get("status") if summary is not None else None
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


def die_with_parent(parent: int) -> None:
    """End this process when the process `parent` ends, however it ends (SIGKILL included).

    On Linux the kernel sends SIGKILL the moment the parent exits (prctl PR_SET_PDEATHSIG); if
    the parent had already gone, we go now. Elsewhere a thread polls for a new parent."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent ended before prctl took effect
            os._exit(1)
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def init_pool_worker(event, parent: int) -> None:
    """The initializer of a local pool worker: the stop Event, the parent's lifetime as its own,
    and Ctrl-C left to the parent (it reaches the whole process group; the parent alone decides,
    and sets the event)."""
    global _pool_event
    _pool_event = event
    die_with_parent(parent)
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


def warm_kernels(configs: Iterable[Config]) -> None:
    """Compile (or load from the numba cache) every kernel the numba runs among `configs` use,
    once per combination of KERNEL_FIELDS, in this process, so that the workers started next all
    find them in the cache instead of compiling them side by side."""
    from tinygrok.train import train

    kernels: dict[tuple, Config] = {}
    for cfg in configs:
        if cfg.engine != "numpy":
            kernels.setdefault(tuple(getattr(cfg, f) for f in KERNEL_FIELDS), cfg)
    if kernels:
        print("tinygrok: loading the numba kernels once, before the workers start", file=sys.stderr)
    for cfg in kernels.values():
        with tempfile.TemporaryDirectory() as tmp:
            train(cfg.replace(steps=1, eval_every=1), Path(tmp), progress=False)
