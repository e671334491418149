"""The training loop, top to bottom.

`train` starts a run in its folder, `resume` continues one from its checkpoint, and both hand the
run's state to `run_loop`, which repeats, in this order:

    schedule     the stop flag (Ctrl-C or SIGTERM) is read; the run ends at its step budget
    evaluation   at step 0, every `eval_every` steps and at the end of the budget: loss and
                 accuracy on the full training and validation sets, one line of metrics.jsonl, a
                 parameter snapshot if due; the early stop once validation accuracy has stayed
                 generalized for `patience` steps
    checkpoint   at step 0 and every `checkpoint_every` steps (checkpoint.py)
    step         learning rate, batch, loss and gradients, the gradient mask and filter, the
                 optimizer; a NaN or infinite loss or parameter ends the run as diverged

then writes the final checkpoint, summary.json and curves.png (summary.py). The run folder's files
are listed in README.md, "A run on disk". `resume` ends with the same files, line for line, as the
run left alone: the state at a step is the checkpoint's, and an evaluation that an interruption
cut short is done again (interrupt.py). A diverged run keeps its last good checkpoint. Before any
work, `check_room` refuses a folder that cannot be written or a disk without room for what the
run will write; a write that fails all the same (no space, no permission) raises its OSError,
which `writes_reported` turns into one line for the command line (a sweep retries the run); the
last checkpoint stays whole and `resume` continues from it. The caller holds the run folder's
lock (runlock.py; the CLI does).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tinygrok import __version__
from tinygrok.checkpoint import Checkpoint, SavedRun, save_checkpoint
from tinygrok.config import Config
from tinygrok.errors import ConfigError
from tinygrok.fast import evaluate, loss_and_grads
from tinygrok.folders import CONFIG, atomic_write, remove_outputs, write_json
from tinygrok.grokfast import EMAFilter, MAFilter, make_grad_filter
from tinygrok.interrupt import EvaluationAbandoned, StopFlag
from tinygrok.kernels.subnormals import subnormals_as_zero
from tinygrok.measures import live_measures, pair_grid
from tinygrok.metrics import generalized_since, json_line
from tinygrok.optim import SGD, AdamW, learning_rate, make_optimizer
from tinygrok.params import Params, init_params, param_shapes
from tinygrok.provenance import provenance
from tinygrok.snapshots import clear_snapshots, prune_snapshots, save_snapshot
from tinygrok.status import Progress
from tinygrok.summary import write_end
from tinygrok.tasks import Batches, TaskData, make_dataset
from tinygrok.threads import set_threads


def train(cfg: Config, out_dir: Path, progress: bool = True, stop: StopFlag | None = None) -> dict:
    """Start `cfg` at step 0 in the run folder `out_dir` and run it to its end; returns the
    summary. The files of an earlier run in `out_dir` are replaced (the CLI wants --force)."""
    data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
    with np.errstate(over="ignore"):  # an --init-scale that overflows is a divergence at step 0
        params, mask = init_params(cfg)
    opt = make_optimizer(cfg, params.flat.size)
    grad_filter = make_grad_filter(cfg, params.flat.size)
    filter_state = grad_filter.state() if grad_filter else {}
    start = Checkpoint(
        cfg, 0, "running", 0.0, [], params.flat, mask.flat, opt.state(), filter_state
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    check_room(out_dir, start, "then run the command again")
    (out_dir / CONFIG).unlink(missing_ok=True)
    remove_outputs(out_dir)
    clear_snapshots(out_dir)
    # the checkpoint before config.json: a folder that holds a run can always be resumed
    save_checkpoint(out_dir / "checkpoint.npz", start)
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
    return run_loop(start, data, out_dir, progress, stop)


def resume(run: SavedRun, progress: bool = True, stop: StopFlag | None = None) -> dict:
    """Continue a run that `checkpoint.read_run` read and checked, from its checkpoint to the end
    of its budget. Its files end as those of the same run left alone, wall-clock fields aside."""
    cfg, ckpt = run.cfg, run.checkpoint
    check_room(
        run.dir,
        dataclasses.replace(ckpt, cfg=cfg),
        f"then continue with `tinygrok resume {run.dir}`",
    )
    data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
    # --steps may have changed the budget; every resume is recorded with its code and machine,
    # and the budget before and after it
    before = run.config_doc["config"]["steps"]
    resumes = run.config_doc.get("resumes", []) + [
        provenance() | {"step": ckpt.step, "steps_before": before, "steps": cfg.steps}
    ]
    write_json(
        run.dir / "config.json", run.config_doc | {"config": cfg.to_dict(), "resumes": resumes}
    )
    # Evaluations and snapshots after the checkpoint, and those of an interruption or of the
    # end of a budget since raised, are not part of the run that continues.
    lines = "".join(json_line(r) for r in ckpt.records)
    atomic_write(run.dir / "metrics.jsonl", lambda f: f.write(lines.encode()))
    prune_snapshots(run.dir, ckpt.step, cfg.snapshot_every)
    return run_loop(dataclasses.replace(ckpt, cfg=cfg), data, run.dir, progress, stop)


def run_loop(
    start: Checkpoint, data: list[TaskData], out_dir: Path, progress: bool, stop: StopFlag | None
) -> dict:
    """Train from the state `start` to the end of its config's budget; returns the summary."""
    cfg, stop = start.cfg, stop or StopFlag()
    shapes = param_shapes(cfg)
    params, mask = Params(shapes, start.params), Params(shapes, start.mask)
    grads = Params.zeros(shapes, params.flat.dtype)
    opt = make_optimizer(cfg, params.flat.size)
    opt.load_state(start.optimizer)
    grad_filter = make_grad_filter(cfg, params.flat.size)
    if grad_filter:
        grad_filter.load_state(start.grad_filter)
    batches = Batches(data, cfg.batch_size, cfg.seed, cfg.epoch_batches)
    grid = pair_grid(cfg) if cfg.measures_every else None  # every pair, for the live measures
    records = list(start.records)
    t0 = time.perf_counter() - start.elapsed_s  # elapsed_s keeps counting across a resume
    step, status = start.step, "finished"
    saved_step = start.step if start.records else None  # the checkpoint on disk is this state
    lr = learning_rate(cfg, step) if step else 0.0  # of the step that made the parameters

    with (
        # NaN and inf are caught below and reported once; numpy's warnings about them are noise
        np.errstate(over="ignore", invalid="ignore", divide="ignore"),
        # deep in a fit the gradients fill with subnormal floats, on x86 a slow path
        subnormals_as_zero(),
        (out_dir / "metrics.jsonl").open("a") as log,
        Progress(cfg.step_budget, progress, step, cfg=cfg, records=records) as bar,
    ):
        while True:
            # schedule
            if not np.isfinite(params.flat).all():  # the last step (or --init-scale) overflowed
                status = "diverged"
                break
            if stop.reason:
                status = "interrupted"
                break
            # evaluation
            due = step % cfg.eval_every == 0 or step == cfg.step_budget
            if due and not (records and records[-1]["step"] == step):
                try:
                    with stop.abandonable():  # Ctrl-C need not wait for the evaluation's end
                        elapsed = time.perf_counter() - t0
                        record = evaluation(params, data, cfg, step, lr, elapsed, grid)
                except EvaluationAbandoned:
                    status = "interrupted"
                    break
                records.append(record)
                log.write(json_line(record))
                log.flush()
                if cfg.snapshot_every and step % cfg.snapshot_every == 0:
                    save_snapshot(out_dir, step, params.flat)  # for `tinygrok analyze`
                bar.update(step, record)
                since = generalized_since(records, cfg.generalized_threshold)
                if cfg.patience and since is not None and step - since >= cfg.patience:
                    break
            if step >= cfg.step_budget:
                break
            # checkpoint
            if step % cfg.checkpoint_every == 0 and step != saved_step:
                elapsed = time.perf_counter() - t0
                save(
                    out_dir, cfg, step, "running", elapsed, records, params, mask, opt, grad_filter
                )
                saved_step = step
            # step
            step += 1
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
            bar.update(step, records[-1] if records else None)

    wall = time.perf_counter() - t0
    if status != "diverged":  # a diverged run keeps its last good checkpoint
        save(out_dir, cfg, step, status, wall, records, params, mask, opt, grad_filter)
        if cfg.snapshot_every:
            save_snapshot(out_dir, step, params.flat)  # the end, wherever it falls
    return write_end(out_dir, cfg, records, status, wall, params, mask, step)


