"""Layer normalization over the last axis (N rows, C channels), eps = 1e-5 as in PyTorch.

Forward:   mu = mean(x),  rstd = 1 / sqrt(var(x) + eps),  xhat = (x - mu) rstd,  y = xhat w + b
Backward:  dxhat = dy w
           dx    = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
           dw    = sum_rows dy xhat,   db = sum_rows dy
(llm.c, doc/layernorm/layernorm.md, derives the dx line.)

A residual sum s = res + x feeding a norm (post-norm's "Add & Norm") is one kernel,
`add_layernorm_forward`: s is written over x and normalized in the same pass over the row.

The numba kernels run row by row; a row's sums over its channels vectorize (kernels.FASTMATH
reassociates them), and dw and db add up the rows in order.
"""

from __future__ import annotations

import numpy as np

from tinygrok.kernels import kernel

EPS = 1e-5


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


@kernel
def _layernorm_forward_nb(x, res, w, b, eps, y, mean, rstd):
    """Fills y (N, C), mean (N,), rstd (N,) of x (N, C); given a res (N, C), x += res first, in
    place (numba compiles the branch away for res None, so x may then be read-only). See
    `layernorm_forward_ref`."""
    N, C = x.shape
    zero, one, n_c = x.dtype.type(0), x.dtype.type(1), x.dtype.type(C)
    for n in range(N):
        xr, yr = x[n], y[n]
        if res is not None:
            rr = res[n]
            for c in range(C):
                xr[c] += rr[c]
        total = zero
        for c in range(C):
            total += xr[c]
        m = total / n_c
        square = zero
        for c in range(C):
            d = xr[c] - m
            square += d * d
        r = one / np.sqrt(square / n_c + eps)
        for c in range(C):
            yr[c] = (xr[c] - m) * r * w[c] + b[c]
        mean[n], rstd[n] = m, r


@kernel
def _layernorm_backward_nb(dy, x, w, mean, rstd, dx, dw, db):
    """Fills dx (N, C), dw (C,) and db (C,); see `layernorm_backward_ref`."""
    N, C = x.shape
    zero, n_c = x.dtype.type(0), x.dtype.type(C)
    dw[:] = zero
    db[:] = zero
    for n in range(N):
        xr, dyr, dxr, m, r = x[n], dy[n], dx[n], mean[n], rstd[n]
        # xhat;  dw += dy xhat;  db += dy;  with dxhat = dy w, the sums of dxhat and dxhat xhat
        s1 = s2 = zero
        for c in range(C):
            xhat = (xr[c] - m) * r
            dxhat = dyr[c] * w[c]
            dw[c] += dyr[c] * xhat
            db[c] += dyr[c]
            s1 += dxhat
            s2 += dxhat * xhat
        s1 /= n_c
        s2 /= n_c
        # dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
        for c in range(C):
            dxr[c] = (dyr[c] * w[c] - s1 - (xr[c] - m) * r * s2) * r


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
    _layernorm_forward_nb(x, res, w, b, x.dtype.type(EPS), y, mean, rstd)
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
    dx, dw, db = np.empty_like(x), np.empty(x.shape[1], x.dtype), np.empty(x.shape[1], x.dtype)
    _layernorm_backward_nb(dy, x, w, mean, rstd, dx, dw, db)
    return dx, dw, db
