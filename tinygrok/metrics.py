"""Grokking metrics, computed from the evaluation log alone.

    memorized_step   first evaluated step with training accuracy >= memorized_threshold (0.99)
    generalized_step first evaluated step with validation accuracy >= generalized_threshold (0.95)
    delay_steps      generalized_step - memorized_step
    progress_pct     100 * generalized_step / step_budget (the figure of the report "Grokking:
                     Shortening the Delay")

Each is None (JSON null) when it did not happen. Stability after generalizing:

    unstable                       validation accuracy fell below generalized_threshold at an
                                   evaluation after generalized_step (false if never generalized)
    min_val_acc_after_generalized  the lowest validation accuracy from generalized_step on (None
                                   if it never generalized)

A run stopped early by `patience` has only been watched until it stayed generalized for `patience`
steps, so `unstable` covers the evaluated steps only; run with patience 0 to watch the whole budget.

The early stop reads the same log: `generalized_since` is where the current streak of generalized
evaluations began. A line of metrics.jsonl is strict JSON (`json_line`): a NaN or infinite value is
written as null.
"""

from __future__ import annotations

import json
import math


def first_step(steps: list[int], values: list[float | None], threshold: float) -> int | None:
    """The first step whose value reaches the threshold, or None. A value that is None (null in
    metrics.jsonl) or NaN never reaches it."""
    return next(
        (s for s, v in zip(steps, values, strict=True) if v is not None and v >= threshold), None
    )


def grokking_metrics(
    steps: list[int],
    train_acc: list[float],
    val_acc: list[float],
    step_budget: int,
    memorized_threshold: float = 0.99,
    generalized_threshold: float = 0.95,
) -> dict:
    """The four grokking fields from aligned lists of evaluated steps and accuracies."""
    mem = first_step(steps, train_acc, memorized_threshold)
    gen = first_step(steps, val_acc, generalized_threshold)
    return {
        "memorized_step": mem,
        "generalized_step": gen,
        "delay_steps": None if mem is None or gen is None else gen - mem,
        "progress_pct": None if gen is None else 100.0 * gen / step_budget,
    }


def stability(steps: list[int], val_acc: list[float], generalized_threshold: float = 0.95) -> dict:
    """Whether validation accuracy fell back below the threshold after first reaching it."""
    gen = first_step(steps, val_acc, generalized_threshold)
    if gen is None:
        return {"unstable": False, "min_val_acc_after_generalized": None}
    # a None (null in metrics.jsonl) or NaN value is not known, so not counted
    after = [
        v
        for s, v in zip(steps, val_acc, strict=True)
        if s >= gen and v is not None and not math.isnan(v)
    ]  # holds the value at gen itself
    return {
        "unstable": min(after) < generalized_threshold,
        "min_val_acc_after_generalized": min(after),
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
