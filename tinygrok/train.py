"""The training loop and the run folder.

A run reads top to bottom: build the data and the model, then for every step take the learning
rate, the batch, the loss and gradients, and the optimizer step; every `eval_every` steps evaluate
on the full training and validation sets, append a line to `metrics.jsonl`, and stop once the model
has generalized and stayed so for `patience` steps. At the end write `summary.json`,
`checkpoint.npz` and `curves.png` (file contracts in DESIGN.md).

Ctrl-C or SIGTERM finishes the current step, then writes the checkpoint and a summary with status
"interrupted". A NaN or infinite loss stops the run with status "diverged".
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinygrok import __version__
from tinygrok.config import Config
from tinygrok.metrics import grokking_metrics
from tinygrok.model import Params, evaluate, init_params, loss_and_grads
from tinygrok.optim import learning_rate, make_optimizer
from tinygrok.tasks import Batches, TaskData, make_dataset

CHECKPOINT_FORMAT = 1


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

    def __init__(self, budget: int, enabled: bool = True):
        self.budget, self.enabled = budget, enabled
        self.tty = sys.stderr.isatty()
        self.t0 = self.last = time.perf_counter()
        self.last_step = 0
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
    """Limit BLAS to n threads (None: leave the library's default); return the counts in use."""
    from threadpoolctl import threadpool_info, threadpool_limits

    if n is not None:
        threadpool_limits(n)
    return {"blas": max((i["num_threads"] for i in threadpool_info()), default=1)}


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


def write_json(path: Path, obj: dict) -> None:
    """Write JSON atomically: a crash never leaves a half-written file as the only copy."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def save_checkpoint(
    path: Path, cfg: Config, params: Params, mask: Params, opt_state: dict, step: int
) -> None:
    """Parameters, mask, optimizer state, step and config in one .npz (no pickled objects).

    Batches are a pure function of (seed, step), so the step is the whole sampler state.
    """
    arrays = {
        "format_version": np.array(CHECKPOINT_FORMAT),
        "config_json": np.array(json.dumps(cfg.to_dict())),
        "step": np.array(step),
        "params": params.flat,
        "mask": mask.flat,
    }
    arrays |= {f"optimizer.{k}": v for k, v in opt_state.items()}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def run_summary(
    cfg: Config, records: list[dict], status: str, wall_s: float, n_params: int
) -> dict:
    """summary.json: the grokking metrics overall and per task, from the evaluation records."""
    steps = [r["step"] for r in records]
    thresholds = (cfg.step_budget, cfg.memorized_threshold, cfg.generalized_threshold)

    def metrics_of(rows: list[dict]) -> dict:
        return grokking_metrics(
            steps, [r["train_acc"] for r in rows], [r["val_acc"] for r in rows], *thresholds
        )

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


def train(cfg: Config, out_dir: Path, progress: bool = True, stop: StopFlag | None = None) -> dict:
    """Run `cfg` to its end, writing the run folder `out_dir`; returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stop = stop or StopFlag()
    dtype = np.dtype(cfg.dtype)
    data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
    batches = Batches(data, cfg.batch_size, cfg.seed)
    params, mask = init_params(cfg)
    grads = Params.zeros(params.shapes, dtype)
    opt = make_optimizer(cfg, params.flat.size, dtype, cfg.engine)
    n_params = params.flat.size
    write_json(
        out_dir / "config.json",
        {
            "config": cfg.to_dict(),
            "tinygrok_version": __version__,
            "engine": cfg.engine,
            "n_params": n_params,
        },
    )
    metrics_path = out_dir / "metrics.jsonl"
    log = metrics_path.open("w")
    bar = Progress(cfg.step_budget, progress)
    t0 = time.perf_counter()
    records: list[dict] = []
    status, streak_start = "finished", None

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
        return r

    last = record(0, 0.0)
    step = 0
    try:
        for step in range(1, cfg.step_budget + 1):
            lr = learning_rate(cfg, step)
            tokens, targets = batches(step)
            loss = loss_and_grads(params, tokens, targets, cfg, grads, cfg.engine)
            if not math.isfinite(loss):
                status = "diverged"
                break
            opt.step(params.flat, grads.flat, lr)
            if step % cfg.eval_every == 0 or step == cfg.step_budget:
                last = record(step, lr)
                if last["val_acc"] >= cfg.generalized_threshold:
                    streak_start = step if streak_start is None else streak_start
                    if cfg.patience and step - streak_start >= cfg.patience:
                        break
                else:
                    streak_start = None
            if stop.reason:
                status = "interrupted"
                if records[-1]["step"] != step:
                    last = record(step, lr)
                break
            bar.update(step, last)
    finally:
        bar.update(step, last, force=True)
        bar.close()
        log.close()
    wall = time.perf_counter() - t0
    if status != "diverged":
        save_checkpoint(out_dir / "checkpoint.npz", cfg, params, mask, opt.state(), step)
    summary = run_summary(cfg, records, status, wall, n_params)
    if status == "diverged":
        summary["diverged_step"] = step
    write_json(out_dir / "summary.json", summary)
    from tinygrok.plots import plot_curves

    plot_curves(out_dir)
    return summary