def evaluation(
    params: Params,
    data: list[TaskData],
    cfg: Config,
    step: int,
    lr: float,
    elapsed_s: float,
    grid: np.ndarray | None,
) -> dict:
    """The metrics.jsonl record of `step`: the learning rate of the step just taken, loss and
    accuracy (overall and per task), the parameters' norm, the training time so far and, when
    due, the progress measures over every pair of `grid` (measures.pair_grid)."""
    ev = evaluate_run(params, data, cfg)
    per_task = ev.pop("per_task", None)
    record = {"step": step, "lr": lr, **ev}
    record["weight_norm"] = float(np.sqrt(np.dot(params.flat, params.flat)))
    record["elapsed_s"] = elapsed_s
    if per_task:
        record["per_task"] = per_task
    if cfg.measures_every and step % cfg.measures_every == 0:
        record["measures"] = live_measures(params, cfg, grid)
    return record


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


def save(
    out_dir: Path,
    cfg: Config,
    step: int,
    status: str,
    elapsed_s: float,
    records: list[dict],
    params: Params,
    mask: Params,
    opt: AdamW | SGD,
    grad_filter: EMAFilter | MAFilter | None,
) -> None:
    """checkpoint.npz of the run at `step`. Its records are the evaluations on the regular
    schedule: the one at the end of a budget that is later raised is not part of the longer run."""
    on_schedule = [r for r in records if r["step"] % cfg.eval_every == 0]
    filter_state = grad_filter.state() if grad_filter else {}
    ckpt = Checkpoint(
        cfg, step, status, elapsed_s, on_schedule, params.flat, mask.flat, opt.state(), filter_state
    )
    save_checkpoint(out_dir / "checkpoint.npz", ckpt)


