"""Checkpoints and the other files of a run folder: written so that no crash loses a run, read so
that no damaged or foreign file is trusted.

Atomic writes: a file is written under a temporary name beside its final one, flushed to the disk
(fsync), renamed over the old file (`os.replace`, atomic on POSIX), and the folder is synced so the
rename itself is durable. A crash at any moment leaves either the old complete file or the new one.

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
`eval_every`): the extra evaluation that an interruption, or the end of a budget that is later
raised, adds at another step is not part of the run that continues. Resuming rewrites
`metrics.jsonl` from these records, so a resumed run's files match the run left alone line for line.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tinygrok.config import Config, validate
from tinygrok.errors import ConfigError
from tinygrok.grokfast import make_grad_filter
from tinygrok.model import n_params
from tinygrok.optim import make_optimizer

CHECKPOINT_FORMAT = 1
STATUSES = ("running", "interrupted", "finished")
RECORD_KEYS = ("step", "train_acc", "val_acc")  # what the summary and the early stop read
RESTART = "start the run again with `tinygrok run ... --out {dir} --force`"


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(f)` on a temporary file, then make it `path` in one atomic, durable step."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename is an entry of the folder: sync it too
    finally:
        os.close(fd)


def write_json(path: Path, obj: dict) -> None:
    """Write JSON atomically: a crash never leaves a half-written file as the only copy."""
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


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


def _config_from(doc: object, where: str, fix: str) -> Config:
    """A validated Config from a JSON object, or a ConfigError naming `where` and the `fix`."""
    try:
        if not isinstance(doc, dict):
            raise ConfigError("the config is not a JSON object")
        return validate(Config.from_dict(doc))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}; {fix}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: a setting has the wrong type ({e}); {fix}") from None


def read_config(run_dir: Path) -> tuple[Config, dict]:
    """config.json of a run: its validated Config and the whole document."""
    path = run_dir / "config.json"
    fix = f"restore it, or {RESTART.format(dir=run_dir)}"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{run_dir}: no config.json, so no run to resume; start one with "
            f"`tinygrok run TASK --out {run_dir}`"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: unreadable or not valid JSON ({e}); {fix}") from None
    if not isinstance(doc, dict) or "config" not in doc:
        raise ConfigError(f'{path}: no "config" object; {fix}')
    return _config_from(doc["config"], str(path), fix), doc


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
        saved_cfg = _config_from(json.loads(str(arrays["config_json"])), f"{path}", cannot)
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
    grad_filter = make_grad_filter(cfg, n, dtype)
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
    if not np.isfinite(ckpt.params).all():
        raise ConfigError(damaged.format("the parameters hold NaN or infinite values"))
    records_ok = all(
        isinstance(r, dict) and all(isinstance(r.get(k), (int, float)) for k in RECORD_KEYS)
        for r in ckpt.records
    )
    steps = [r["step"] for r in ckpt.records] if records_ok else []
    if (
        ckpt.status not in STATUSES
        or not 0 <= ckpt.step <= cfg.step_budget
        or not steps
        or steps[0] != 0
        or any(s % cfg.eval_every or s > ckpt.step for s in steps)
        or steps != sorted(set(steps))
    ):
        raise ConfigError(damaged.format("its step, status or evaluation records are inconsistent"))


@dataclass
class SavedRun:
    """A run folder read back for `tinygrok resume`."""

    dir: Path
    cfg: Config  # config.json's config, with the new budget when --steps was given
    config_doc: dict  # the whole config.json document
    checkpoint: Checkpoint
    # the run has ended (its checkpoint says finished) but summary.json or curves.png is missing or
    # older than that end: `train.complete_run` writes them, nothing is trained
    complete_only: bool = False


def outputs_current(run_dir: Path, step: int | None = None) -> bool:
    """Whether summary.json says the run finished (at `step`, if given) and curves.png is at
    least as new as it: the files the end of a run writes after its final checkpoint."""
    summary_path, curves = run_dir / "summary.json", run_dir / "curves.png"
    try:
        summary = json.loads(summary_path.read_text())
        drawn = curves.stat().st_mtime_ns >= summary_path.stat().st_mtime_ns
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (
        drawn
        and isinstance(summary, dict)
        and summary.get("status") == "finished"
        and (step is None or summary.get("steps_run") == step)
    )


def read_run(run_dir: Path, steps: int | None = None) -> SavedRun:
    """Read and check everything `tinygrok resume` needs, writing nothing: config.json, the
    checkpoint, summary.json (a diverged run is not resumed), and whether steps are left to run.

    A run whose checkpoint says finished but whose summary.json or curves.png is missing or stale
    (killed after its final checkpoint) comes back with `complete_only` when no --steps is given
    (with --steps it is checked, and trains on, as any other)."""
    cfg, doc = read_config(run_dir)
    ckpt = load_checkpoint(run_dir / "checkpoint.npz", cfg)
    if steps is None and ckpt.status == "finished" and not outputs_current(run_dir, ckpt.step):
        return SavedRun(run_dir, cfg, doc, ckpt, complete_only=True)
    if steps is not None:
        cfg = validate(cfg.replace(steps=steps))
    if _diverged(run_dir):
        raise ConfigError(
            f"{run_dir}: the run diverged; resuming from its last good checkpoint (step "
            f"{ckpt.step:,}) would diverge again, at the same step: start a new run with a "
            "smaller --lr"
        )
    if ckpt.status == "finished" and ckpt.step < ckpt.cfg.step_budget:
        raise ConfigError(
            f"{run_dir}: the run stopped early at step {ckpt.step:,}, after validation accuracy "
            f"stayed >= {cfg.generalized_threshold:g} for --patience {cfg.patience} steps; nothing "
            "to continue (a new run with --patience 0 trains the whole budget)"
        )
    if ckpt.step >= cfg.step_budget:
        need = f"give --steps more than {ckpt.step // len(cfg.tasks):,} to train longer"
        if steps is None:
            raise ConfigError(
                f"{run_dir}: the run already trained its whole budget ({ckpt.step:,} steps); {need}"
            )
        raise ConfigError(f"--steps: {steps:,} per task is not more than the run has done; {need}")
    return SavedRun(run_dir, cfg, doc, ckpt)


def _diverged(run_dir: Path) -> bool:
    """Whether summary.json says the run diverged (a run has no summary until it stops)."""
    path = run_dir / "summary.json"
    if not path.exists():
        return False
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(
            f"{path}: unreadable or not valid JSON ({e}); delete it (resume writes a new one)"
        ) from None
    return isinstance(summary, dict) and summary.get("status") == "diverged"
