"""The training loop and the run folder.

A run reads top to bottom: build the data and the model, then for every step take the learning
rate, the batch, the loss and gradients, and the optimizer step; every `eval_every` steps evaluate
on the full training and validation sets, append a line to `metrics.jsonl`, and stop once the model
has generalized and stayed so for `patience` steps. A checkpoint is written at step 0, every
`checkpoint_every` steps and at the end; then `summary.json` and `curves.png` (the run folder's
files in README.md, "A run on disk"; checkpoint contents in checkpoint.py). `resume` continues a
run from its checkpoint and ends with the same files, line for line, as the run left alone.

Ctrl-C or SIGTERM finishes the current step, then writes the checkpoint and a summary with status
"interrupted". A NaN or infinite loss or parameter stops the run with status "diverged" and keeps
the last good checkpoint. The caller holds the run folder's lock (runlock.py; the CLI does).
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinygrok import __version__
from tinygrok.checkpoint import Checkpoint, SavedRun, atomic_write, save_checkpoint, write_json
from tinygrok.config import Config
from tinygrok.grokfast import make_grad_filter
from tinygrok.metrics import grokking_metrics, stability
from tinygrok.model import (
    Params,
    evaluate,
    init_params,
    loss_and_grads,
    matrix_sparsity,
    param_shapes,
)
from tinygrok.optim import learning_rate, make_optimizer
from tinygrok.provenance import provenance
from tinygrok.snapshots import clear_snapshots, save_snapshot
from tinygrok.tasks import Batches, TaskData, make_dataset


@dataclass
class StopFlag:
    """Set by a signal handler; the loop checks it between steps."""

    reason: str | None = None
    previous: dict = field(default_factory=dict)

    def install(self) -> None:
        """Route SIGINT and SIGTERM here (main thread only)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        """Restore the handlers `install` replaced."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()

    def _handle(self, signum, frame) -> None:
        self.reason = signal.Signals(signum).name


class Progress:
    """One status line on stderr: rewritten in place on a terminal, every 15 s otherwise."""

    def __init__(self, budget: int, enabled: bool = True, start: int = 0):
        self.budget, self.enabled = budget, enabled
        self.tty = sys.stderr.isatty()
        self.t0 = self.last = time.perf_counter()
        self.last_step = start
        self.rate = 0.0

    def update(self, step: int, record: dict | None, force: bool = False) -> None:
        """Show `step` with the latest evaluation `record`."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self.last < (0.5 if self.tty else 15.0):
            return
        if now > self.last and step > self.last_step:
            rate = (step - self.last_step) / (now - self.last)
            self.rate = rate if self.rate == 0 else 0.7 * self.rate + 0.3 * rate
        self.last, self.last_step = now, step
        eta = (self.budget - step) / self.rate if self.rate > 0 else math.inf
        line = f"step {step:,}/{self.budget:,}  {self.rate:6.1f} steps/s"
        if record:
            line += (
                f"  train {100 * record['train_acc']:5.1f}%  val {100 * record['val_acc']:5.1f}%"
                f"  loss {record['train_loss']:.3g}/{record['val_loss']:.3g}"
            )
        line += f"  ETA {format_seconds(eta)}"
        if self.tty:
            sys.stderr.write("\r\033[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        """End the status line."""
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


def set_threads(n: int | None) -> dict:
    """Limit BLAS and the numba kernels to n threads each (None: leave the libraries' defaults,
    one thread per core); return the counts in use, {"blas": ..., "numba": ...}.

    numba's pool is sized when numba starts (NUMBA_NUM_THREADS, default one per core), so numba
    gets min(n, pool size); the returned count says which.
    """
    import numba
    from threadpoolctl import threadpool_info, threadpool_limits

    if n is not None:
        threadpool_limits(n, user_api="blas")
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    infos = [i for i in threadpool_info() if i["user_api"] == "blas"]
    blas = max((i["num_threads"] for i in infos), default=1)
    return {"blas": blas, "numba": numba.get_num_threads()}


def format_seconds(s: float) -> str:
    """12.3 -> '12s', 125 -> '2m05s', 7300 -> '2h01m'."""
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def evaluate_run(params: Params, data: list[TaskData], cfg: Config) -> dict:
    """Loss and accuracy on the full training and validation sets, overall and per task."""
    out: dict = {}
    per_task = {}
    totals = {"train": [0.0, 0.0, 0], "val": [0.0, 0.0, 0]}
    for d in data:
        row = {}
        for split, x, y in (("train", d.train_x, d.train_y), ("val", d.val_x, d.val_y)):
            loss, acc = evaluate(params, x, y, cfg, cfg.engine)
            row[f"{split}_loss"], row[f"{split}_acc"] = loss, acc
            t = totals[split]
            t[0] += loss * len(y)
            t[1] += acc * len(y)
            t[2] += len(y)
        per_task[d.name] = row
    for split, (loss_sum, acc_sum, n) in totals.items():
        out[f"{split}_loss"], out[f"{split}_acc"] = loss_sum / n, acc_sum / n
    if len(data) > 1:
        out["per_task"] = per_task
    return out


def run_summary(
    cfg: Config, records: list[dict], status: str, wall_s: float, n_params: int
) -> dict:
    """summary.json: the grokking metrics overall and per task, from the evaluation records."""
    steps = [r["step"] for r in records]
    thresholds = (cfg.step_budget, cfg.memorized_threshold, cfg.generalized_threshold)

    def metrics_of(rows: list[dict]) -> dict:
        val_acc = [r["val_acc"] for r in rows]
        return grokking_metrics(
            steps, [r["train_acc"] for r in rows], val_acc, *thresholds
        ) | stability(steps, val_acc, cfg.generalized_threshold)

    last = records[-1]
    steps_run = last["step"]
    per_task = {
        t: metrics_of([r.get("per_task", {}).get(t, r) for r in records])
        | {
            "final_train_acc": last.get("per_task", {}).get(t, last)["train_acc"],
            "final_val_acc": last.get("per_task", {}).get(t, last)["val_acc"],
        }
        for t in cfg.tasks
    }
    return {
        "tasks": list(cfg.tasks),
        "seed": cfg.seed,
        "step_budget": cfg.step_budget,
        "steps_run": steps_run,
        **metrics_of(records),
        "final_train_acc": last["train_acc"],
        "final_val_acc": last["val_acc"],
        "n_params": n_params,
        "wall_s": wall_s,
        "steps_per_s": steps_run / wall_s if wall_s > 0 else None,
        "status": status,
        "per_task": per_task,
    }


def generalized_since(records: list[dict], threshold: float) -> int | None:
    """The first step of the unbroken stretch of evaluations, ending with the latest, whose
    validation accuracy is >= threshold (step 0 does not count); None if the latest is below.
    With several tasks every task's validation accuracy must be >= threshold, so an early stop
    never cuts off a task that has not generalized yet.

    The early-stop streak is read from the records alone, so a checkpoint needs no state for it;
    walking back from the end reads at most patience / eval_every records before the run stops.
    """
    since = None
    for r in reversed(records):
        worst = min(t["val_acc"] for t in r.get("per_task", {"": r}).values())
        if r["step"] == 0 or worst < threshold:
            break
        since = r["step"]
    return since


def train(cfg: Config, out_dir: Path, progress: bool = True, stop: StopFlag | None = None) -> dict:
    """Start `cfg` at step 0 in the run folder `out_dir` and run it to its end; returns the
    summary. The files of an earlier run in `out_dir` are replaced (the CLI wants --force)."""
    data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
    params, mask = init_params(cfg)
    opt = make_optimizer(cfg, params.flat.size, params.flat.dtype, cfg.engine)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("checkpoint.npz", "summary.json", "curves.png"):
        (out_dir / stale).unlink(missing_ok=True)
    clear_snapshots(out_dir)
    write_json(
        out_dir / "config.json",
        {
            "config": cfg.to_dict(),
            "tinygrok_version": __version__,
            "engine": cfg.engine,
            "threads": set_threads(None),
            "n_params": params.flat.size,
            "provenance": provenance(),
        },
    )
    (out_dir / "metrics.jsonl").write_text("")
    grad_filter = make_grad_filter(cfg, params.flat.size, params.flat.dtype)
    filter_state = grad_filter.state() if grad_filter else {}
    start = Checkpoint(
        cfg, 0, "running", 0.0, [], params.flat, mask.flat, opt.state(), filter_state
    )
    return _loop(start, data, out_dir, progress, stop)


def resume(run: SavedRun, progress: bool = True, stop: StopFlag | None = None) -> dict:
    """Continue a run that `checkpoint.read_run` read and checked, from its checkpoint to the end
    of its budget. Its files end as those of the same run left alone, wall-clock fields aside."""
    cfg = run.cfg
    data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
    # --steps may have changed the budget; every resume is recorded with its code and machine
    resumes = run.config_doc.get("resumes", []) + [provenance() | {"step": run.checkpoint.step}]
    write_json(
        run.dir / "config.json", run.config_doc | {"config": cfg.to_dict(), "resumes": resumes}
    )
    # Evaluations after the checkpoint, and the extra one of an interruption, are done again.
    lines = "".join(json.dumps(r) + "\n" for r in run.checkpoint.records)
    atomic_write(run.dir / "metrics.jsonl", lambda f: f.write(lines.encode()))
    return _loop(dataclasses.replace(run.checkpoint, cfg=cfg), data, run.dir, progress, stop)


def _loop(
    start: Checkpoint, data: list[TaskData], out_dir: Path, progress: bool, stop: StopFlag | None
) -> dict:
    """Train from the state `start` to the end of its config's budget; returns the summary."""
    cfg, stop = start.cfg, stop or StopFlag()
    shapes = param_shapes(cfg)
    params, mask = Params(shapes, start.params), Params(shapes, start.mask)
    grads = Params.zeros(shapes, params.flat.dtype)
    opt = make_optimizer(cfg, params.flat.size, params.flat.dtype, cfg.engine)
    opt.load_state(start.optimizer)
    grad_filter = make_grad_filter(cfg, params.flat.size, params.flat.dtype)
    if grad_filter:
        grad_filter.load_state(start.grad_filter)
    batches = Batches(data, cfg.batch_size, cfg.seed, cfg.epoch_batches)
    records = list(start.records)
    log = (out_dir / "metrics.jsonl").open("a")
    bar = Progress(cfg.step_budget, progress, start.step)
    t0 = time.perf_counter() - start.elapsed_s  # elapsed_s keeps counting across a resume
    status, step = "finished", start.step

    def record(step: int, lr: float) -> dict:
        ev = evaluate_run(params, data, cfg)
        per_task = ev.pop("per_task", None)
        r = {"step": step, "lr": lr, **ev}
        r["weight_norm"] = float(np.sqrt(np.dot(params.flat, params.flat)))
        r["elapsed_s"] = time.perf_counter() - t0
        if per_task:
            r["per_task"] = per_task
        records.append(r)
        log.write(json.dumps(r) + "\n")
        log.flush()
        if cfg.snapshot_every and step % cfg.snapshot_every == 0:
            save_snapshot(out_dir, step, params.flat)  # for `tinygrok analyze`
        return r

    def save(step: int, status: str) -> None:
        on_schedule = [r for r in records if r["step"] % cfg.eval_every == 0]
        elapsed = time.perf_counter() - t0
        state = (params.flat, mask.flat, opt.state(), grad_filter.state() if grad_filter else {})
        save_checkpoint(
            out_dir / "checkpoint.npz", Checkpoint(cfg, step, status, elapsed, on_schedule, *state)
        )

    last = records[-1] if records else None
    # NaN and inf are caught below and reported once; numpy's warnings about them are noise.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        try:
            if not records:
                last = record(0, 0.0)
                save(0, "running")  # so that even a run killed at step 1 can be resumed
            for step in range(start.step + 1, cfg.step_budget + 1):
                lr = learning_rate(cfg, step)
                tokens, targets = batches(step)
                loss = loss_and_grads(params, tokens, targets, cfg, grads, cfg.engine)
                if not math.isfinite(loss):
                    status = "diverged"
                    break
                if cfg.keep_mask:
                    # pruned weights get no gradient, so their moments stay 0 and, being 0
                    # themselves, weight decay and the update leave them at exactly 0
                    grads.flat *= mask.flat
                if grad_filter:
                    grad_filter.apply(grads.flat)  # Grokfast: amplify the slow gradient
                opt.step(params.flat, grads.flat, lr)
                if not np.isfinite(params.flat).all():
                    status = "diverged"
                    break
                if step % cfg.eval_every == 0 or step == cfg.step_budget:
                    last = record(step, lr)
                    if cfg.patience:
                        since = generalized_since(records, cfg.generalized_threshold)
                        if since is not None and step - since >= cfg.patience:
                            break
                if stop.reason and step < cfg.step_budget:
                    status = "interrupted"
                    if records[-1]["step"] != step:
                        last = record(step, lr)  # so the summary shows where the run stopped
                    break
                if step % cfg.checkpoint_every == 0 and step < cfg.step_budget:
                    save(step, "running")
                bar.update(step, last)
        finally:
            bar.update(step, last, force=True)
            bar.close()
            log.close()
        if status != "diverged":  # a diverged run keeps its last good checkpoint
            save(step, status)
            if cfg.snapshot_every:
                save_snapshot(out_dir, step, params.flat)  # the end, wherever it falls
    wall = time.perf_counter() - t0
    summary = run_summary(cfg, records, status, wall, params.flat.size)
    # zeros over the weight matrices: those --sparse set (the mask's), and those left at the end
    summary["initial_sparsity"] = matrix_sparsity(mask)
    summary["final_sparsity"] = matrix_sparsity(params)
    if status == "diverged":
        summary["diverged_step"] = step
    write_json(out_dir / "summary.json", summary)
    from tinygrok.plots import plot_curves

    plot_curves(out_dir)
    return summary
