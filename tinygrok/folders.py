"""Run folders and sweep folders on disk: their file names, every reader of their JSON files, and
the atomic writer. Every other module reads and writes these files through this one.

A run folder (`tinygrok run ... --out DIR`) holds

    config.json      the resolved config, the tinygrok version, engine, threads, provenance
    metrics.jsonl    one JSON object per evaluation (a NaN or infinite number written as null)
    summary.json     the grokking metrics, once the run has stopped
    checkpoint.npz   the whole state of the run (read and checked by checkpoint.py)
    curves.png       the run's figure
    analysis.json    `tinygrok analyze`'s measures, beside its figures (ANALYSIS_FIGURES)

and a sweep folder `sweep.json` (the definition) beside `runs/`.

Atomic writes: a file is written under a temporary name beside its final one, flushed to the disk
(fsync), renamed over the old file (`os.replace`, atomic on POSIX), and the folder is synced so the
rename itself is durable. A crash at any moment leaves either the old complete file or the new one.

Reading: every file is checked against the fields it may hold (the tables of fields.py: required
and optional keys, types, finite values, ranges), so a file that is missing where a run needs it,
unreadable, not valid JSON, or holds a missing, unknown, wrong-typed or out-of-range field is a
ConfigError of one line naming the file and the problem, never a traceback and never a number
that is silently wrong.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

from tinygrok.config import Config, validate
from tinygrok.errors import ConfigError
from tinygrok.fields import (
    CONFIG_DOC,
    EVALUATION,
    MEASURES,
    RECORD,
    RECORD_OPTIONAL,
    SETTINGS,
    SUMMARY_FIELDS,
    SWEEP_DOC,
    TASK_METRICS,
    Check,
    check_fields,
    check_grid,
)
from tinygrok.metrics import finite_or_none

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.npz"
CURVES = "curves.png"
ANALYSIS = "analysis.json"
ANALYSIS_FIGURES = ("analysis-spectrum.png", "analysis-measures.png", "analysis-weight-norm.png")
SWEEP = "sweep.json"
# What a run writes after it starts, and what starting it over must remove first (snapshots/
# aside, which snapshots.py clears): a new run must not sit beside the old run's results.
RUN_OUTPUTS = (CHECKPOINT, SUMMARY, CURVES, ANALYSIS, *ANALYSIS_FIGURES)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(f)` on a temporary file, then make it `path` in one atomic, durable step."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, or a second Ctrl-C: no temporary file stays behind
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename is an entry of the folder: sync it too
    finally:
        os.close(fd)


def write_json(path: Path, obj: dict) -> None:
    """Write strict JSON atomically (a NaN or infinite number as null, as in metrics.jsonl): a
    crash never leaves a half-written file as the only copy."""
    text = json.dumps(finite_or_none(obj), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def make_folder(path: Path, name: str) -> Path:
    """Make the folder `path` (and its parents) if needed; ConfigError naming the option or
    argument `name` ("--out") if it cannot be made."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{name}: cannot make the folder {path} ({e.strerror})") from None
    return path


def remove_outputs(run_dir: Path) -> None:
    """Remove what an earlier run left in `run_dir` (RUN_OUTPUTS), before a new run starts."""
    for name in RUN_OUTPUTS:
        (run_dir / name).unlink(missing_ok=True)


def _parse(text: str, where: str, fix: str) -> object:
    """The JSON value in `text`; ConfigError naming `where` otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not valid JSON ({e}){fix}") from None


def _read_value(path: Path, fix: str, missing_ok: bool) -> object:
    """The JSON value in `path` (None if missing and `missing_ok`); see `read_json`."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        if missing_ok:
            return None
        raise ConfigError(f"{path}: missing{fix}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: unreadable ({e}){fix}") from None
    return _parse(text, str(path), fix)


def read_json(path: Path, fix: str = "", missing_ok: bool = False) -> dict | None:
    """The JSON object in `path`. Missing: None with `missing_ok`, else a ConfigError; unreadable,
    not JSON or not an object: a ConfigError naming the file, then `fix` (what to do about it)."""
    fix = f"; {fix}" if fix else ""
    doc = _read_value(path, fix, missing_ok)
    if doc is not None and not isinstance(doc, dict):
        raise ConfigError(f"{path}: not a JSON object{fix}")
    return doc


def config_from_doc(doc: object, where: str, fix: str) -> Config:
    """A validated Config from a JSON object of settings, each of its type, or a ConfigError
    naming `where` and the `fix`. A setting that is absent takes its default: the file was
    written before that option existed, when tinygrok did what its default does."""
    try:
        check_fields(doc, SETTINGS, "the config", tuple(SETTINGS))
        return validate(Config.from_dict(doc))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}; {fix}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: a setting has the wrong type ({e}); {fix}") from None


def read_config(run_dir: Path) -> tuple[Config, dict]:
    """config.json of a run: its validated Config and the whole document."""
    path = Path(run_dir) / CONFIG
    fix = f"restore it, or start the run again with `tinygrok run ... --out {run_dir} --force`"
    if not path.exists():
        raise ConfigError(
            f"{run_dir}: no {CONFIG}, so no run to resume; start one with "
            f"`tinygrok run TASK --out {run_dir}`"
        )
    doc = _read_value(path, f"; {fix}", missing_ok=False)
    if not isinstance(doc, dict) or "config" not in doc:
        raise ConfigError(f'{path}: no "config" object; {fix}')
    _checked(doc, CONFIG_DOC, str(path), fix, ("resumes",))
    return config_from_doc(doc["config"], str(path), fix), doc


