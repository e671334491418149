"""What each file of a run or sweep folder may hold: every field with its check (a predicate and
what the value must be, for the error line), and `check_fields`, which holds a JSON object to its
table. folders.py reads every file through these tables, so a missing, unknown, wrong-typed,
non-finite or out-of-range field is one line naming the file, the field and what it must be.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping

from tinygrok.config import Config
from tinygrok.errors import ConfigError

# A field's check: a predicate, and what the value must be (for the error line).
Check = tuple[Callable[[object], bool], str]


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def optional(check: Check) -> Check:
    """`check`, or null."""
    return (lambda v: v is None or check[0](v), f"{check[1]} or null")


STEP: Check = (lambda v: _int(v) and v >= 0, "an integer >= 0")
COUNT: Check = (lambda v: _int(v) and v >= 1, "an integer >= 1")
INTEGER: Check = (_int, "an integer")
NUMBER: Check = (_number, "a finite number")
NONNEGATIVE: Check = (lambda v: _number(v) and v >= 0, "a finite number >= 0")
FRACTION: Check = (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]")
BOOL: Check = (lambda v: isinstance(v, bool), "true or false")
TEXT: Check = (lambda v: isinstance(v, str), "a string")
OBJECT: Check = (lambda v: isinstance(v, dict), "a JSON object")
LIST: Check = (lambda v: isinstance(v, list), "a list")
NAMES: Check = (
    lambda v: isinstance(v, list) and bool(v) and all(isinstance(t, str) for t in v),
    "a non-empty list of strings",
)
SEEDS: Check = (
    lambda v: (
        isinstance(v, list) and bool(v) and all(STEP[0](s) for s in v) and len(set(v)) == len(v)
    ),
    "a non-empty list of distinct integers >= 0",
)
THREADS: Check = (
    lambda v: (
        isinstance(v, dict) and set(v) == {"blas", "numba"} and all(COUNT[0](n) for n in v.values())
    ),
    'a JSON object {"blas": N, "numba": N} of integers >= 1',
)


def one_of(*values: str) -> Check:
    """One of `values`."""
    return (lambda v: v in values, "one of " + ", ".join(values))


# What a run's files hold: every field with its check; (optional) names those that may be absent.
EVALUATION = {
    "train_loss": optional(NONNEGATIVE),  # null: NaN or infinite when logged
    "train_acc": optional(FRACTION),
    "val_loss": optional(NONNEGATIVE),
    "val_acc": optional(FRACTION),
}
RECORD = {
    "step": STEP,
    "lr": NONNEGATIVE,
    **EVALUATION,
    "weight_norm": optional(NONNEGATIVE),
    "elapsed_s": NONNEGATIVE,
    "per_task": OBJECT,
    "measures": OBJECT,
}
RECORD_OPTIONAL = ("per_task", "measures")
# `--measures-every`: which are logged depends on the task (tinygrok.measures.live_measures)
MEASURES = {
    **{
        f"gini_{layer}{basis}": optional(FRACTION)
        for layer in ("embedding", "unembedding")
        for basis in ("", "_additive")
    },
    "key_frequencies": (
        lambda v: isinstance(v, list) and all(STEP[0](k) for k in v),
        "a list of integers >= 0",
    ),
    "restricted_loss": optional(NONNEGATIVE),
    "excluded_loss": optional(NONNEGATIVE),
}
TASK_METRICS = {
    "memorized_step": optional(STEP),
    "generalized_step": optional(STEP),
    "delay_steps": optional(INTEGER),
    "progress_pct": optional(NONNEGATIVE),
    "unstable": BOOL,
    "min_val_acc_after_generalized": optional(FRACTION),
    "final_train_acc": optional(FRACTION),
    "final_val_acc": optional(FRACTION),
}
SUMMARY_FIELDS = {
    "tasks": NAMES,
    "seed": STEP,
    "step_budget": COUNT,
    "steps_run": STEP,
    **TASK_METRICS,
    "n_params": COUNT,
    "wall_s": NONNEGATIVE,
    "steps_per_s": optional(NONNEGATIVE),
    "status": one_of("finished", "diverged", "interrupted"),
    "per_task": OBJECT,
    "initial_sparsity": FRACTION,
    "final_sparsity": FRACTION,
    "diverged_step": STEP,
}
CONFIG_DOC = {
    "config": OBJECT,
    "tinygrok_version": TEXT,
    "engine": TEXT,
    "threads": THREADS,
    "n_params": COUNT,
    "provenance": OBJECT,
    "resumes": LIST,
}
SWEEP_DOC = {"tinygrok_version": TEXT, "base": OBJECT, "grid": OBJECT, "seeds": SEEDS}


def _setting_check(default: object) -> Check:
    """The check of a Config field, from its default's type (tasks: a list of names)."""
    if isinstance(default, bool):
        return BOOL
    if isinstance(default, int):
        return INTEGER
    if isinstance(default, float) or default is None:  # NaN and ranges: `validate` names them
        number = (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number")
        return optional(number) if default is None else number
    if isinstance(default, str):
        return TEXT
    return NAMES


SETTINGS = {f.name: _setting_check(f.default) for f in dataclasses.fields(Config)}


def check_fields(
    doc: object, fields: Mapping[str, Check], where: str, optional_keys: tuple[str, ...] = ()
) -> dict:
    """`doc` itself if it is a JSON object holding every key of `fields` (those in
    `optional_keys` may be absent) and no other, each passing its check; otherwise a ConfigError
    of one line naming `where`, the key and what it must be."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: not a JSON object")
    missing = [k for k in fields if k not in doc and k not in optional_keys]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(map(json.dumps, missing))}")
    unknown = sorted(k for k in doc if k not in fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(json.dumps, unknown))}")
    for key, value in doc.items():
        test, what = fields[key]
        if not test(value):
            raise ConfigError(f"{where}: {key} must be {what} (got {_shown(value)})")
    return doc


def _shown(value: object) -> str:
    """`value` as JSON, cut to a few dozen characters for an error line."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_grid(grid: dict, where: str) -> dict[str, tuple]:
    """A sweep's grid from sweep.json: Config fields other than the seed, each with a non-empty
    list of values of that field's type; ConfigError naming `where` otherwise."""
    for key, values in grid.items():
        if key not in SETTINGS or key == "seed":
            raise ConfigError(f"{where}: grid: {key!r} is not a run setting")
        test, what = SETTINGS[key]
        if not isinstance(values, list) or not values or not all(test(v) for v in values):
            raise ConfigError(f"{where}: grid {key} must be a non-empty list, each {what}")
    return {k: tuple(v) for k, v in grid.items()}
