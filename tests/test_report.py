"""The report's system ("Grokking: Shortening the Delay", code: jetyue04/loss-plateau) in
tinygrok: `--preset report` is its model and recipe, and `--init report*` its starts.

The model is checked against PyTorch's own nn.TransformerEncoder (skipped without torch), the
starts against the rules of the report's code, drawn in distribution."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tinygrok.config import from_preset
from tinygrok.params import init_params, is_matrix, n_params, report_linear

pytestmark = pytest.mark.usefixtures("single_thread")


def torch_reference():
    """benchmarks/torch_reference.py as a module (torch imported, or the test skipped)."""
    pytest.importorskip("torch")
    path = Path(__file__).parents[1] / "benchmarks" / "torch_reference.py"
    spec = importlib.util.spec_from_file_location("torch_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_preset_is_the_reports_recipe():
    cfg = from_preset("report")
    assert (cfg.layers, cfg.d_model, cfg.heads, cfg.d_mlp) == (2, 128, 4, 512)
    assert (cfg.norm, cfg.final_norm, cfg.activation, cfg.head) == ("post", False, "relu", "vocab")
    assert (cfg.optimizer, cfg.lr, cfg.beta1, cfg.beta2, cfg.eps) == (
        "adamw",
        1e-3,
        0.9,
        0.98,
        1e-8,
    )
    assert (cfg.weight_decay, cfg.warmup_steps, cfg.steps, cfg.eval_every) == (1e-3, 0, 400_000, 50)
    assert (cfg.batch_size, cfg.epoch_batches, cfg.train_frac, cfg.seed) == (512, True, 0.5, 42)
    # the report's 422,627 less the fifth row of its position table, which no input reaches
    assert n_params(cfg) == 422_627 - 128
    assert cfg.loss_dtype == "float32"  # PyTorch's loss of a float32 model
    assert from_preset("report", ("division", "multiplication")).step_budget == 800_000


@pytest.mark.parity
@pytest.mark.parametrize("engine", ["numba", "numpy"])
def test_preset_model_is_pytorchs_transformer_encoder(engine):
    """Logits, loss and every gradient of the preset's model on a batch of 512 equal those of an
    nn.TransformerEncoder built as the report's code builds it, loaded with the same weights."""
    tr = torch_reference()
    import torch

    # PyTorch computes a float64 model's loss in float64
    cfg = from_preset("report", dtype="float64", loss_dtype="float64")
    params, _ = init_params(cfg)
    params.flat += 0.05 * np.random.default_rng(3).standard_normal(params.flat.size)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert tr.check_same_model(cfg.replace(engine=engine), params, tol=1e-9) < 1e-9
    finally:
        torch.set_default_dtype(before)


def _std(w: np.ndarray) -> float:
    return float(np.sqrt(np.mean(w.astype(np.float64) ** 2)))


@pytest.mark.parity
def test_report_start_is_pytorchs_in_distribution():
    """Every tensor of `--init report` has the spread PyTorch gives the same tensor of the report's
    model, and, as nn.TransformerEncoder deep-copies its layer, both blocks start equal there and
    here."""
    tr = torch_reference()
    import torch

    cfg = from_preset("report", dtype="float64")
    params, _ = init_params(cfg)
    torch.manual_seed(0)
    model = tr.ReportModel(cfg)
    for name, tensor, transposed in tr._pairs(model):
        theirs = tensor.detach().numpy()
        mine = params[name]
        assert mine.shape == (theirs.T if transposed else theirs).shape, name
        if _std(theirs) == 0:
            assert (mine == 0).all(), name
        elif theirs.std() == 0:  # LayerNorm gains
            assert (mine == theirs.flat[0]).all(), name
        else:
            assert abs(_std(mine) / _std(theirs) - 1) < 6 / np.sqrt(mine.size), name
    layers = model.transformer.layers
    assert torch.equal(layers[0].linear1.weight, layers[1].linear1.weight)
    for name in params.shapes:
        if name.startswith("blocks.1."):
            np.testing.assert_array_equal(params[name], params["blocks.0." + name[9:]], name)