def _checked(
    doc: object, fields: Mapping[str, Check], where: str, fix: str, optional_keys: tuple = ()
) -> dict:
    """`check_fields` with the `fix` after its error line."""
    try:
        return check_fields(doc, fields, where, optional_keys)
    except ConfigError as e:
        raise ConfigError(f"{e}; {fix}" if fix else str(e)) from None


def read_summary(run_dir: Path, fix: str = "", cfg: Config | None = None) -> dict | None:
    """summary.json of a run (SUMMARY_FIELDS checked, per_task's entries one per task, and with
    `cfg` the run's config, its tasks and seed), or None while it has none (a run writes it when
    it stops)."""
    path = Path(run_dir) / SUMMARY
    doc = read_json(path, fix, missing_ok=True)
    if doc is None:
        return None
    _checked(doc, SUMMARY_FIELDS, str(path), fix, ("diverged_step",))
    tail = f"; {fix}" if fix else ""
    if set(doc["per_task"]) != set(doc["tasks"]):
        raise ConfigError(f"{path}: per_task must have one entry per task{tail}")
    if cfg is not None and (doc["tasks"], doc["seed"]) != (list(cfg.tasks), cfg.seed):
        raise ConfigError(
            f"{path}: the summary of another run than its {CONFIG} (tasks, seed){tail}"
        )
    for task, metrics in doc["per_task"].items():
        _checked(metrics, TASK_METRICS, f"{path}, per_task {task}", fix)
    return doc


def read_sweep(out: Path) -> tuple[Config, dict[str, tuple], tuple[int, ...]] | None:
    """The base config, grid and seeds of `out/sweep.json` (SWEEP_DOC checked), or None if the
    folder holds none."""
    path = Path(out) / SWEEP
    doc = read_json(path, missing_ok=True)
    if doc is None:
        return None
    check_fields(doc, SWEEP_DOC, str(path))
    fix = "restore it, or choose another --out"
    base = config_from_doc(doc["base"], f"{path}, base", fix)
    return base, check_grid(doc["grid"], str(path)), tuple(doc["seeds"])


def null_to_nan(value: object) -> object:
    """`value` with every null (None), in dicts and lists too, made NaN: metrics.jsonl writes a
    NaN or infinite number as null, and NaN is what arithmetic and matplotlib (a gap) expect."""
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: null_to_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [null_to_nan(v) for v in value]
    return value


def read_metrics(run_dir: Path, nan: bool = True) -> list[dict]:
    """Every evaluation record of a run, in order ([] before its first evaluation). With `nan`,
    a null number (NaN or infinite when logged) reads as NaN; without, it stays None."""
    path = Path(run_dir) / METRICS
    try:
        with path.open() as f:
            lines = [(i, line) for i, line in enumerate(f, 1) if line.strip()]
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: unreadable ({e})") from None
    records: list[dict] = []
    measured: set = set()
    for i, line in lines:
        where = f"{path}, line {i}"
        first, last = (records[0], records[-1]) if records else (None, None)
        records.append(_record(_parse(line, where, ""), where, first, last, measured))
        measured = measured or set(records[-1].get("measures", ()))
    return [null_to_nan(r) for r in records] if nan else records


def _record(r: object, where: str, first: dict | None, last: dict | None, measured: set) -> dict:
    """One line of metrics.jsonl, checked (RECORD; per_task's entries, EVALUATION; measures,
    MEASURES) and consistent with the `first` and `last` records before it: a later step, the
    same tasks in per_task; and the `measured` names of the first record that logged measures."""
    check_fields(r, RECORD, where, RECORD_OPTIONAL)
    for task, ev in r.get("per_task", {}).items():
        check_fields(ev, EVALUATION, f"{where}, per_task {task}")
    if "measures" in r:
        check_fields(r["measures"], MEASURES, f"{where}, measures", tuple(MEASURES))
        if measured and set(r["measures"]) != measured:
            raise ConfigError(f"{where}: other measures than the first record that logged them")
    if last is not None and r["step"] <= last["step"]:
        raise ConfigError(f"{where}: step {r['step']} does not follow step {last['step']}")
    if first is not None and set(r.get("per_task", ())) != set(first.get("per_task", ())):
        raise ConfigError(f"{where}: per_task names other tasks than the first record")
    return r


def outputs_current(run_dir: Path, step: int | None = None) -> bool:
    """Whether summary.json says the run finished (at `step`, if given) and curves.png is at
    least as new as it: the files the end of a run writes after its final checkpoint. A damaged
    summary.json is not current (the end of the run writes it again)."""
    summary_path, curves = Path(run_dir) / SUMMARY, Path(run_dir) / CURVES
    try:
        summary = read_summary(run_dir)
        drawn = curves.stat().st_mtime_ns >= summary_path.stat().st_mtime_ns
    except (OSError, ConfigError):
        return False
    return (
        drawn
        and summary.get("status") == "finished"
        and (step is None or summary.get("steps_run") == step)
    )
