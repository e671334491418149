"""Hand-written backward passes against centered finite differences, in float64 (CS231n, llm.c).

Every layer is checked with the scalar `loss = sum(out * dout)` for a random `dout`, so that the
backward of `out` is exactly `dout`; Hypothesis draws the shapes. The whole model is checked on
sampled coordinates of every parameter tensor. Every engine of `tinygrok.config.ENGINES` runs the
same checks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrok import layers as L
from tinygrok.config import ENGINES, Config, validate
from tinygrok.model import Params, backward, forward, init_params, loss_and_grads
from tinygrok.tasks import Batches, make_dataset

H = 1e-6  # finite-difference step
ATOL, RTOL = 1e-6, 1e-5  # |analytic - numeric| <= ATOL + RTOL * |numeric|
LAYER_COORDS, MODEL_COORDS = 16, 5  # coordinates checked per tensor
SETTINGS = settings(max_examples=8, deadline=None)

pytestmark = pytest.mark.usefixtures("single_thread")
engines = pytest.mark.parametrize("engine", ENGINES)
seeds = st.integers(0, 2**32 - 1)


def numeric_grad(f: Callable[[], float], x: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Centered differences of the scalar f() with respect to the flat elements `coords` of x,
    which is perturbed in place and restored."""
    flat = x.reshape(-1)  # a view: x must be contiguous
    assert np.shares_memory(flat, x)
    grad = np.empty(len(coords))
    for j, i in enumerate(coords):
        old = flat[i]
        flat[i] = old + H
        up = f()
        flat[i] = old - H
        down = f()
        flat[i] = old
        grad[j] = (up - down) / (2 * H)
    return grad


