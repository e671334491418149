"""The model: its size, its initialization (the default `--init pytorch`, and `--init nanda`),
--sparse and --init-scale, and the shortcut that computes only what reaches the loss."""

from __future__ import annotations

import numpy as np
import pytest

from tinygrok import layers as L
from tinygrok.config import Config, from_preset, validate
from tinygrok.model import (
    Params,
    backward,
    distinct_prefixes,
    evaluate,
    forward,
    init_params,
    is_matrix,
    n_params,
    param_shapes,
)
from tinygrok.tasks import make_dataset

pytestmark = pytest.mark.usefixtures("single_thread")


def expected_size(cfg: Config) -> int:
    """The parameter count of the model, written out by hand."""
    V, T, C, F, P = cfg.p + len(cfg.tasks) + 1, 4, cfg.d_model, cfg.d_mlp, cfg.p
    ln = 2 * C if cfg.layer_norm else 0
    block = ln + (C * 3 * C + 3 * C) + (C * C + C) + ln + (C * F + F) + (F * C + C)
    return V * C + T * C + cfg.layers * block + ln + C * P + P


def test_default_model_has_the_size_of_the_table():
    assert n_params(Config()) == 422_497  # 2 layers, d_model 128, 4 heads, MLP 512, p = 97
    assert expected_size(Config()) == 422_497


@pytest.mark.parametrize(
    "changes",
    [
        {"tasks": ("addition", "subtraction", "multiplication", "division")},
        {"layer_norm": False},
        {"layers": 3, "d_model": 64, "heads": 8, "d_mlp": 100, "p": 31},
    ],
)
def test_size_follows_the_config(changes):
    cfg = validate(Config(**changes))
    params, mask = init_params(cfg)
    assert n_params(cfg) == expected_size(cfg) == params.flat.size == mask.flat.size


@pytest.fixture(scope="module")
def default_init():
    cfg = Config()
    params, mask = init_params(cfg)
    return cfg, params, mask


def test_parameters_are_float32_by_default(default_init):
    _, params, mask = default_init
    assert params.flat.dtype == np.float32
    assert (mask.flat == 1).all()


def test_embeddings_are_standard_normal(default_init):
    _, params, _ = default_init
    for name in ("wte", "wpe"):
        w = params[name].astype(np.float64)
        se = 1 / np.sqrt(w.size)  # standard error of the mean; that of the std is about se / 1.4
        assert abs(w.mean()) < 5 * se, name
        assert abs(w.std() - 1) < 5 * se, name


def test_linear_layers_are_uniform_with_pytorch_bounds(default_init):
    cfg, params, _ = default_init
    C, F = cfg.d_model, cfg.d_mlp
    bounds = {"attn.w_qkv": np.sqrt(6 / (C + 3 * C))}  # xavier_uniform_ of the (3C, C) in_proj
    bounds |= {k: 1 / np.sqrt(C) for k in ("attn.w_o", "mlp.w_fc", "mlp.b_fc")}
    bounds |= {k: 1 / np.sqrt(F) for k in ("mlp.w_proj", "mlp.b_proj")}
    checked = 0
    for name in param_shapes(cfg):
        kind = name.split(".", 2)[-1] if name.startswith("blocks.") else name
        bound = {"head.w": 1 / np.sqrt(C), "head.b": 1 / np.sqrt(C)}.get(kind, bounds.get(kind))
        if bound is None:
            continue
        w = np.abs(params[name].astype(np.float64))
        # U(-b, b): nothing beyond b, and the largest of n draws lies within about b / n of it
        assert w.max() <= bound * (1 + 1e-6), name
        assert w.max() > bound * (1 - 10 / w.size), name
        assert abs(w.mean() - bound / 2) < 5 * bound / np.sqrt(12 * w.size), name
        checked += 1
    assert checked == 2 + 6 * cfg.layers


def test_attention_biases_are_zero_and_layer_norms_identity(default_init):
    cfg, params, _ = default_init
    for i in range(cfg.layers):
        b = f"blocks.{i}."
        assert (params[b + "attn.b_qkv"] == 0).all() and (params[b + "attn.b_o"] == 0).all()
        for ln in ("ln1", "ln2"):
            assert (params[b + ln + ".w"] == 1).all() and (params[b + ln + ".b"] == 0).all()
    assert (params["ln_f.w"] == 1).all() and (params["ln_f.b"] == 0).all()


