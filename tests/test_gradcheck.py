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

from tinygrok import fast, model
from tinygrok import layers as L
from tinygrok.config import ENGINES, Config, validate
from tinygrok.params import Params, init_params
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
    p = {"wte": randn(rng, V, C), "wpe": randn(rng, T, C)}
    dout = randn(rng, B, T, C)
    _, cache = L.embedding_forward(tokens, p, engine)
    dx, grads = L.embedding_backward(dout, cache)
    assert dx is None
    out = lambda: L.embedding_forward(tokens, p, engine)[0]  # noqa: E731
    check_layer(out, dout, {k: g.copy() for k, g in grads.items()}, p)


@engines
@SETTINGS
@given(M=st.integers(1, 12), n=st.integers(1, 5), C=st.integers(1, 6), seed=seeds)
def test_gather_rows(engine, M, n, C, seed):
    """y = table[index], the fast model's gathers, and `scatter_rows`, their backward: rows that
    several outputs read sum those outputs' gradients."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, M)
    table, dout = randn(rng, n, C), randn(rng, M, C)
    dtable = L.scatter_rows(dout, index, n, engine)
    check_layer(lambda: table[index], dout, {"table": dtable.copy()}, {"table": table})


@engines
@SETTINGS
@given(B=st.integers(1, 3), T=st.integers(1, 4), C=st.integers(2, 12), seed=seeds)
def test_layernorm(engine, B, T, C, seed):
    rng = np.random.default_rng(seed)
    x, p = randn(rng, B, T, C, scale=2.0), {"w": randn(rng, C), "b": randn(rng, C)}
    dout = randn(rng, B, T, C)
    _, cache = L.layernorm_forward(x, p, engine)
    dx, grads = L.layernorm_backward(dout, cache)
    out = lambda: L.layernorm_forward(x, p, engine)[0]  # noqa: E731
    check_layer(out, dout, {"x": dx.copy()} | {k: g.copy() for k, g in grads.items()}, {"x": x} | p)


@SETTINGS
@given(N=st.integers(1, 6), Cin=st.integers(1, 8), Cout=st.integers(1, 8), seed=seeds)
def test_linear(N, Cin, Cout, seed):
    """The linear map, which is also the unembedding (head.w, head.b)."""
    rng = np.random.default_rng(seed)
    x, p = randn(rng, N, Cin), {"w": randn(rng, Cin, Cout), "b": randn(rng, Cout)}
    dout = randn(rng, N, Cout)
    _, cache = L.linear_forward(x, p)
    dx, grads = L.linear_backward(dout, cache)
    out = lambda: L.linear_forward(x, p)[0]  # noqa: E731
    check_layer(out, dout, {"x": dx} | grads, {"x": x} | p)


@engines
@SETTINGS
@given(
    B=st.integers(1, 3), T=st.integers(1, 4), NH=st.integers(1, 3), HS=st.integers(1, 4), seed=seeds
)
def test_attention(engine, B, T, NH, HS, seed):
    """Projections and causal attention."""
    rng = np.random.default_rng(seed)
    C = NH * HS
    x = randn(rng, B, T, C)
    p = {"w_qkv": randn(rng, C, 3 * C, scale=0.7), "b_qkv": randn(rng, 3 * C, scale=0.5)}
    p |= {"w_o": randn(rng, C, C), "b_o": randn(rng, C)}
    y, cache = L.attention_forward(x, p, NH, engine)
    assert y.shape == (B, T, C)
    dout = randn(rng, *y.shape)
    dx, grads = L.attention_backward(dout, cache)
    out = lambda: L.attention_forward(x, p, NH, engine)[0]  # noqa: E731
    check_layer(out, dout, {"x": dx.copy()} | {k: g.copy() for k, g in grads.items()}, {"x": x} | p)


@engines
@pytest.mark.parametrize("act", ["gelu", "relu"])
@SETTINGS
@given(N=st.integers(1, 6), C=st.integers(1, 6), F=st.integers(1, 10), seed=seeds)
def test_mlp(engine, act, N, C, F, seed):
    """Both linear maps of the MLP and the activation between them."""
    rng = np.random.default_rng(seed)
    x, dout = randn(rng, N, C), randn(rng, N, C)
    p = {"w_fc": randn(rng, C, F), "b_fc": randn(rng, F)}
    p |= {"w_proj": randn(rng, F, C), "b_proj": randn(rng, C)}
    _, cache = L.mlp_forward(x, p, act, engine)
    dx, grads = L.mlp_backward(dout, cache)
    out = lambda: L.mlp_forward(x, p, act, engine)[0]  # noqa: E731
    check_layer(out, dout, {"x": dx.copy()} | {k: g.copy() for k, g in grads.items()}, {"x": x} | p)


@engines
@SETTINGS
@given(
    N=st.integers(1, 6), P=st.integers(2, 12), scale=st.sampled_from([0.1, 1.0, 5.0]), seed=seeds
)
def test_softmax_cross_entropy(engine, N, P, scale, seed):
    """Here the scalar is the layer's own output, the mean cross-entropy."""
    rng = np.random.default_rng(seed)
    logits, targets = randn(rng, N, P, scale=scale), rng.integers(0, P, N)
    loss, cache = L.cross_entropy_forward(logits, targets, engine)
    dlogits, grads = L.cross_entropy_backward(1.0, cache)
    assert dlogits.dtype == np.float64 and grads == {}
    dlogits = dlogits.copy()
    coords = np.arange(logits.size)
    ce = lambda: L.cross_entropy_forward(logits, targets, engine)[0]  # noqa: E731
    assert_close(dlogits.reshape(-1), numeric_grad(ce, logits, coords), "logits")
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    assert loss == pytest.approx(-logp[np.arange(N), targets].mean(), rel=1e-12)
    np.testing.assert_allclose(L.cross_entropy_backward(0.5, cache)[0], 0.5 * dlogits)


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


