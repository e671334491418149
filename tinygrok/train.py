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
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from tinygrok import __version__
from tinygrok.checkpoint import (
    RESTART,
    Checkpoint,
    SavedRun,
    atomic_write,
    save_checkpoint,
    write_json,
)
from tinygrok.config import Config
from tinygrok.errors import ConfigError
from tinygrok.fast import evaluate, loss_and_grads
from tinygrok.grokfast import make_grad_filter
from tinygrok.measures import live_measures, pair_grid
from tinygrok.metrics import grokking_metrics, stability
from tinygrok.model import Params, init_params, matrix_sparsity, param_shapes
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


class StatusLine:
    """A status line on stderr, shared by a run's `Progress` and a sweep's display.

    On a terminal it is redrawn in place (carriage return, erase the line) at most every 0.5 s and
    is never longer than the terminal's width minus one, so that it never wraps onto a new row: the
    caller gives the line in several forms, fullest first, and the first that fits is drawn. Off a
    terminal (a log file) every draw is the fullest form on a line of its own, every 15 s.
    """

    def __init__(self, enabled: bool = True, stream: TextIO | None = None):
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.interval = 0.5 if self.tty else 15.0
        self.last = -math.inf  # when the line was last drawn
        self.drawn = False  # a line is on the terminal's current row

    def due(self, force: bool = False) -> bool:
        """Whether to draw now: enabled, and forced or `interval` seconds after the last draw."""
        return self.enabled and (force or time.perf_counter() - self.last >= self.interval)

    def width(self) -> int:
        """The terminal's columns: the stream's terminal, else $COLUMNS or stdout's, else 80."""
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        return columns or shutil.get_terminal_size((80, 24)).columns

    def draw(self, *forms: str) -> None:
        """Show the first of `forms` (fullest first) that fits the terminal, or the last one cut
        to fit; off a terminal, the first."""
        if self.tty:
            room = max(self.width() - 1, 1)
            line = next((f for f in forms if len(f) <= room), forms[-1][:room])
            self.stream.write("\r\033[K" + line)
            self.drawn = True
        else:
            self.stream.write(forms[0] + "\n")
        self.stream.flush()
        self.last = time.perf_counter()

    def message(self, text: str) -> None:
        """`text` on a line of its own (even when disabled); the status line is drawn again at
        the next update."""
        if self.drawn:
            self.stream.write("\r\033[K")
            self.drawn = False
        self.stream.write(text + "\n")
        self.stream.flush()
        self.last = -math.inf

    def close(self) -> None:
        """End the status line: the terminal's cursor moves to a new row."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


class Progress:
    """A run's status line (`StatusLine`): step, steps/s, train and validation accuracy, losses
    and the time left.

    The rate is measured from the first update on, so compiling the kernels does not count.
    Until the model has generalized it is the time to the step budget. Once validation accuracy has
    reached the generalized threshold and stayed there (`generalized_since`, the loop's early-stop
    rule), it is the time until the first evaluation `patience` steps later, where the run stops.
    """

    RATE_WINDOW = 5.0  # seconds

    def __init__(
        self,
        budget: int,
        enabled: bool = True,
        start: int = 0,
        *,
        cfg: Config | None = None,
        records: list[dict] | None = None,
        stream: TextIO | None = None,
    ):
        """`cfg` gives the early stop (patience, threshold, eval_every; None: no early stop) and
        `records` is the loop's own list of evaluation records, read at every draw."""
        self.budget, self.cfg = budget, cfg
        self.records = records if records is not None else []
        self.line = StatusLine(enabled, stream)
        self.last_t: float | None = None  # when and at which step the rate was last measured
        self.last_step = start
        self.rate = 0.0

    def update(self, step: int, record: dict | None, force: bool = False) -> None:
        """Show `step` with the latest evaluation `record`."""
        if not self.line.due(force):
            return
        now = time.perf_counter()
        if self.last_t is not None and now > self.last_t and step > self.last_step:
            dt = now - self.last_t
            rate = (step - self.last_step) / dt
            # an average over about the last RATE_WINDOW seconds, however often the line is drawn
            weight = 1 - math.exp(-dt / self.RATE_WINDOW) if self.rate else 1.0
            self.rate += weight * (rate - self.rate)
        self.last_t, self.last_step = now, step
        self.line.draw(*self.forms(step, record))

    def stop_step(self) -> int:
        """The step the run will end at, as the records stand: the budget, or while validation
        accuracy has stayed >= the threshold since step s, the first evaluation at or after
        s + patience."""
        cfg = self.cfg
        if cfg is None or not cfg.patience:
            return self.budget
        since = generalized_since(self.records, cfg.generalized_threshold)
        if since is None:
            return self.budget
        due = since + cfg.patience
        return min(self.budget, -(-due // cfg.eval_every) * cfg.eval_every)

    def time_left(self, step: int) -> tuple[str, str, str]:
        """The end of the status line in three lengths: "ETA 2h10m to budget", "generalized,
        stops in ~1m20s" (once generalized), "done"; empty while there is no rate yet."""
        end = self.stop_step()
        if step >= end:
            if end < self.budget:
                return "generalized, stopped", "stopped", "stopped"
            return "done", "done", "done"
        if self.rate <= 0:
            return "", "", ""
        left = format_seconds((end - step) / self.rate)
        if end < self.budget:
            return f"generalized, stops in ~{left}", f"stops in ~{left}", f"stops ~{left}"
        if self.cfg is not None and self.cfg.patience:
            return f"ETA {left} to budget", f"ETA {left} to budget", f"{left} to budget"
        return f"ETA {left}", f"ETA {left}", left

    def forms(self, step: int, record: dict | None) -> list[str]:
        """The status line, fullest first: the loss pair goes first, then the labels shorten."""
        steps = f"{step:,}/{self.budget:,}"
        rate = padded_rate = short_rate = acc = mid_acc = short_acc = loss = ""
        if self.rate > 0:
            padded_rate, rate = f"{self.rate:6.1f} steps/s", f"{self.rate:.1f} steps/s"
            short_rate = f"{self.rate:.1f}/s"
        if record:
            train, val = 100 * record["train_acc"], 100 * record["val_acc"]
            acc = f"train {train:5.1f}%  val {val:5.1f}%"  # fixed widths: the line does not jitter
            mid_acc = f"train {train:.1f}% val {val:.1f}%"
            short_acc = f"tr {train:.1f}% val {val:.1f}%"
            loss = f"loss {record['train_loss']:.3g}/{record['val_loss']:.3g}"
        eta, mid_eta, short_eta = self.time_left(step)

        def join(*fields: str) -> str:
            return "  ".join(f for f in fields if f)

        return [
            join("step " + steps, padded_rate, acc, loss, eta),
            join("step " + steps, padded_rate, acc, eta),
            join("step " + steps, rate, mid_acc, mid_eta),
            join(steps, short_rate, mid_acc, short_eta),
            join(steps, short_acc, short_eta),
            join(steps, short_eta),
            join(f"{step:,}", short_eta),
        ]

    def close(self) -> None:
        """End the status line."""
        self.line.close()


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
            loss, acc = evaluate(params, x, y, cfg)
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


def finite_or_none(value: object) -> object:
    """`value` with every NaN or infinite float in it (in dicts and lists too) made None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def json_line(record: dict) -> str:
    """One line of metrics.jsonl: strict JSON, NaN and infinities written as null."""
    return json.dumps(finite_or_none(record), allow_nan=False) + "\n"


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
    opt = make_optimizer(cfg, params.flat.size)
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
    lines = "".join(json_line(r) for r in run.checkpoint.records)
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
    opt = make_optimizer(cfg, params.flat.size)
    opt.load_state(start.optimizer)
    grad_filter = make_grad_filter(cfg, params.flat.size, params.flat.dtype)
    if grad_filter:
        grad_filter.load_state(start.grad_filter)
    batches = Batches(data, cfg.batch_size, cfg.seed, cfg.epoch_batches)
    grid = pair_grid(cfg) if cfg.measures_every else None  # every pair, for the live measures
    records = list(start.records)
    log = (out_dir / "metrics.jsonl").open("a")
    bar = Progress(cfg.step_budget, progress, start.step, cfg=cfg, records=records)
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
        if cfg.measures_every and step % cfg.measures_every == 0:
            r["measures"] = live_measures(params, cfg, grid)
        records.append(r)
        log.write(json_line(r))
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
                loss = loss_and_grads(params, tokens, targets, cfg, grads)
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
    return write_end(out_dir, cfg, records, status, wall, params, mask, step)


def write_end(
    out_dir: Path,
    cfg: Config,
    records: list[dict],
    status: str,
    wall_s: float,
    params: Params,
    mask: Params,
    step: int,
) -> dict:
    """Write summary.json and draw curves.png, the files after a run's final checkpoint; returns
    the summary. A figure that cannot be drawn is a warning on stderr, never a failed run."""
    summary = run_summary(cfg, records, status, wall_s, params.flat.size)
    # zeros over the weight matrices: those --sparse set (the mask's), and those left at the end
    summary["initial_sparsity"] = matrix_sparsity(mask)
    summary["final_sparsity"] = matrix_sparsity(params)
    if status == "diverged":
        summary["diverged_step"] = step
    write_json(out_dir / "summary.json", summary)
    from tinygrok import plots

    try:
        plots.plot_curves(out_dir)
    except Exception as e:  # matplotlib's failures are many and none may cost the run
        why = (str(e).strip().splitlines() or [""])[0]
        print(
            f"tinygrok: warning: {out_dir / 'curves.png'} not drawn ({type(e).__name__}: {why})",
            file=sys.stderr,
        )
    return summary


def complete_run(run: SavedRun) -> dict:
    """Write the end of a run that `checkpoint.read_run` found finished but without a current
    summary.json or curves.png (`run.complete_only`): metrics.jsonl again from the checkpoint's
    records and its final evaluation, then summary.json (wall-clock time: the checkpoint's
    elapsed_s) and curves.png. Nothing is trained; returns the summary."""
    ckpt = run.checkpoint
    cfg, records = ckpt.cfg, list(ckpt.records)
    if records[-1]["step"] != ckpt.step:  # the end fell between evaluations on the schedule
        from tinygrok.plots import read_metrics

        try:
            final = [r for r in read_metrics(run.dir) if r.get("step") == ckpt.step]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            final = []
        if not final:
            raise ConfigError(
                f"{run.dir / 'metrics.jsonl'}: no evaluation at the run's last step "
                f"({ckpt.step:,}), so its summary cannot be rebuilt; " + RESTART.format(dir=run.dir)
            )
        records.append(final[-1])
    lines = "".join(json_line(r) for r in records)
    atomic_write(run.dir / "metrics.jsonl", lambda f: f.write(lines.encode()))
    shapes = param_shapes(cfg)
    params, mask = Params(shapes, ckpt.params), Params(shapes, ckpt.mask)
    return write_end(run.dir, cfg, records, ckpt.status, ckpt.elapsed_s, params, mask, ckpt.step)
