"""Layer normalization over the last axis (N rows, C channels), eps = 1e-5 as in PyTorch.

Forward:   mu = mean(x),  rstd = 1 / sqrt(var(x) + eps),  xhat = (x - mu) rstd,  y = xhat w + b
Backward:  dxhat = dy w
           dx    = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
           dw    = sum_rows dy xhat,   db = sum_rows dy
(llm.c, doc/layernorm/layernorm.md, derives the dx line.)

A residual sum s = res + x feeding a norm (post-norm's "Add & Norm") is one kernel,
`add_layernorm_forward`: s is written over x and normalized in the same pass over the row.

The numba kernels run one block of ROWS_PER_BLOCK rows per parallel iteration. dw and db sum over
rows: each block writes its partial sums, and the partials are added afterwards in block order.
The blocks do not depend on the thread count, so neither do the results.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from tinygrok.kernels import EXACT, FASTMATH, dot, kernel

EPS = 1e-5
ROWS_PER_BLOCK = 64


def layernorm_forward_ref(
    x: np.ndarray, w: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (N, C), w and b (C,) -> y (N, C), mean (N,), rstd (N,)."""
    mean = x.mean(axis=-1)  # (N,)
    xc = x - mean[:, None]
    rstd = 1 / np.sqrt((xc * xc).mean(axis=-1) + x.dtype.type(EPS))  # (N,)
    return xc * rstd[:, None] * w + b, mean, rstd


def layernorm_backward_ref(
    dy: np.ndarray, x: np.ndarray, w: np.ndarray, mean: np.ndarray, rstd: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dy, x (N, C), w (C,), mean and rstd (N,) -> dx (N, C), dw (C,), db (C,)."""
    xhat = (x - mean[:, None]) * rstd[:, None]  # (N, C)
    dxhat = dy * w
    dx = (
        dxhat
        - dxhat.mean(axis=-1, keepdims=True)
        - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)
    ) * rstd[:, None]
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


@kernel(fastmath=EXACT)  # rounds alike serially and in parallel: kernels/__init__.py
def _layernorm_forward_nb(x, res, w, b, eps, rows_per_block, y, mean, rstd):
    """Fills y (N, C), mean (N,), rstd (N,) of x (N, C); given a res (N, C), x += res first, in
    place (numba compiles the branch away for res None, so x may then be read-only). See
    `layernorm_forward_ref`."""
    N, C = x.shape
    one, n_c = x.dtype.type(1), x.dtype.type(C)
    for blk in prange(-(-N // rows_per_block)):
        ones = np.ones(C, dtype=x.dtype)
        for n in range(blk * rows_per_block, min(N, (blk + 1) * rows_per_block)):
            xr, yr = x[n], y[n]
            if res is not None:
                rr = res[n]
                for c in range(C):
                    xr[c] += rr[c]
            m = dot(xr, ones) / n_c  # (sums in four lanes: kernels/__init__.py)
            for c in range(C):
                yr[c] = xr[c] - m  # the deviation, until the last loop scales it
            r = one / np.sqrt(dot(yr, yr) / n_c + eps)
            for c in range(C):
                yr[c] = yr[c] * r * w[c] + b[c]
            mean[n], rstd[n] = m, r


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _dxhat_sums(dy, w, xhat):
    """dy, w, xhat (C,) -> (sum_c dy w, sum_c dy w xhat), each in four lanes as `dot` sums: eight
    independent chains of additions instead of two."""
    zero = dy.dtype.type(0)
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = zero
    C = len(dy)
    n4 = C - C % 4
    for c in range(0, n4, 4):
        g0 = dy[c] * w[c]
        g1 = dy[c + 1] * w[c + 1]
        g2 = dy[c + 2] * w[c + 2]
        g3 = dy[c + 3] * w[c + 3]
        a0 += g0
        a1 += g1
        a2 += g2
        a3 += g3
        b0 += g0 * xhat[c]
        b1 += g1 * xhat[c + 1]
        b2 += g2 * xhat[c + 2]
        b3 += g3 * xhat[c + 3]
    for c in range(n4, C):
        g0 = dy[c] * w[c]
        a0 += g0
        b0 += g0 * xhat[c]
    return (a0 + a1) + (a2 + a3), (b0 + b1) + (b2 + b3)


@kernel
def _layernorm_backward_nb(dy, x, w, mean, rstd, rows_per_block, dx, dw_part, db_part):
    """Fills dx (N, C) and the per-block partial sums dw_part, db_part (blocks, C)."""
    N, C = x.shape
    zero, n_c = x.dtype.type(0), x.dtype.type(C)
    for blk in prange(dw_part.shape[0]):
        dwp, dbp = dw_part[blk], db_part[blk]
        dwp[:] = zero
        dbp[:] = zero
        for n in range(blk * rows_per_block, min(N, (blk + 1) * rows_per_block)):
            xr, dyr, dxr, m, r = x[n], dy[n], dx[n], mean[n], rstd[n]
            # xhat, kept in dx until the last loop;  dw += dy xhat;  db += dy
            for c in range(C):
                xhat = (xr[c] - m) * r
                dxr[c] = xhat
                dwp[c] += dyr[c] * xhat
                dbp[c] += dyr[c]
            # with dxhat = dy w, the row means of dxhat and of dxhat xhat
            s1, s2 = _dxhat_sums(dyr, w, dxr)
            s1 /= n_c
            s2 /= n_c
            # dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
            for c in range(C):
                dxr[c] = (dyr[c] * w[c] - s1 - dxr[c] * s2) * r


def layernorm_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, engine: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `layernorm_forward_ref`."""
    if engine != "numba":
        return layernorm_forward_ref(x, w, b)
    return _run_forward(x, None, w, b)


def add_layernorm_forward(
    res: np.ndarray, x: np.ndarray, w: np.ndarray, b: np.ndarray, engine: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The residual sum and its norm in one pass: x += res (in place, x (N, C) becomes the
    norm's input s), then `layernorm_forward` of it -> y (N, C), mean (N,), rstd (N,)."""
    if res.shape != x.shape:  # the kernel reads res[n] unchecked: no broadcasting
        raise ValueError(f"residual of shape {res.shape} for a sum of shape {x.shape}")
    if engine != "numba":
        x += res
        return layernorm_forward_ref(x, w, b)
    return _run_forward(x, res, w, b)


def _run_forward(x, res, w, b):
    """The numba forward's outputs, allocated and filled."""
    N = x.shape[0]
    y = np.empty_like(x)
    mean, rstd = np.empty(N, dtype=x.dtype), np.empty(N, dtype=x.dtype)
    _layernorm_forward_nb(x, res, w, b, x.dtype.type(EPS), ROWS_PER_BLOCK, y, mean, rstd)
    return y, mean, rstd


def layernorm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    mean: np.ndarray,
    rstd: np.ndarray,
    engine: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `layernorm_backward_ref`."""
    if engine != "numba":
        return layernorm_backward_ref(dy, x, w, mean, rstd)
    N, C = x.shape
    blocks = -(-N // ROWS_PER_BLOCK)
    dx = np.empty_like(x)
    dw_part, db_part = np.empty((blocks, C), dtype=x.dtype), np.empty((blocks, C), dtype=x.dtype)
    _layernorm_backward_nb(dy, x, w, mean, rstd, ROWS_PER_BLOCK, dx, dw_part, db_part)
    return dx, dw_part.sum(axis=0), db_part.sum(axis=0)