def sample(x: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """Every flat index of a tensor of at most n elements, n random ones of a larger one."""
    return np.arange(x.size) if x.size <= n else rng.choice(x.size, n, replace=False)


def assert_close(analytic: np.ndarray, numeric: np.ndarray, name: str) -> None:
    assert analytic.shape == numeric.shape, name
    err = np.abs(analytic - numeric) - (ATOL + RTOL * np.abs(numeric))
    worst = int(np.argmax(err)) if err.size else None
    assert err.size == 0 or err.max() <= 0, (
        f"{name}: analytic {analytic[worst]:.8g} vs numeric {numeric[worst]:.8g}"
    )


def check_layer(
    out_of: Callable[[], np.ndarray],
    dout: np.ndarray,
    grads: dict[str, np.ndarray],
    inputs: dict[str, np.ndarray],
) -> None:
    """Compare the analytic `grads` of sum(out * dout) with finite differences over `inputs`.

    `grads` must have been computed (and copied) before this call: the finite differences
    perturb the inputs in place, and caches may hold views of them.
    """
    rng = np.random.default_rng(2)
    for name, x in inputs.items():
        assert grads[name].shape == x.shape, name
        coords = sample(x, rng, LAYER_COORDS)
        numeric = numeric_grad(lambda: float((out_of() * dout).sum()), x, coords)
        assert_close(grads[name].reshape(-1)[coords], numeric, name)


def randn(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return scale * rng.standard_normal(shape)


# ----------------------------------------------------------------------------------------------
# layers


@engines
@SETTINGS
@given(
    B=st.integers(1, 3), T=st.integers(1, 4), C=st.integers(1, 6), V=st.integers(1, 9), seed=seeds
)
def test_embedding(engine, B, T, C, V, seed):
    """Token and position embedding; tokens repeat, so rows of dwte sum several uses."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, (B, T))
    wte, wpe, dout = randn(rng, V, C), randn(rng, T, C), randn(rng, B, T, C)
    dwte, dwpe = L.embedding_backward(dout, tokens, V, engine)
    out = lambda: L.embedding_forward(tokens, wte, wpe)  # noqa: E731
    check_layer(out, dout, {"wte": dwte.copy(), "wpe": dwpe.copy()}, {"wte": wte, "wpe": wpe})


@engines
@SETTINGS
@given(B=st.integers(1, 3), T=st.integers(1, 4), C=st.integers(2, 12), seed=seeds)
def test_layernorm(engine, B, T, C, seed):
    rng = np.random.default_rng(seed)
    x, w, b = randn(rng, B, T, C, scale=2.0), randn(rng, C), randn(rng, C)
    dout = randn(rng, B, T, C)
    _, cache = L.layernorm(x, w, b, engine)
    dx, dw, db = (g.copy() for g in L.layernorm_back(dout, cache, engine))
    out = lambda: L.layernorm(x, w, b, engine)[0]  # noqa: E731
    check_layer(out, dout, {"x": dx, "w": dw, "b": db}, {"x": x, "w": w, "b": b})


@SETTINGS
@given(N=st.integers(1, 6), Cin=st.integers(1, 8), Cout=st.integers(1, 8), seed=seeds)
def test_linear(N, Cin, Cout, seed):
    """The linear map, which is also the unembedding (head.w, head.b)."""
    rng = np.random.default_rng(seed)
    x, w, b, dout = randn(rng, N, Cin), randn(rng, Cin, Cout), randn(rng, Cout), randn(rng, N, Cout)
    dx, dw, db = L.linear_backward(dout, x, w)
    out = lambda: L.linear_forward(x, w, b)  # noqa: E731
    check_layer(out, dout, {"x": dx, "w": dw, "b": db}, {"x": x, "w": w, "b": b})


@engines
@pytest.mark.parametrize("q_last", [False, True])
@SETTINGS
@given(
    B=st.integers(1, 3), T=st.integers(1, 4), NH=st.integers(1, 3), HS=st.integers(1, 4), seed=seeds
)
def test_attention(engine, q_last, B, T, NH, HS, seed):
    """Projections and causal attention; with q_last only the last position is queried."""
    rng = np.random.default_rng(seed)
    C = NH * HS
    x = randn(rng, B, T, C)
    w_qkv, b_qkv = randn(rng, C, 3 * C, scale=0.7), randn(rng, 3 * C, scale=0.5)
    w_o, b_o = randn(rng, C, C), randn(rng, C)
    weights = {"x": x, "w_qkv": w_qkv, "b_qkv": b_qkv, "w_o": w_o, "b_o": b_o}

    def out() -> np.ndarray:
        return L.attention(x, w_qkv, b_qkv, w_o, b_o, NH, q_last, engine)[0]

    y, cache = L.attention(x, w_qkv, b_qkv, w_o, b_o, NH, q_last, engine)
    assert y.shape == (B, 1 if q_last else T, C)
    dout = randn(rng, *y.shape)
    grads = L.attention_back(dout, cache, engine)
    check_layer(out, dout, {k: g.copy() for k, g in zip(weights, grads, strict=True)}, weights)


@engines
@SETTINGS
@given(
    U=st.integers(1, 3),
    S=st.integers(1, 3),
    B=st.integers(1, 4),
    Tm=st.integers(1, 3),
    NH=st.integers(1, 2),
    HS=st.integers(1, 3),
    seed=seeds,
)
def test_attention_shared(engine, U, S, B, Tm, NH, HS, seed):
    """Attention with each prefix computed once: the output of attention on the whole sequences,
    and its gradients (a prefix's keys and values feed every sequence that shares it)."""
    rng = np.random.default_rng(seed)
    C = NH * HS
    inv = rng.integers(0, U, B)
    x = randn(rng, U * S + B * Tm, C)
    w_qkv, b_qkv = randn(rng, C, 3 * C, scale=0.7), randn(rng, 3 * C, scale=0.5)
    w_o, b_o = randn(rng, C, C), randn(rng, C)
    weights = {"x": x, "w_qkv": w_qkv, "b_qkv": b_qkv, "w_o": w_o, "b_o": b_o}

    def out() -> np.ndarray:
        return L.attention_shared(x, w_qkv, b_qkv, w_o, b_o, NH, (U, S), inv, engine)[0]

    y, cache = L.attention_shared(x, w_qkv, b_qkv, w_o, b_o, NH, (U, S), inv, engine)
    whole = np.concatenate([x[: U * S].reshape(U, S, C)[inv], x[U * S :].reshape(B, Tm, C)], 1)
    y_whole, _ = L.attention(whole, w_qkv, b_qkv, w_o, b_o, NH, False, engine)
    np.testing.assert_allclose(y[: U * S].reshape(U, S, C)[inv], y_whole[:, :S], atol=1e-12)
    np.testing.assert_allclose(y[U * S :].reshape(B, Tm, C), y_whole[:, S:], atol=1e-12)
    dout = randn(rng, *y.shape)
    grads = L.attention_shared_back(dout, cache, engine)
    check_layer(out, dout, {k: g.copy() for k, g in zip(weights, grads, strict=True)}, weights)


@engines
@pytest.mark.parametrize("act", ["gelu", "relu"])
@SETTINGS
@given(N=st.integers(1, 6), C=st.integers(1, 6), F=st.integers(1, 10), seed=seeds)
def test_mlp(engine, act, N, C, F, seed):
    """Both linear maps of the MLP and the activation between them."""
    rng = np.random.default_rng(seed)
    x, w_fc, b_fc = randn(rng, N, C), randn(rng, C, F), randn(rng, F)
    w_proj, b_proj, dout = randn(rng, F, C), randn(rng, C), randn(rng, N, C)
    weights = {"x": x, "w_fc": w_fc, "b_fc": b_fc, "w_proj": w_proj, "b_proj": b_proj}

    def out() -> np.ndarray:
        return L.mlp(x, w_fc, b_fc, w_proj, b_proj, act, engine)[0]

    _, cache = L.mlp(x, w_fc, b_fc, w_proj, b_proj, act, engine)
    grads = L.mlp_back(dout, cache, engine)
    check_layer(out, dout, {k: g.copy() for k, g in zip(weights, grads, strict=True)}, weights)


@engines
@SETTINGS
@given(
    N=st.integers(1, 6), P=st.integers(2, 12), scale=st.sampled_from([0.1, 1.0, 5.0]), seed=seeds
)
def test_softmax_cross_entropy(engine, N, P, scale, seed):
    """Here the scalar is the layer's own output, the mean cross-entropy."""
    rng = np.random.default_rng(seed)
    logits, targets = randn(rng, N, P, scale=scale), rng.integers(0, P, N)
    loss, cache = L.cross_entropy(logits, targets, engine)
    dlogits = L.cross_entropy_back(cache, engine).copy()
    assert dlogits.dtype == np.float64
    coords = np.arange(logits.size)
    numeric = numeric_grad(lambda: L.cross_entropy(logits, targets, engine)[0], logits, coords)
    assert_close(dlogits.reshape(-1), numeric, "logits")
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    assert loss == pytest.approx(-logp[np.arange(N), targets].mean(), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# the whole model


def small_config(**changes) -> Config:
    """Two tasks mod 7, two layers of width 8: every code path of the model, in float64."""
    fields = dict(
        tasks=("addition", "division"),
        p=7,
        layers=2,
        d_model=8,
        heads=2,
        d_mlp=12,
        dtype="float64",
        batch_size=24,
    )
    return validate(Config(**(fields | changes)))


def perturbed_params(cfg: Config, seed: int = 0) -> Params:
    """The initialization plus noise, so that no parameter is at a special value (LayerNorm gains
    of exactly 1, attention biases of exactly 0)."""
    params, _ = init_params(cfg)
    params.flat += 0.3 * np.random.default_rng(seed).standard_normal(params.flat.size)
    return params


def batch(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
    return Batches(data, cfg.batch_size, cfg.seed)(1)


@engines
@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"layer_norm": False},
        {"activation": "relu"},
        {"layer_norm": False, "activation": "relu", "tasks": ("subtraction",), "heads": 4},
        {"norm": "post"},
        {"norm": "post", "final_norm": False, "activation": "relu", "head": "vocab"},
        {"final_norm": False, "head": "vocab", "tasks": ("division",)},
    ],
    ids=["ln-gelu", "noln-gelu", "ln-relu", "noln-relu-1task", "post", "report", "pre-vocab"],
)
def test_whole_model_gradients(engine, changes):
    cfg = small_config(**changes)
    params, (tokens, targets) = perturbed_params(cfg), batch(cfg)
    grads = Params.zeros(params.shapes, np.float64)
    loss_and_grads(params, tokens, targets, cfg, grads, engine)

    def loss() -> float:
        logits, _ = forward(params, tokens, cfg, engine)
        return L.cross_entropy(logits, targets, engine)[0]

    rng = np.random.default_rng(2)
    for name in params.shapes:
        coords = sample(params[name], rng, MODEL_COORDS)
        numeric = numeric_grad(loss, params[name], coords)
        assert_close(grads[name].reshape(-1)[coords], numeric, name)


@engines
@pytest.mark.parametrize(
    "changes", [{}, {"layer_norm": False}, {"norm": "post", "final_norm": False, "head": "vocab"}]
)
def test_every_parameter_receives_a_gradient(engine, changes):
    """At the real initialization (LayerNorm 1/0, zero attention biases), on one batch."""
    cfg = small_config(**changes)
    params, _ = init_params(cfg)
    tokens, targets = batch(cfg)
    grads = Params.zeros(params.shapes, np.float64)
    loss_and_grads(params, tokens, targets, cfg, grads, engine)
    dead = [n for n in params.shapes if not np.abs(grads[n]).max() > 1e-8]
    assert not dead, f"no gradient reaches {dead}"


@engines
def test_backward_leaves_no_stale_gradient(engine):
    """`backward` overwrites every gradient: a second call into dirty buffers gives the same."""
    cfg = small_config()
    params, (tokens, targets) = perturbed_params(cfg), batch(cfg)
    clean = Params.zeros(params.shapes, np.float64)
    loss_and_grads(params, tokens, targets, cfg, clean, engine)
    dirty = Params(params.shapes, np.full(params.flat.size, 7.0))
    logits, caches = forward(params, tokens, cfg, engine)
    _, c_ce = L.cross_entropy(logits, targets, engine)
    backward(L.cross_entropy_back(c_ce, engine), caches, params, cfg, dirty, engine)
    np.testing.assert_array_equal(dirty.flat, clean.flat)


@engines
@pytest.mark.parametrize("layer_norm", [True, False])
def test_float32_and_float64_forward_agree(engine, layer_norm):
    cfg64 = validate(
        Config(
            tasks=("division",),
            p=23,
            layers=2,
            d_model=32,
            heads=4,
            d_mlp=64,
            layer_norm=layer_norm,
            dtype="float64",
        )
    )
    params64, _ = init_params(cfg64)
    params32 = params64.astype(np.float32)
    (d,) = make_dataset(cfg64.tasks, cfg64.p, cfg64.train_frac, cfg64.seed)
    logits64, _ = forward(params64, d.train_x, cfg64, engine)
    logits32, _ = forward(params32, d.train_x, cfg64.replace(dtype="float32"), engine)
    assert logits32.dtype == np.float32 and logits64.dtype == np.float64
    scale = np.abs(logits64).max()
    np.testing.assert_allclose(logits32, logits64, rtol=1e-4, atol=1e-5 * scale)


@engines
@pytest.mark.parametrize(
    "changes",
    [{}, {"norm": "post", "final_norm": False, "activation": "relu", "head": "vocab"}],
    ids=["default", "report"],
)
def test_float32_gradients_match_float64(engine, changes):
    """Real runs are float32: from the same parameters and batch, every float32 gradient tensor
    is within 1e-5 of the float64 one (relative, in norm). Measured: 4-5e-7, float32's rounding
    through two blocks; a gradient off by 0.01% anywhere fails."""
    cfg = validate(
        Config(
            tasks=("division", "addition"),
            p=23,
            d_model=32,
            heads=4,
            d_mlp=64,
            batch_size=128,
            dtype="float64",
            **changes,
        )
    )
    params, _ = init_params(cfg)
    params.flat += 0.02 * np.random.default_rng(0).standard_normal(params.flat.size)
    tokens, targets = batch(cfg)
    g64 = Params.zeros(params.shapes, np.float64)
    loss_and_grads(params, tokens, targets, cfg, g64, engine)
    g32 = Params.zeros(params.shapes, np.float32)
    loss_and_grads(
        params.astype(np.float32), tokens, targets, cfg.replace(dtype="float32"), g32, engine
    )
    assert g32.flat.dtype == np.float32
    for name in params.shapes:
        err = np.linalg.norm(g32[name] - g64[name]) / np.linalg.norm(g64[name])
        assert err < 1e-5, f"{name}: float32 gradient off by {err:.2e} (relative)"
