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
"""

from __future__ import annotations

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
