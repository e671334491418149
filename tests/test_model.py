"""The model: its size, its initialization (the default `--init pytorch`, and `--init nanda`),
--sparse and --init-scale, and the fast model, equal to the textbook model for every option."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from tinygrok import fast, gradcheck, model
from tinygrok import layers as L
from tinygrok.config import Config, from_preset, validate
from tinygrok.grokfast import make_grad_filter
from tinygrok.optim import make_optimizer
from tinygrok.params import Params, init_params, is_matrix, n_params, param_shapes
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


# every model option the config has: blocks pre- or post-norm with or without a final norm, or no
# layer norm at all; the head over the answers or the vocabulary; GELU or ReLU
NORMS = {
    "pre": {},
    "pre-nofinal": {"final_norm": False},
    "post": {"norm": "post"},
    "post-nofinal": {"norm": "post", "final_norm": False},
    "no-ln": {"layer_norm": False},
}


def both_models(cfg: Config, params: Params, x: np.ndarray, y: np.ndarray) -> dict:
    """{model module: (logits, grads)} for the textbook and the fast model on one batch."""
    out = {}
    for m in (model, fast):
        logits, cache = m.forward(params, x, cfg)
        _, c_ce = L.cross_entropy_forward(logits, y, cfg.engine)
        out[m] = logits, m.backward(L.cross_entropy_backward(1.0, c_ce)[0], cache)
    return out


@pytest.mark.parametrize("engine", ["numpy", "numba"])
@pytest.mark.parametrize("act", ["gelu", "relu"])
@pytest.mark.parametrize("head", ["answers", "vocab"])
@pytest.mark.parametrize("norms", NORMS)
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_fast_model_equals_the_textbook_model(layers, norms, head, act, engine):
    """The fast model (last position only in the last block, distinct (token, position) rows in
    the first, shared prefixes before the last) gives the logits and every gradient of the
    textbook model, in float64, on two tasks at once; the message names the worst tensor."""
    cfg = validate(
        Config(
            tasks=("subtraction", "division"), p=11, layers=layers, d_model=16, heads=4, d_mlp=32
        )
    )
    cfg = cfg.replace(dtype="float64", head=head, activation=act, engine=engine, **NORMS[norms])
    params, _ = init_params(cfg)
    params.flat += 0.1 * np.random.default_rng(1).standard_normal(params.flat.size)
    d = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)[1]
    x, y = d.train_x[:64], d.train_y[:64]
    lay = fast.layout(x, params["wte"].shape[0], cfg.layers)
    assert len(lay.etok) < x.size and len(lay.later.prefix) < len(x)  # rows are shared
    out = both_models(cfg, params, x, y)
    (z_ref, g_ref), (z, g) = out[model], out[fast]
    np.testing.assert_allclose(z, z_ref, rtol=1e-12, atol=1e-12)
    assert set(g) == set(g_ref) == set(params.shapes)
    diff = {n: np.abs(g[n] - g_ref[n]).max() / np.abs(g_ref[n]).max(initial=1e-12) for n in g}
    worst = max(diff, key=diff.get)
    assert diff[worst] < 1e-10, f"{worst}: max relative difference {diff[worst]:.1e}"


def test_evaluation_keeps_no_caches_and_gives_the_forward_logits():
    cfg = validate(Config(tasks=("addition",), p=13, d_model=16, heads=2, d_mlp=32))
    params, _ = init_params(cfg)
    (d,) = make_dataset(cfg.tasks, cfg.p, 0.5, cfg.seed)
    logits, cache = fast.forward(params, d.val_x, cfg, keep=False)
    assert cache is None
    np.testing.assert_array_equal(logits, fast.forward(params, d.val_x, cfg)[0])
    np.testing.assert_array_equal(logits, fast.logits(params, d.val_x, cfg))


def test_engine_and_dtype_come_from_the_config():
    """No model, optimizer or gradient-check function takes an engine or a dtype of its own, and
    parameters in another dtype than the config's are refused."""
    for f in (
        model.forward,
        model.backward,
        fast.forward,
        fast.backward,
        fast.logits,
        fast.loss_and_grads,
        fast.evaluate,
        make_optimizer,
        make_grad_filter,
        gradcheck.batch_loss,
        gradcheck.analytic_grads,
        gradcheck.check_gradients,
    ):
        assert not {"engine", "dtype"} & set(inspect.signature(f).parameters), f.__qualname__
    cfg = validate(Config(tasks=("addition",), p=7, d_model=8, heads=2, d_mlp=16))
    params, _ = init_params(cfg)
    with pytest.raises(ValueError, match="float64"):
        fast.logits(params.astype(np.float64), np.zeros((1, 4), dtype=int), cfg)


def test_distinct_prefixes():
    tokens = np.array([[3, 9, 1, 10], [4, 9, 1, 10], [3, 9, 2, 10], [3, 8, 2, 10]])
    first, inv = fast.distinct_prefixes(tokens, 11)
    np.testing.assert_array_equal(tokens[first][inv, :2], tokens[:, :2])
    assert len(first) == 3 and inv[0] == inv[2] != inv[1]


def test_layout_gathers_every_position_of_every_example():
    """The first block's rows are the distinct (token, position) pairs, and each example's keys
    read its own: tokens and positions come back through the gathers."""
    tokens = np.array([[3, 9, 1, 10], [4, 9, 1, 10], [3, 9, 2, 10], [3, 8, 2, 10]])
    lay = fast.layout(tokens, 11, layers=2)
    assert len(lay.etok) == 2 + 2 + 2 + 1  # a in {3, 4}, op in {8, 9}, b in {1, 2}, "="
    np.testing.assert_array_equal(lay.etok[lay.first.keys], tokens)
    np.testing.assert_array_equal(lay.epos[lay.first.keys], np.broadcast_to(np.arange(4), (4, 4)))
    first, _ = fast.distinct_prefixes(tokens, 11)  # (3,): [3, 8], [3, 9], [4, 9]
    np.testing.assert_array_equal(lay.etok[lay.first.query][:6], tokens[first, :2].ravel())
    np.testing.assert_array_equal(lay.etok[lay.first.query][6:], tokens[:, 2:].ravel())


def test_evaluation_in_chunks_equals_one_pass():
    cfg = validate(Config(tasks=("addition",), p=13, layers=1, d_model=16, heads=2, d_mlp=32))
    params, _ = init_params(cfg)
    (d,) = make_dataset(cfg.tasks, cfg.p, 0.5, cfg.seed)
    whole = fast.evaluate(params, d.val_x, d.val_y, cfg, chunk=10_000)
    chunked = fast.evaluate(params, d.val_x, d.val_y, cfg, chunk=7)
    assert chunked[1] == whole[1]
    assert chunked[0] == pytest.approx(whole[0], rel=1e-6)  # float32 products of other shapes


def test_an_unknown_engine_is_refused_not_run_as_numpy():
    """Every kernel runs NumPy for an engine name other than "numba": a misspelt engine in a
    Config built without `validate` must fail at the model, not train on the wrong engine."""
    cfg = Config(engine="nmuba")
    params, _ = init_params(cfg)
    tokens = np.zeros((2, 4), dtype=np.int64)
    for forward in (model.forward, fast.forward):
        with pytest.raises(ValueError, match="nmuba"):
            forward(params, tokens, cfg)
