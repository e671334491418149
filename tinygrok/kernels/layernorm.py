"""Layer normalization over the last axis (N rows, C channels), eps = 1e-5 as in PyTorch.

Forward:   mu = mean(x),  rstd = 1 / sqrt(var(x) + eps),  xhat = (x - mu) rstd,  y = xhat w + b
Backward:  dxhat = dy w
           dx    = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
           dw    = sum_rows dy xhat,   db = sum_rows dy
(llm.c, doc/layernorm/layernorm.md, derives the dx line.)
"""

from __future__ import annotations

import numpy as np

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


def layernorm_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, engine: str = "numpy"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `layernorm_forward_ref`."""
    return layernorm_forward_ref(x, w, b)


def layernorm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    mean: np.ndarray,
    rstd: np.ndarray,
    engine: str = "numpy",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `layernorm_backward_ref`."""
    return layernorm_backward_ref(dy, x, w, mean, rstd)