def test_report_xavier_redraws_the_linear_modules_only():
    """The report's sparse-start rule with s = 0 (the dense Xavier control), and its small start:
    each nn.Linear weight N(0, 2 / (fan_in + fan_out)) times --init-scale, biases 0, drawn per
    block; the query/key/value projection and the embeddings stay the report start's."""
    cfg = from_preset("report", dtype="float64")
    base, _ = init_params(cfg.replace(init="report"))
    linear = report_linear(cfg)
    for scale in (1.0, 0.01):
        params, mask = init_params(cfg.replace(init="report-xavier", init_scale=scale))
        assert (mask.flat == 1).all()
        for name, shape in params.shapes.items():
            w = params[name]
            if name in linear:
                std = scale * np.sqrt(2 / sum(shape))
                assert abs(_std(w) / std - 1) < 6 / np.sqrt(w.size), name
                assert abs(w.mean()) < 6 * std / np.sqrt(w.size), name
            elif name in linear.values():
                assert (w == 0).all(), name
            else:
                np.testing.assert_array_equal(w, base[name], name)
        assert (params["blocks.0.mlp.w_fc"] != params["blocks.1.mlp.w_fc"]).all()


def test_report_sparse_drops_and_rescales_and_keeps_the_norm():
    """--init report-xavier --sparse 0.9: each linear weight dropped with probability 0.9, the
    survivors scaled by 1/sqrt(0.1), so a matrix keeps Xavier's norm; the mask marks the drops."""
    cfg = from_preset("report", dtype="float64")
    dense, _ = init_params(cfg.replace(init="report-xavier"))
    params, mask = init_params(cfg.replace(init="report-xavier", sparse=0.9))
    linear = report_linear(cfg)
    for name, shape in params.shapes.items():
        w, m = params[name], mask[name]
        if name not in linear:
            assert (m == 1).all(), name
            np.testing.assert_array_equal(w, dense[name], name)
            continue
        n = w.size
        dropped = float((m == 0).mean())
        assert abs(dropped - 0.9) < 6 * np.sqrt(0.09 / n), name  # binomial
        assert ((w == 0) == (m == 0)).all(), name
        assert abs(np.linalg.norm(w) / np.sqrt(2 * n / sum(shape)) - 1) < 0.1, name
    assert not is_matrix("head.b", params.shapes["head.b"])


def test_report_norm_matches_the_sparse_start_in_size_not_in_form():
    """--init report-norm: the report start with each linear weight rescaled to Xavier-normal's
    expected norm (the sparse start's); biases, embeddings and the rest as the report start."""
    cfg = from_preset("report", dtype="float64")
    base, _ = init_params(cfg.replace(init="report"))
    params, _ = init_params(cfg.replace(init="report-norm"))
    linear = report_linear(cfg)
    for name, shape in params.shapes.items():
        w = params[name]
        if name in linear:
            np.testing.assert_allclose(np.linalg.norm(w), np.sqrt(2 * w.size / sum(shape)))
            ratio = w / base[name]
            np.testing.assert_allclose(ratio, ratio.flat[0], err_msg=name)  # the same draw, scaled
        else:
            np.testing.assert_array_equal(w, base[name], name)


@pytest.mark.parity
def test_float32_loss_rounds_as_pytorchs():
    """The preset's loss (float32) and its gradient against PyTorch's F.cross_entropy on float32
    logits, from a rough fit to one beyond float32's resolution: the gradients agree within
    float32's precision, and the rows whose target's gradient rounds to exactly zero are the same
    (softmax collapse)."""
    pytest.importorskip("torch")
    import torch
    import torch.nn.functional as F

    from tinygrok import layers as L

    rng = np.random.default_rng(0)
    N = 512
    logits = (3 * rng.standard_normal((N, 99))).astype(np.float32)
    targets = rng.integers(0, 99, N)
    logits[np.arange(N), targets] += rng.uniform(0, 40, N).astype(np.float32)
    z = torch.from_numpy(logits).requires_grad_()
    want_loss = F.cross_entropy(z, torch.from_numpy(targets))
    want_loss.backward()
    want = z.grad.numpy()
    for engine in ("numba", "numpy"):
        loss, cache = L.cross_entropy_forward(logits, targets, engine, "float32")
        got = L.cross_entropy_backward(1.0, cache)[0]
        assert abs(loss - want_loss.item()) < 1e-6
        np.testing.assert_allclose(got, want, rtol=0, atol=4e-6 / N)
        zero, want_zero = got[np.arange(N), targets] == 0, want[np.arange(N), targets] == 0
        assert want_zero.sum() > N // 4 and (zero != want_zero).sum() <= N // 100
