"""Grokking metrics on hand-made curves: the first evaluated step at or above each threshold, the
delay between them, progress as a share of the budget, and None for what did not happen."""

from __future__ import annotations

import json

import pytest

from tinygrok.metrics import grokking_metrics

STEPS = [0, 100, 200, 300, 400, 500, 600]


def test_memorize_then_generalize():
    train = [0.01, 0.50, 0.99, 1.00, 0.98, 1.00, 1.00]  # reaches 0.99 at 200, dips, stays
    val = [0.01, 0.02, 0.03, 0.40, 0.949, 0.95, 0.99]  # 0.949 is not yet 0.95
    m = grokking_metrics(STEPS, train, val, step_budget=2000)
    assert m == {
        "memorized_step": 200,
        "generalized_step": 500,
        "delay_steps": 300,
        "progress_pct": pytest.approx(25.0),
    }


def test_nothing_reached_is_none():
    m = grokking_metrics(STEPS, [0.5] * 7, [0.1] * 7, step_budget=600)
    assert m == {
        "memorized_step": None,
        "generalized_step": None,
        "delay_steps": None,
        "progress_pct": None,
    }


def test_memorized_but_never_generalized():
    m = grokking_metrics(STEPS, [0.0, 1, 1, 1, 1, 1, 1], [0.0, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3], 600)
    assert m["memorized_step"] == 100
    assert m["generalized_step"] is None and m["delay_steps"] is None
    assert m["progress_pct"] is None


def test_generalized_without_memorizing_has_progress_but_no_delay():
    m = grokking_metrics(
        STEPS, [0.0, 0.9, 0.97, 0.98, 0.98, 0.98, 0.98], [0, 0, 0, 0.96, 1, 1, 1], 600
    )
    assert m["memorized_step"] is None and m["delay_steps"] is None
    assert m["generalized_step"] == 300
    assert m["progress_pct"] == pytest.approx(50.0)


def test_thresholds_are_options():
    train = [0.0, 0.8, 0.9, 0.95, 1.0, 1.0, 1.0]
    val = [0.0, 0.1, 0.5, 0.7, 0.8, 0.9, 1.0]
    m = grokking_metrics(
        STEPS, train, val, 1200, memorized_threshold=0.9, generalized_threshold=0.7
    )
    assert (m["memorized_step"], m["generalized_step"], m["delay_steps"]) == (200, 300, 100)
    assert m["progress_pct"] == pytest.approx(25.0)


def test_same_step_gives_zero_delay():
    m = grokking_metrics([0, 50], [0.0, 1.0], [0.0, 1.0], 50)
    assert (m["memorized_step"], m["generalized_step"], m["delay_steps"]) == (50, 50, 0)
    assert m["progress_pct"] == pytest.approx(100.0)


def test_null_and_nan_values_never_reach_a_threshold():
    """metrics.jsonl writes a NaN or infinite number as null; the metrics skip it."""
    from tinygrok.metrics import stability

    nan = float("nan")
    val = [0.0, None, 0.96, nan, None, 0.97, 0.99]
    m = grokking_metrics(STEPS, [0.0, nan, 1.0, 1.0, None, 1.0, 1.0], val, 1000)
    assert (m["memorized_step"], m["generalized_step"]) == (200, 200)
    assert stability(STEPS, val) == {"unstable": False, "min_val_acc_after_generalized": 0.96}


def test_json_files_are_strict_json(tmp_path):
    """Every JSON file a run writes (summary.json, config.json, ...) is strict JSON that any
    parser reads: a NaN or infinite number is written as null, in nested dicts and lists too."""
    from tinygrok.folders import write_json

    path = tmp_path / "summary.json"
    write_json(path, {"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": -float("inf")}})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text

    def strict(name: str) -> None:
        raise ValueError(name)

    assert json.loads(text, parse_constant=strict) == {
        "a": None,
        "b": [1.5, None],
        "c": {"d": None},
    }