RECORD_BYTES = 2048  # a generous line of metrics.jsonl (with --measures-every, about 1 kB)


def room_needed(start: Checkpoint) -> int:
    """Bytes the run from `start` to the end of its budget may still add to its folder: two
    checkpoints (the new one is written beside the old before it replaces it), the snapshots and
    evaluation lines still due, and the summary and figure (a generous 1 MB)."""
    cfg = start.cfg
    arrays = [start.params, start.mask, *start.optimizer.values(), *start.grad_filter.values()]
    checkpoint = sum(a.nbytes for a in arrays)
    left = cfg.step_budget - start.step
    snapshots = (left // cfg.snapshot_every + 1) * start.params.nbytes if cfg.snapshot_every else 0
    return 2 * checkpoint + snapshots + (left // cfg.eval_every + 2) * RECORD_BYTES + 2**20


def check_room(run_dir: Path, start: Checkpoint, then: str) -> None:
    """Before any work: ConfigError (one line, ending with `then`, what to do once the cause is
    gone) if `run_dir` is not writable or its disk has less free space than the run may need
    (`room_needed`), so that a run does not fail hours in."""
    if not os.access(run_dir, os.W_OK):
        raise ConfigError(
            f"{run_dir}: cannot write there (Permission denied); give permission, {then}"
        )
    need, free = room_needed(start), shutil.disk_usage(run_dir).free
    if free < need:
        raise ConfigError(
            f"{run_dir}: {free / 2**20:,.1f} MB free, but the run may need {need / 2**20:,.1f} MB "
            f"(checkpoints, snapshots, metrics); free some space, {then}"
        )


@contextmanager
def writes_reported(run_dir: Path) -> Iterator[None]:
    """Around `train`, `resume` or `summary.complete_run`: turn an OSError from writing the run
    folder (no space, no permission) into a one-line ConfigError naming the file and what
    `resume` can do once the cause is gone."""
    try:
        yield
    except OSError as e:
        where = e.filename or run_dir
        if (run_dir / "checkpoint.npz").is_file():
            then = f"the last checkpoint is kept: continue with `tinygrok resume {run_dir}`"
        else:
            then = f"start the run again with `tinygrok run ... --out {run_dir} --force`"
        raise ConfigError(
            f"{where}: cannot write ({e.strerror or e}); once there is space and permission, {then}"
        ) from None