def test_nanda_init_is_normal_with_their_scales():
    """--init nanda (Nanda et al.'s code): every matrix N(0, 1/d_model), the unembedding
    N(0, 1/p), every bias 0, LayerNorm (if any) the identity."""
    cfg = validate(Config(tasks=("addition",), p=113, init="nanda", dtype="float64"))
    params, _ = init_params(cfg)
    for name, shape in params.shapes.items():
        w = params[name]
        if not is_matrix(name, shape):
            assert (w == (1 if name.endswith(".w") else 0)).all(), name
            continue
        std = 1 / np.sqrt(cfg.p if name == "head.w" else cfg.d_model)
        se = std / np.sqrt(w.size)
        assert abs(w.mean()) < 5 * se, name
        assert abs(w.std() - std) < 5 * se, name
    assert from_preset("nanda").init == "nanda"


def test_initialization_depends_on_the_seed():
    small = dict(tasks=("addition",), p=11, d_model=16, heads=2, d_mlp=32)
    a, _ = init_params(Config(**small, seed=1))
    b, _ = init_params(Config(**small, seed=1))
    c, _ = init_params(Config(**small, seed=2))
    np.testing.assert_array_equal(a.flat, b.flat)
    assert (a["wte"] != c["wte"]).all()


@pytest.mark.parametrize("sparse", [0.5, 0.9])
def test_sparse_zeroes_that_fraction_of_every_weight_matrix_and_nothing_else(sparse):
    small = dict(tasks=("division", "addition"), p=13, d_model=16, heads=2, d_mlp=48, seed=3)
    dense, _ = init_params(Config(**small))
    params, mask = init_params(Config(**small, sparse=sparse))
    for name, shape in params.shapes.items():
        w, m, d = params[name], mask[name], dense[name]
        if is_matrix(name, shape):
            assert int((m == 0).sum()) == round(sparse * w.size), name
            assert ((w == 0) == (m == 0)).all(), name  # zero exactly where the mask says
            np.testing.assert_array_equal(w, d * m, err_msg=name)  # the dense start, masked
        else:
            assert (m == 1).all(), name
            np.testing.assert_array_equal(w, d, err_msg=name)


def test_init_scale_scales_weight_matrices_only():
    small = dict(tasks=("multiplication",), p=11, d_model=16, heads=4, d_mlp=32, dtype="float64")
    dense, _ = init_params(Config(**small))
    scaled, _ = init_params(Config(**small, init_scale=0.1))
    for name, shape in dense.shapes.items():
        factor = 0.1 if is_matrix(name, shape) else 1.0
        np.testing.assert_allclose(scaled[name], factor * dense[name], rtol=1e-15, err_msg=name)


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"layer_norm": False},
        {"norm": "post"},
        {"norm": "post", "final_norm": False, "head": "vocab", "activation": "relu"},
    ],
    ids=["pre", "no-ln", "post", "report"],
)
def test_lean_forward_and_backward_equal_the_textbook_model(changes, layers):
    """The lean path (last block on the last position only, first block's prefix positions once per
    distinct prefix) gives the logits and every gradient of the model computed in full, for every
    block layout."""
    cfg = validate(
        Config(
            tasks=("subtraction", "division"), p=11, layers=layers, d_model=16, heads=4, d_mlp=32
        )
    )
    cfg = cfg.replace(dtype="float64", **changes)
    params, _ = init_params(cfg)
    d = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)[1]
    assert len(distinct_prefixes(d.train_x, params["wte"].shape[0])[0]) == cfg.p  # shared
    out = {}
    for lean in (True, False):
        logits, caches = forward(params, d.train_x, cfg, lean=lean)
        _, c_ce = L.cross_entropy(logits, d.train_y, "numpy")
        grads = Params.zeros(params.shapes, np.float64)
        backward(L.cross_entropy_back(c_ce, "numpy"), caches, params, cfg, grads)
        out[lean] = logits, grads.flat
    np.testing.assert_allclose(out[True][0], out[False][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out[True][1], out[False][1], rtol=1e-10, atol=1e-13)


def test_distinct_prefixes():
    tokens = np.array([[3, 9, 1, 10], [4, 9, 1, 10], [3, 9, 2, 10], [3, 8, 2, 10]])
    first, inv = distinct_prefixes(tokens, 11)
    np.testing.assert_array_equal(tokens[first][inv, :2], tokens[:, :2])
    assert len(first) == 3 and inv[0] == inv[2] != inv[1]


def test_evaluation_in_chunks_equals_one_pass():
    cfg = validate(Config(tasks=("addition",), p=13, layers=1, d_model=16, heads=2, d_mlp=32))
    params, _ = init_params(cfg)
    (d,) = make_dataset(cfg.tasks, cfg.p, 0.5, cfg.seed)
    whole = evaluate(params, d.val_x, d.val_y, cfg, chunk=10_000)
    chunked = evaluate(params, d.val_x, d.val_y, cfg, chunk=7)
    assert chunked[1] == whole[1]
    assert chunked[0] == pytest.approx(whole[0], rel=1e-6)  # float32 products of other shapes
