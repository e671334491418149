"""A run's figure names the run: its preset and the options that differ from it; with live
measures, curves.png gains their panel."""

from __future__ import annotations

import pytest

from tinygrok.config import from_preset
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
