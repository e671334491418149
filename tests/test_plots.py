"""A run's figure names the run: its preset and the options that differ from it; with live
measures, curves.png gains their panel."""

from __future__ import annotations

import json

import pytest

from tinygrok.config import from_preset
from tinygrok.folders import read_metrics
from tinygrok.metrics import json_line
from tinygrok.plots import run_label
from tinygrok.train import train


@pytest.mark.parametrize(
    "preset, tasks, options, label",
    [
        ("power", ("division",), {}, ""),
        ("power", ("division",), {"sparse": 0.9}, "sparse=0.9"),
        ("tiny", (), {"steps": 400}, "preset tiny, steps=400"),
        (
            "report",
            (),
            {"init": "report-xavier", "sparse": 0.9},
            "preset report, init=report-xavier, sparse=0.9",
        ),
        ("nanda", (), {"p": 97, "seed": 3}, "preset nanda"),  # p and seed are in the title
    ],
)
def test_run_label_names_the_preset_and_what_differs(preset, tasks, options, label):
    assert run_label(from_preset(preset, tasks, **options)) == label


@pytest.mark.usefixtures("single_thread")
def test_curves_gain_a_measures_panel(tmp_path):
    cfg = from_preset("tiny", steps=100, eval_every=25, measures_every=50)
    train(cfg, tmp_path, progress=False)
    assert (tmp_path / "curves.png").stat().st_size > 20_000
    import matplotlib.image as mpimg

    height = mpimg.imread(tmp_path / "curves.png").shape[0]
    cfg2 = cfg.replace(measures_every=0)
    train(cfg2, tmp_path / "none", progress=False)
    assert mpimg.imread(tmp_path / "none" / "curves.png").shape[0] < height  # two panels, not three


def strict_json(line: str) -> dict:
    """json.loads that refuses NaN and Infinity, as every JSON reader but Python's does."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(line, parse_constant=refuse)


def test_json_line_writes_non_finite_numbers_as_null():
    inf, nan = float("inf"), float("nan")
    record = {"step": 5, "train_loss": inf, "val_loss": nan, "per_task": {"a": {"x": -inf}}}
    record["measures"] = {"gini": [0.5, nan], "key_frequencies": [3, 7]}
    assert strict_json(json_line(record)) == {
        "step": 5,
        "train_loss": None,
        "val_loss": None,
        "per_task": {"a": {"x": None}},
        "measures": {"gini": [0.5, None], "key_frequencies": [3, 7]},
    }


@pytest.mark.slow
@pytest.mark.usefixtures("single_thread")
def test_a_run_with_infinite_losses_keeps_metrics_valid_and_draws(tmp_path, monkeypatch):
    """An infinite validation loss (a confident wrong answer): metrics.jsonl
    stays strict JSON with nulls, the summary and curves.png are written from it."""
    import tinygrok.train as train_mod

    real = train_mod.evaluate_run

    def infinite_val_loss(params, data, cfg):
        return real(params, data, cfg) | {"val_loss": float("inf")}

    monkeypatch.setattr(train_mod, "evaluate_run", infinite_val_loss)
    cfg = from_preset("tiny", steps=100, eval_every=25, measures_every=50)
    train(cfg, tmp_path, progress=False)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert all(strict_json(line)["val_loss"] is None for line in lines)
    assert (tmp_path / "curves.png").stat().st_size > 20_000
    assert read_metrics(tmp_path)[-1]["val_loss"] != read_metrics(tmp_path)[-1]["val_loss"]  # NaN


@pytest.mark.usefixtures("single_thread")
def test_curves_of_a_run_still_training_draw_without_its_summary(tmp_path):
    """A run folder before its summary.json exists (a run in progress, or one killed before its
    first summary) still draws, from its config and metrics."""
    from tinygrok.plots import plot_curves

    train(from_preset("tiny", steps=50, eval_every=25), tmp_path, progress=False)
    (tmp_path / "summary.json").unlink()
    out = plot_curves(tmp_path, tmp_path / "again.png")
    assert out.stat().st_size > 20_000


@pytest.mark.parametrize(
    "log_x, lim, expected",
    [
        # five decades on a log axis: thousands as "k" from 1,000 on, so that labels do not meet
        (True, (20, 200_000), ["50", "100", "500", "1k", "2k", "5k", "10k", "100k", "200k"]),
        # a linear axis: commas below 10,000, then thousands, with a decimal where one is due
        (False, (0, 14_000), ["0", "2,500", "7,500", "10k", "12.5k"]),
    ],
)
def test_step_axis_labels(log_x, lim, expected):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinygrok.plots import step_axis

    fig, ax = plt.subplots()
    ax.plot(lim, (0, 1))
    step_axis(ax, log_x)
    ax.set_xlim(*lim)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    plt.close(fig)
    assert set(expected) <= set(labels), labels
