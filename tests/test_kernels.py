"""Every numba kernel against its NumPy reference, on shapes Hypothesis draws, in float32 and
float64. The references are the spec; the kernels may differ only by rounding.

float64 must agree to about 1e-12. float32 allows what reordered sums, FMAs and (for GELU) the
rational tanh change: relative 1e-4, and absolute 1e-4 of the output's largest magnitude for
values that cancel to near zero.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrok import layers as L
from tinygrok.kernels.activation import bias_act_backward, bias_act_forward
from tinygrok.kernels.attention import attention_backward, attention_forward
from tinygrok.kernels.crossentropy import cross_entropy_backward, cross_entropy_forward
from tinygrok.kernels.embedding import embedding_backward, scatter_add_rows
from tinygrok.kernels.layernorm import (
    add_layernorm_forward,
    layernorm_backward,
    layernorm_forward,
)
from tinygrok.kernels.optimizer import adamw_update, sgd_update

DTYPES = [np.float32, np.float64]
SETTINGS = settings(deadline=None, max_examples=15)
dims = st.integers(1, 70)
seeds = st.integers(0, 2**32 - 1)


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Same dtype and shape, equal up to the rounding of the dtype (see the module docstring)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    rtol = 1e-4 if expected.dtype == np.float32 else 1e-11
    scale = float(np.abs(expected).max(initial=1.0))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def normal(rng: np.random.Generator, shape: tuple[int, ...], dtype, scale: float = 1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["gelu", "relu"])
@SETTINGS
@given(n=dims, f=st.integers(1, 150), seed=seeds)
def test_bias_act(dtype, act, n, f, seed):
    rng = np.random.default_rng(seed)
    h, b, dout = normal(rng, (n, f), dtype, 3), normal(rng, (f,), dtype), normal(rng, (n, f), dtype)
    got = bias_act_forward(h.copy(), b, act, "numba")
    want = bias_act_forward(h.copy(), b, act, "numpy")
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)
    pre = h + b
    assert_close(got[0], np.maximum(pre, 0) if act == "relu" else want[0])
    saved = want[1]
    assert_close(
        bias_act_backward(dout.copy(), saved, act, "numba"),
        bias_act_backward(dout.copy(), saved, act, "numpy"),
    )
    if act == "relu":  # relu'(pre) read off the output: [out > 0] = [pre > 0]
        assert_close(bias_act_backward(dout.copy(), saved, act, "numpy"), dout * (pre > 0))


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(
    b=st.integers(1, 8),
    t=st.integers(1, 6),
    heads=st.integers(1, 4),
    hs=st.integers(1, 9),
    queried=st.integers(1, 6),
    shared=st.booleans(),
    seed=seeds,
)
def test_attention(dtype, b, t, heads, hs, queried, shared, seed):
    """Queries for the last tq of t positions: tq = t in a block, 1 in the last block (only the
    last position reaches the loss), t - PREFIX in the first block's own positions. Keys and
    values come through an index: each example's own rows, or (shared) rows that several
    examples read, in any order, as the fast model's prefixes and distinct tokens are."""
    rng = np.random.default_rng(seed)
    c = heads * hs
    tq = min(queried, t)
    n_src = rng.integers(1, b * t + 1) if shared else b * t
    index = rng.integers(0, n_src, (b, t)) if shared else np.arange(b * t).reshape(b, t)
    q, kv = normal(rng, (b, tq, c), dtype, 2), normal(rng, (n_src, 2 * c), dtype, 2)
    y_ref, a_ref = attention_forward(q, kv, index, heads, "numpy")
    y, a = attention_forward(q, kv, index, heads, "numba")
    assert_close(y, y_ref)
    assert_close(a, a_ref)
    dy = normal(rng, (b, tq, c), dtype)
    for got, want in zip(
        attention_backward(dy, q, kv, index, a_ref, heads, "numba"),
        attention_backward(dy, q, kv, index, a_ref, heads, "numpy"),
        strict=True,
    ):
        assert_close(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(n=st.integers(1, 200), c=st.integers(2, 150), seed=seeds)
def test_layernorm(dtype, n, c, seed):
    rng = np.random.default_rng(seed)
    x = normal(rng, (n, c), dtype, 2) + dtype(rng.standard_normal())
    w, b, dy = normal(rng, (c,), dtype), normal(rng, (c,), dtype), normal(rng, (n, c), dtype)
    fwd = layernorm_forward(x, w, b, "numba")
    ref = layernorm_forward(x, w, b, "numpy")
    for got, want in zip(fwd, ref, strict=True):
        assert_close(got, want)
    # the residual sum fused in: x + res written over x, then the same norm, bit for bit
    res = normal(rng, (n, c), dtype)
    s_nb, s_np = x.copy(), x.copy()
    fused = add_layernorm_forward(res, s_nb, w, b, "numba")
    assert np.array_equal(s_nb, x + res)
    for got, want in zip(fused, layernorm_forward(x + res, w, b, "numba"), strict=True):
        assert np.array_equal(got, want)
    for got, want in zip(fused, add_layernorm_forward(res, s_np, w, b, "numpy"), strict=True):
        assert_close(got, want)
    assert np.array_equal(s_np, x + res)
    _, mean, rstd = ref
    for got, want in zip(
        layernorm_backward(dy, x, w, mean, rstd, "numba"),
        layernorm_backward(dy, x, w, mean, rstd, "numpy"),
        strict=True,
    ):
        assert_close(got, want)


def test_layernorm_reads_a_read_only_input_and_refuses_a_residual_of_another_shape():
    """The plain norm never writes its input (the fused sum's branch is compiled away), and the
    fused sum, whose kernel reads the residual's rows unchecked, does not broadcast."""
    x = np.linspace(-1, 1, 24, dtype=np.float32).reshape(3, 8)
    w, b = np.ones(8, np.float32), np.zeros(8, np.float32)
    x.setflags(write=False)
    y, _, _ = layernorm_forward(x, w, b, "numba")
    assert np.array_equal(y, layernorm_forward(x, w, b, "numba")[0])
    for engine in ("numba", "numpy"):
        with pytest.raises(ValueError, match="residual of shape"):
            add_layernorm_forward(x[:1], x.copy(), w, b, engine)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("work", DTYPES)
@SETTINGS
@given(n=dims, p=st.integers(2, 120), seed=seeds)
def test_cross_entropy(dtype, work, n, p, seed):
    rng = np.random.default_rng(seed)
    logits, targets = normal(rng, (n, p), dtype, 5), rng.integers(0, p, n)
    (loss, probs), (loss_ref, probs_ref) = (
        cross_entropy_forward(logits, targets, "numba", work),
        cross_entropy_forward(logits, targets, "numpy", work),
    )
    # computed in `work` whatever the logits' dtype; the loss handed back in float64
    assert (loss.dtype, probs.dtype) == (np.float64, work)
    tol = 1e-12 if work == np.float64 else 1e-5
    np.testing.assert_allclose(loss, loss_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(probs, probs_ref, rtol=tol, atol=tol / 1000)
    assert_close(
        cross_entropy_backward(probs_ref, targets, dtype, "numba"),
        cross_entropy_backward(probs_ref, targets, dtype, "numpy"),
    )


@pytest.mark.parametrize("engine", ["numba", "numpy"])
def test_cross_entropy_in_float32_rounds_a_perfect_fit_to_zero(engine):
    """A row that fits beyond float32's resolution (every other class below the target by 30):
    in float32 its loss and its target's gradient round to exactly 0, the other classes'
    gradients stay (softmax collapse); in float64 all are exact: the target's gradient is minus
    the others' sum."""
    logits = np.zeros((4, 97), np.float32)
    targets = np.array([0, 5, 50, 96])
    logits[np.arange(4), targets] = 30.0
    rows = np.arange(4)
    loss32, p32 = cross_entropy_forward(logits, targets, engine, np.float32)
    d32 = cross_entropy_backward(p32, targets, np.float32, engine)
    assert (loss32 == 0).all() and (d32[rows, targets] == 0).all() and (d32 > 0).sum() == 4 * 96
    loss64, p64 = cross_entropy_forward(logits, targets, engine, np.float64)
    d64 = cross_entropy_backward(p64, targets, np.float64, engine)
    # 96 e^-30 = 9e-12, added to 1 in float64 steps of 2.2e-16: within 0.2%
    np.testing.assert_allclose(loss64, 96 * np.exp(-30.0), rtol=2e-3)
    others = d64.sum(axis=1) - d64[rows, targets]
    np.testing.assert_allclose(d64[rows, targets], -others, rtol=2e-3)
    np.testing.assert_allclose(others, 96 * np.exp(-30.0) / 4, rtol=2e-3)


@pytest.mark.parametrize("engine", ["numba", "numpy"])
@pytest.mark.parametrize("work", DTYPES)
def test_cross_entropy_flushes_subnormal_probabilities_and_gradients(engine, work):
    """A class 100 below the row's largest logit has probability e^-100 / 3 (1e-44): subnormal
    in float32, so a float32 probability and gradient of 0 (a float64 probability keeps it, and
    a float64 gradient of it), where a class 80 below (6e-36, normal; over N = 4, 1.5e-36)
    keeps both. The loss does not move; nothing else does either."""
    logits = np.zeros((4, 5), np.float32)
    logits[:, 1], logits[:, 2] = -100.0, -80.0
    targets = np.array([0, 3, 4, 0])
    loss, probs = cross_entropy_forward(logits, targets, engine, work)
    assert (probs[:, 1] == 0).all() == (work == np.float32) and (probs[:, 2] > 0).all()
    np.testing.assert_array_equal(loss, np.log(work(3) + np.exp(work(-80))))
    d32 = cross_entropy_backward(probs, targets, np.float32, engine)
    d64 = cross_entropy_backward(probs, targets, np.float64, engine)
    tiny = np.finfo(np.float32).tiny
    assert (d32[:, 1] == 0).all() and (d32[:, 2] > tiny).all()
    if work == np.float64:
        np.testing.assert_allclose(d64[:, 1], np.exp(-100.0) / 4 / (3 + np.exp(-80.0)), rtol=1e-6)
    keep = np.ones(5, bool)
    keep[1] = False
    np.testing.assert_array_equal(d32[:, keep], d64[:, keep].astype(np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(n=st.integers(1, 3000), weight_decay=st.sampled_from([0.0, 0.1, 1.0]), seed=seeds)
def test_adamw(dtype, n, weight_decay, seed):
    rng = np.random.default_rng(seed)
    state = [normal(rng, (n,), dtype), normal(rng, (n,), dtype), np.abs(normal(rng, (n,), dtype))]
    ref = [s.copy() for s in state]  # p, m, v
    for step in (1, 2, 3):  # the moments evolve over a few steps
        g = normal(rng, (n,), dtype)
        hyper = (1e-2, 0.9, 0.98, 1e-8, weight_decay, step)
        adamw_update(state[0], g, state[1], state[2], *hyper, engine="numba")
        adamw_update(ref[0], g, ref[1], ref[2], *hyper, engine="numpy")
    for got, want in zip(state, ref, strict=True):
        assert_close(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(n=st.integers(1, 3000), weight_decay=st.sampled_from([0.0, 0.5]), seed=seeds)
def test_sgd(dtype, n, weight_decay, seed):
    rng = np.random.default_rng(seed)
    p, buf = normal(rng, (n,), dtype), normal(rng, (n,), dtype)
    p_ref, buf_ref = p.copy(), buf.copy()
    for step in (1, 2, 3):  # the first step starts the momentum buffer
        g = normal(rng, (n,), dtype)
        sgd_update(p, g, buf, 0.1, 0.9, weight_decay, step, engine="numba")
        sgd_update(p_ref, g, buf_ref, 0.1, 0.9, weight_decay, step, engine="numpy")
    assert_close(p, p_ref)
    assert_close(buf, buf_ref)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(
    b=st.integers(1, 60),
    t=st.integers(1, 5),
    c=st.integers(1, 70),
    v=st.integers(1, 12),
    seed=seeds,
)
def test_embedding_backward(dtype, b, t, c, v, seed):
    rng = np.random.default_rng(seed)
    dx, tokens = normal(rng, (b, t, c), dtype), rng.integers(0, v, (b, t))
    for got, want in zip(
        embedding_backward(dx, tokens, v, "numba"),
        embedding_backward(dx, tokens, v, "numpy"),
        strict=True,
    ):
        assert_close(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(m=st.integers(1, 300), k=st.integers(1, 150), n=st.integers(1, 40), seed=seeds)
def test_scatter_add_rows(dtype, m, k, n, seed):
    """The backward of a gather table[index]: rows read several times sum their gradients."""
    rng = np.random.default_rng(seed)
    dy, index = normal(rng, (m, k), dtype), rng.integers(0, n, m)
    assert_close(scatter_add_rows(dy, index, n, "numba"), scatter_add_rows(dy, index, n, "numpy"))
    # given out, the sums are added into it, in place, in both engines
    base = normal(rng, (n, k), dtype)
    for engine in ("numba", "numpy"):
        out = base.copy()
        assert scatter_add_rows(dy, index, n, engine, out=out) is out
        assert_close(out, base + scatter_add_rows(dy, index, n, "numpy"))


def test_scatter_refuses_an_out_it_cannot_add_into():
    """The kernel adds into out's own memory: a strided, mis-shaped or other-dtype out is an
    error, not a copy that would silently lose the sums."""
    dy, index = np.ones((3, 4), np.float32), np.array([0, 1, 1])
    for out in (
        np.zeros((2, 8), np.float32)[:, ::2],
        np.zeros((3, 4), np.float32),
        np.zeros((2, 4)),
    ):
        for engine in ("numba", "numpy"):
            with pytest.raises(ValueError, match="scatter: out"):
                scatter_add_rows(dy, index, 2, engine, out=out)
    # and layers.scatter_rows, which reshapes: a strided 3-D out would reshape into a copy
    dy3 = np.ones((3, 4, 3), np.float32)
    for out in (np.zeros((2, 8, 3), np.float32)[:, ::2], np.zeros((2, 12), np.float32)):
        with pytest.raises(ValueError, match="scatter: out"):
            L.scatter_rows(dy3, index, 2, "numba", out=out)


def test_an_index_out_of_range_is_an_index_error_in_both_engines():
    """The numba kernels read and write through their indices unchecked: a row outside the
    table must raise, as NumPy's indexing does, and not touch memory beyond the array; a
    negative row counts from the end in both engines."""
    rng = np.random.default_rng(0)
    q, kv = normal(rng, (1, 4, 8), np.float32), normal(rng, (5, 16), np.float32)
    dx = normal(rng, (1, 4, 8), np.float32)

    def run(rows: np.ndarray, engine: str) -> list[np.ndarray]:
        return [
            scatter_add_rows(dx.reshape(4, 8), rows, 5, engine),
            *embedding_backward(dx, rows.reshape(1, 4), 5, engine),
            *attention_forward(q, kv, rows.reshape(1, 4), 2, engine),
        ]

    for bad in (5, -6):
        for engine in ("numba", "numpy"):
            with pytest.raises(IndexError):
                scatter_add_rows(dx.reshape(4, 8), np.array([0, 1, bad, 2]), 5, engine)
            with pytest.raises(IndexError):
                embedding_backward(dx, np.array([[0, 1, bad, 2]]), 5, engine)
            with pytest.raises(IndexError):
                attention_forward(q, kv, np.array([[0, 1, bad, 2]]), 2, engine)
    from_end = np.array([0, 1, -1, 2])
    for a, b in zip(run(from_end, "numba"), run(from_end, "numpy"), strict=True):
        assert_close(a, b)


def test_float32_tanh_holds_its_documented_bound():
    """kernels/activation.py promises Eigen's rational tanh to an absolute error below 1e-6 in
    float32 (measured: 3.3e-7); the GELU kernel inherits it."""
    from numba import njit

    from tinygrok.kernels.activation import _tanh, bias_act_forward

    @njit
    def rational_tanh(u):
        out = np.empty_like(u)
        for i in range(u.size):
            out[i] = _tanh(u[i], True)
        return out

    u = np.linspace(-12, 12, 200_001).astype(np.float32)
    t = rational_tanh(u)
    assert t.dtype == np.float32
    assert np.abs(t - np.tanh(u.astype(np.float64))).max() < 1e-6
    # GELU through the kernel: 0.5 x (1 + tanh): off by at most 0.5 |x| 1e-6, plus rounding
    x = np.linspace(-8, 8, 100_001).astype(np.float32)
    out, _ = bias_act_forward(x[None, :].copy(), np.zeros(x.size, np.float32), "gelu", "numba")
    x64 = x.astype(np.float64)
    exact = 0.5 * x64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3)))
    bound = 0.5 * np.abs(x64) * 1e-6 + 4 * np.finfo(np.float32).eps * (np.abs(exact) + 1e-3)
    assert (np.abs(out[0] - exact) <= bound).all()


# Every numba kernel on fixed inputs, in both dtypes, saved to the file named by argv[1].
EVERY_KERNEL = """
import sys
import numpy as np
from tinygrok.kernels.activation import bias_act_backward, bias_act_forward
from tinygrok.kernels.attention import attention_backward, attention_forward
from tinygrok.kernels.crossentropy import cross_entropy_backward, cross_entropy_forward
from tinygrok.kernels.embedding import embedding_backward, scatter_add_rows
from tinygrok.kernels.layernorm import add_layernorm_forward, layernorm_backward, layernorm_forward
from tinygrok.kernels.optimizer import adamw_update, sgd_update

out, e = {}, "numba"
for dtype in (np.float32, np.float64):
    rng = np.random.default_rng(0)
    r = lambda *shape: (3 * rng.standard_normal(shape)).astype(dtype)
    h, b, x, w = r(300, 257), r(257), r(301, 64), r(64)
    q, k, v, dy = r(50, 4, 64), r(50, 4, 64), r(50, 4, 64), r(50, 4, 64)
    logits, targets, tokens = r(300, 97), rng.integers(0, 97, 300), rng.integers(0, 30, (50, 4))
    p, g, m, s = r(1000), r(1000), r(1000), np.abs(r(1000))
    res = [*bias_act_forward(h.copy(), b, "gelu", e), bias_act_backward(h.copy(), h, "gelu", e)]
    res += [*bias_act_forward(h.copy(), b, "relu", e), bias_act_backward(h.copy(), h, "relu", e)]
    res += layernorm_forward(x, w, w, e)
    res += layernorm_backward(x, x, w, res[-2], res[-1], e)
    summed = x.copy()
    res += [*add_layernorm_forward(x[::-1].copy(), summed, w, w, e), summed]
    kv, index = np.concatenate([k, v], axis=-1).reshape(200, 128), rng.integers(0, 200, (50, 4))
    y, a = attention_forward(q, kv, index, 4, e)
    res += [y, a, *attention_backward(dy, q, kv, index, a, 4, e)]
    loss, probs = cross_entropy_forward(logits, targets, e, dtype)
    res += [loss, probs, cross_entropy_backward(probs, targets, dtype, e)]
    res += [*embedding_backward(dy, tokens, 30, e), scatter_add_rows(h, targets, 97, e)]
    adamw_update(p, g, m, s, 1e-3, 0.9, 0.98, 1e-8, 1.0, 3, e)
    sgd_update(g, p, m, 0.1, 0.9, 0.5, 2, e)
    res += [p, m, s, g]
    out |= {f"{dtype.__name__}.{i}": t for i, t in enumerate(res)}
np.savez(sys.argv[1], **out)
"""


@pytest.mark.slow
def test_kernels_compiled_and_cached_give_the_same_bits(tmp_path):
    """A kernel loaded from numba's on-disk cache computes what the freshly compiled one does,
    bit for bit: one process compiles into an empty NUMBA_CACHE_DIR, a second loads from it.
    (numba 0.68 broke this for parallel kernels compiled with both "nsz" and "reassoc": the GELU
    backward and the cross-entropy forward changed bits when loaded from the cache; tinygrok's
    kernels are serial, and reassociate.)"""
    env = os.environ | {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    runs = {}
    for name in ("compiled", "cached"):
        subprocess.run(
            [sys.executable, "-c", EVERY_KERNEL, str(tmp_path / f"{name}.npz")],
            env=env,
            check=True,
            capture_output=True,
        )
        runs[name] = np.load(tmp_path / f"{name}.npz")
    assert any((tmp_path / "cache").rglob("*.nbc")), "nothing was cached"
    compiled, cached = runs["compiled"], runs["cached"]
    assert sorted(compiled.files) == sorted(cached.files) and len(compiled.files) == 2 * 30
    differ = [k for k in compiled.files if not np.array_equal(compiled[k], cached[k])]
    assert not differ, f"kernel outputs that changed bits when loaded from the cache: {differ}"


def test_subnormals_as_zero_flushes_in_its_block_and_restores_after():
    """Inside the block a subnormal float32 operand reads as 0 and a subnormal result is 0 (on
    x86-64; elsewhere the block changes nothing); after it, subnormals are back."""
    from tinygrok.kernels.subnormals import X86_64, subnormals_as_zero

    sub, tiny = np.float32(3e-39), np.finfo(np.float32).tiny
    x = np.full(8, sub)
    with subnormals_as_zero() as flushed:
        inside = (x * np.float32(1), np.float32(tiny) / np.float32(4))
    assert flushed == X86_64
    if flushed:
        assert (inside[0] == 0).all() and inside[1] == 0
    assert (x * np.float32(1) == sub).all() and np.float32(tiny) / np.float32(4) > 0


def test_subnormals_as_zero_reaches_blas_worker_threads():
    """At two BLAS threads every entry of a product of normal numbers whose terms, and sum, are
    subnormal comes out 0 inside the block, the rows of OpenBLAS's worker as well as the calling
    thread's, and subnormal again after it."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from tinygrok.kernels.subnormals import X86_64, openblas_pools, subnormals_as_zero

    if not X86_64 or not openblas_pools(min_threads=1):
        pytest.skip("needs x86-64 and an OpenBLAS with its own thread pool")
    a = np.full((1024, 64), 1e-20, np.float32)  # a @ a.T: 64 terms of 1e-40, sum 6.4e-39
    b = a.T.copy()  # a general product (a @ a.T itself would be a symmetric one)
    with threadpool_limits(2, user_api="blas"):
        if max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas") < 2:
            pytest.skip("BLAS runs one thread here")
        with subnormals_as_zero():
            inside = a @ b
        after = a @ b
    assert (inside == 0).all(), f"{(inside != 0).sum()} of {inside.size} entries not flushed"
    assert (after > 0).all() and (after < np.finfo(np.float32).tiny).all()
