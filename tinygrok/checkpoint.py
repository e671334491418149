"""Checkpoints: written atomically (`folders.atomic_write`) so that no crash loses a run, read so
that no damaged or foreign file is trusted; and a run folder read back for `tinygrok resume`.

`checkpoint.npz`, format 1, plain arrays only (loaded with `allow_pickle=False`):

    format_version   ()      1
    config_json      ()      the run's Config as JSON
    step             ()      optimizer steps done
    params           (N,)    the flat parameter vector
    mask             (N,)    1 where --sparse kept a weight at initialization
    optimizer.*              the optimizer's state: AdamW m (N,), v (N,), t (); SGD buf (N,), t ()
    grad_filter.*            the Grokfast filter's state, if the run has one: EMA mu (N,), t ();
                             MA ring (W, N), total (N,), t ()
    run_json         ()      JSON: status, elapsed_s, and the evaluation records (below)

That is the whole state of a run. Batches are a pure function of (seed, step) (`tasks.Batches`)
and initialization draws all its random numbers before step 1, so the step is the complete RNG and
sampler state; the learning rate is a function of the step; the early-stop streak is read back
from the records. The records are the evaluations on the regular schedule (step 0 and multiples of
`eval_every`) up to the step, the one at the step itself missing when an interruption cut it
short; the evaluation at the end of a budget that is later raised is not part of the run that
continues. Loading checks every array's shape, dtype and finiteness and every record's ranges
(accuracies in [0, 1], steps on the schedule). Resuming rewrites
`metrics.jsonl` from these records, so a resumed run's files match the run left alone line for line.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinygrok.config import Config, validate
from tinygrok.errors import ConfigError
from tinygrok.folders import (
    SUMMARY,
    atomic_write,
    config_from_doc,
    outputs_current,
    read_config,
    read_summary,
)
from tinygrok.grokfast import make_grad_filter
from tinygrok.optim import make_optimizer
from tinygrok.params import n_params

CHECKPOINT_FORMAT = 1
STATUSES = ("running", "interrupted", "finished")
RESTART = "start the run again with `tinygrok run ... --out {dir} --force`"


@dataclass
class Checkpoint:
    """Everything a run needs to continue exactly (see the module docstring)."""

    cfg: Config
    step: int
    status: str  # "running" (a periodic save), "interrupted" or "finished"
    elapsed_s: float  # training time before this save, so elapsed_s keeps counting on resume
    records: list[dict]  # evaluations on the regular schedule up to `step`
    params: np.ndarray  # (N,)
    mask: np.ndarray  # (N,)
    optimizer: dict[str, np.ndarray]  # the optimizer's `state()`
    grad_filter: dict[str, np.ndarray]  # the gradient filter's `state()`; {} without a filter


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    """Write `ckpt` to `path` atomically; the previous checkpoint stays until this one is whole."""
    run = {"status": ckpt.status, "elapsed_s": ckpt.elapsed_s, "records": ckpt.records}
    arrays = {
        "format_version": np.array(CHECKPOINT_FORMAT),
        "config_json": np.array(json.dumps(ckpt.cfg.to_dict())),
        "step": np.array(ckpt.step),
        "params": ckpt.params,
        "mask": ckpt.mask,
        "run_json": np.array(json.dumps(run)),
    }
    arrays |= {f"optimizer.{k}": v for k, v in ckpt.optimizer.items()}
    arrays |= {f"grad_filter.{k}": v for k, v in ckpt.grad_filter.items()}
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _differences(a: Config, b: Config) -> list[str]:
    """Fields where two configs differ, as 'name: a vs b'."""
    da, db = a.to_dict(), b.to_dict()
    return [f"{k}: {da[k]!r} vs {db[k]!r}" for k in da if da[k] != db[k]]


def load_checkpoint(path: Path, cfg: Config) -> Checkpoint:
    """Read and check a checkpoint against the run's config (any field but `steps` may not
    differ). Every problem is a one-line ConfigError; nothing is written."""
    run_dir = path.parent
    cannot = f"it cannot be resumed: {RESTART.format(dir=run_dir)}"
    damaged = f"{path}: {{}}; {cannot}"
    if not path.is_file():
        raise ConfigError(damaged.format("missing"))
    if not zipfile.is_zipfile(path):
        raise ConfigError(damaged.format("truncated or corrupted (not an .npz archive)"))
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        version = int(arrays["format_version"])
        if version != CHECKPOINT_FORMAT:
            raise ConfigError(
                f"{path}: checkpoint format version {version}, but this tinygrok reads version "
                f"{CHECKPOINT_FORMAT}; resume it with the tinygrok version that wrote it"
            )
        saved_cfg = config_from_doc(json.loads(str(arrays["config_json"])), f"{path}", cannot)
        run = json.loads(str(arrays["run_json"]))
        ckpt = Checkpoint(
            cfg=saved_cfg,
            step=int(arrays["step"]),
            status=run["status"],
            elapsed_s=float(run["elapsed_s"]),
            records=list(run["records"]),
            params=arrays["params"],
            mask=arrays["mask"],
            optimizer=_prefixed(arrays, "optimizer."),
            grad_filter=_prefixed(arrays, "grad_filter."),
        )
    except ConfigError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        why = f"truncated or corrupted ({type(e).__name__}: {e})"
        raise ConfigError(damaged.format(why)) from None
    diff = _differences(saved_cfg.replace(steps=cfg.steps), cfg)
    if diff:
        raise ConfigError(
            f"{path}: written by a different config than config.json ({'; '.join(diff)}, "
            "checkpoint vs config.json); restore the run's config.json, or "
            + RESTART.format(dir=run_dir)
        )
    _check_contents(ckpt, damaged)
    return ckpt


def _prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays whose names start with `prefix`, under the rest of their names."""
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def _check_contents(ckpt: Checkpoint, damaged: str) -> None:
    """Every array must have the names, shapes and dtypes the config implies; step, status and
    records must agree with each other."""
    cfg, n = ckpt.cfg, n_params(ckpt.cfg)
    dtype = np.dtype(cfg.dtype)
    grad_filter = make_grad_filter(cfg, n)
    expected = {"params": np.empty(n, dtype), "mask": np.empty(n, dtype)}
    expected |= {f"optimizer.{k}": v for k, v in make_optimizer(cfg, n).state().items()}
    if grad_filter:
        expected |= {f"grad_filter.{k}": v for k, v in grad_filter.state().items()}
    actual = {"params": ckpt.params, "mask": ckpt.mask}
    actual |= {f"optimizer.{k}": v for k, v in ckpt.optimizer.items()}
    actual |= {f"grad_filter.{k}": v for k, v in ckpt.grad_filter.items()}
    if set(actual) != set(expected):
        raise ConfigError(
            damaged.format(f"it holds {sorted(actual)}, the config needs {sorted(expected)}")
        )
    for name, arr in actual.items():
        want = expected[name]
        if arr.shape != want.shape or arr.dtype != want.dtype:
            raise ConfigError(
                damaged.format(
                    f"{name} has shape {arr.shape} and dtype {arr.dtype}, the config needs "
                    f"{want.shape} {want.dtype}"
                )
            )
    if int(ckpt.optimizer["t"]) != ckpt.step:
        raise ConfigError(
            damaged.format(
                f"its optimizer has taken {int(ckpt.optimizer['t'])} steps, not {ckpt.step}"
            )
        )
    for name, arr in actual.items():
        if not np.isfinite(arr).all():  # a checkpoint is only written from a finite state
            raise ConfigError(damaged.format(f"{name} holds NaN or infinite values"))
    if not np.isin(ckpt.mask, (0, 1)).all():
        raise ConfigError(damaged.format("mask holds values other than 0 and 1"))
    if ckpt.status not in STATUSES or not 0 <= ckpt.step <= cfg.step_budget:
        raise ConfigError(
            damaged.format(f"its step {ckpt.step} or status {ckpt.status!r} is wrong")
        )
    if not (isinstance(ckpt.elapsed_s, float) and 0 <= ckpt.elapsed_s < math.inf):
        raise ConfigError(damaged.format(f"its elapsed time {ckpt.elapsed_s} is not a time"))
    for r in ckpt.records:
        problem = _record_problem(r, cfg.tasks)
        if problem:
            raise ConfigError(damaged.format(f"an evaluation record {problem}"))
    # the evaluations on the schedule up to the step; the one at the step itself may be missing
    # (an interruption abandoned it: the resumed run does it again)
    steps = [r["step"] for r in ckpt.records]
    schedule = list(range(0, ckpt.step + 1, cfg.eval_every))
    if steps not in (schedule, schedule[:-1] if ckpt.step % cfg.eval_every == 0 else schedule):
        raise ConfigError(
            damaged.format(
                f"its evaluation records are at steps {_steps_text(steps)}, not every "
                f"{cfg.eval_every} steps from 0 to {ckpt.step}"
            )
        )