def loss_of(m, params: Params, tokens: np.ndarray, targets: np.ndarray, cfg: Config) -> float:
    """The mean cross-entropy of a batch through model `m` (the textbook or the fast one)."""
    return L.cross_entropy_forward(m.forward(params, tokens, cfg)[0], targets, cfg.engine)[0]


def grads_of(m, params: Params, tokens: np.ndarray, targets: np.ndarray, cfg: Config) -> dict:
    """Every gradient of that loss, from model `m`'s backward."""
    logits, cache = m.forward(params, tokens, cfg)
    _, c_ce = L.cross_entropy_forward(logits, targets, cfg.engine)
    return m.backward(L.cross_entropy_backward(1.0, c_ce)[0], cache)


models = pytest.mark.parametrize("m", [model, fast], ids=["textbook", "fast"])


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
@models
def test_whole_model_gradients(engine, changes, m):
    cfg = small_config(engine=engine, **changes)
    params, (tokens, targets) = perturbed_params(cfg), batch(cfg)
    grads = grads_of(m, params, tokens, targets, cfg)
    loss = lambda: loss_of(m, params, tokens, targets, cfg)  # noqa: E731

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
    cfg = small_config(engine=engine, **changes)
    params, _ = init_params(cfg)
    tokens, targets = batch(cfg)
    grads = Params.zeros(params.shapes, np.float64)
    fast.loss_and_grads(params, tokens, targets, cfg, grads)
    dead = [n for n in params.shapes if not np.abs(grads[n]).max() > 1e-8]
    assert not dead, f"no gradient reaches {dead}"


@engines
def test_backward_leaves_no_stale_gradient(engine):
    """`loss_and_grads` overwrites every gradient: into dirty buffers it gives the same."""
    cfg = small_config(engine=engine)
    params, (tokens, targets) = perturbed_params(cfg), batch(cfg)
    clean = Params.zeros(params.shapes, np.float64)
    fast.loss_and_grads(params, tokens, targets, cfg, clean)
    dirty = Params(params.shapes, np.full(params.flat.size, 7.0))
    fast.loss_and_grads(params, tokens, targets, cfg, dirty)
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
            engine=engine,
        )
    )
    params64, _ = init_params(cfg64)
    params32 = params64.astype(np.float32)
    (d,) = make_dataset(cfg64.tasks, cfg64.p, cfg64.train_frac, cfg64.seed)
    logits64 = fast.logits(params64, d.train_x, cfg64)
    logits32 = fast.logits(params32, d.train_x, cfg64.replace(dtype="float32"))
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
            engine=engine,
            **changes,
        )
    )
    params, _ = init_params(cfg)
    params.flat += 0.02 * np.random.default_rng(0).standard_normal(params.flat.size)
    tokens, targets = batch(cfg)
    g64 = Params.zeros(params.shapes, np.float64)
    fast.loss_and_grads(params, tokens, targets, cfg, g64)
    g32 = Params.zeros(params.shapes, np.float32)
    fast.loss_and_grads(
        params.astype(np.float32), tokens, targets, cfg.replace(dtype="float32"), g32
    )
    assert g32.flat.dtype == np.float32
    for name in params.shapes:
        err = np.linalg.norm(g32[name] - g64[name]) / np.linalg.norm(g64[name])
        assert err < 1e-5, f"{name}: float32 gradient off by {err:.2e} (relative)"