def _is_number(x: object) -> bool:
    """An int or float from JSON (a bool is not a number here)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _record_problem(r: object, tasks: tuple[str, ...]) -> str | None:
    """What is wrong with one evaluation record of a checkpoint, or None: the step a
    non-negative integer, accuracies in [0, 1] (per task too), losses non-negative (infinite or
    NaN allowed: a confident wrong answer), learning rate, norm and time finite and non-negative."""
    if not isinstance(r, dict):
        return "is not a JSON object"
    if not isinstance(r.get("step"), int) or isinstance(r["step"], bool) or r["step"] < 0:
        return f"has step {r.get('step')!r}, not an integer >= 0"
    rows = {"": r} | (r["per_task"] if isinstance(r.get("per_task"), dict) else {})
    if len(tasks) > 1 and set(rows) != {"", *tasks}:
        return f"of step {r['step']} lacks the per-task values of {', '.join(tasks)}"
    for task, row in rows.items():
        where = f"of step {r['step']}" + (f" ({task})" if task else "")
        if not isinstance(row, dict):
            return f"{where} is not a JSON object"
        for key in ("train_acc", "val_acc"):
            if not (_is_number(row.get(key)) and 0 <= row[key] <= 1):
                return f"{where} has {key} {row.get(key)!r}, not in [0, 1]"
        for key in ("train_loss", "val_loss"):
            if not (_is_number(row.get(key)) and not row[key] < 0):
                return f"{where} has {key} {row.get(key)!r}, not a loss"
    for key in ("lr", "weight_norm", "elapsed_s"):
        if not (_is_number(r.get(key)) and 0 <= r[key] < math.inf):
            return f"of step {r['step']} has {key} {r.get(key)!r}, not a finite number >= 0"
    return None


def _steps_text(steps: list[int]) -> str:
    """[0, 10, 20, 30, 40, 50] -> '0, 10, 20 ... 50'; [] -> 'none'."""
    if not steps:
        return "none"
    shown = steps if len(steps) <= 6 else [*steps[:3], "...", steps[-1]]
    return ", ".join(map(str, shown)).replace(", ...,", " ...")


@dataclass
class SavedRun:
    """A run folder read back for `tinygrok resume`."""

    dir: Path
    cfg: Config  # config.json's config, with the new budget when --steps was given
    config_doc: dict  # the whole config.json document
    checkpoint: Checkpoint
    # the run has ended (its checkpoint says finished) but summary.json or curves.png is missing or
    # older than that end: `summary.complete_run` writes them, nothing is trained
    complete_only: bool = False
    threads: int | None = None  # the BLAS threads the run started with (config.json), if known


def read_run(run_dir: Path, steps: int | None = None) -> SavedRun:
    """Read and check everything `tinygrok resume` needs, writing nothing: config.json, the
    checkpoint, summary.json (a diverged run is not resumed), and whether steps are left to run.

    A run whose checkpoint says finished but whose summary.json or curves.png is missing or stale
    (killed after its final checkpoint) comes back with `complete_only` when no --steps is given
    (with --steps it is checked, and trains on, as any other)."""
    cfg, doc = read_config(run_dir)
    blas = doc["threads"]["blas"]  # read_config checked it
    diverged = _diverged_step(run_dir)
    if diverged == 0:
        raise ConfigError(
            f"{run_dir}: the run diverged at step 0 (its initial parameters overflow); start a new "
            "run with a smaller --init-scale"
        )
    if diverged is not None:
        raise ConfigError(
            f"{run_dir}: the run diverged at step {diverged:,}; resuming from its last good "
            "checkpoint would diverge again, at the same step: start a new run with a smaller --lr"
        )
    ckpt = load_checkpoint(run_dir / "checkpoint.npz", cfg)
    if steps is None and ckpt.status == "finished" and not outputs_current(run_dir, ckpt.step):
        return SavedRun(run_dir, cfg, doc, ckpt, complete_only=True, threads=blas)
    if steps is not None:
        cfg = validate(cfg.replace(steps=steps))
    if ckpt.status == "finished" and ckpt.step < ckpt.cfg.step_budget:
        raise ConfigError(
            f"{run_dir}: the run stopped early at step {ckpt.step:,}, after validation accuracy "
            f"stayed >= {cfg.generalized_threshold:g} for --patience {cfg.patience} steps; nothing "
            "to continue (a new run with --patience 0 trains the whole budget)"
        )
    # an interruption at the budget's last step abandoned the final evaluation: resume does it
    if ckpt.step > cfg.step_budget or (ckpt.step == cfg.step_budget and ckpt.status == "finished"):
        need = f"give --steps more than {ckpt.step // len(cfg.tasks):,} to train longer"
        if steps is None:
            raise ConfigError(
                f"{run_dir}: the run already trained its whole budget ({ckpt.step:,} steps); {need}"
            )
        raise ConfigError(f"--steps: {steps:,} per task is not more than the run has done; {need}")
    return SavedRun(run_dir, cfg, doc, ckpt, threads=blas)


def _diverged_step(run_dir: Path) -> int | None:
    """The step summary.json says the run diverged at, or None (a run has no summary until it
    stops)."""
    summary = read_summary(run_dir, "delete it (resume writes a new one)")
    if not (summary is not None and summary.get("status") == "diverged"):
        return None
    step = summary.get("diverged_step")
    if not (_is_number(step) and isinstance(step, int) and step >= 0):
        raise ConfigError(
            f"{run_dir / SUMMARY}: diverged_step {step!r} is not a step; "
            + RESTART.format(dir=run_dir)
        )
    return step
