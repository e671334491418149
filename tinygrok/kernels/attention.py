"""Causal multi-head attention, the part between the projections.

Shapes: B batch, T sequence length, Tq query positions (the last Tq of the T), C channels,
NH heads, HS = C / NH head size.

Forward, for every batch row and head (q, k, v are that head's slices):

    s[i, j] = q[i] . k[j] / sqrt(HS)          for key j <= i + (T - Tq)   (causal), else -inf
    a[i, :] = softmax(s[i, :])
    y[i]    = sum_j a[i, j] v[j]

Backward, given dy:

    dv[j]   = sum_i a[i, j] dy[i]
    da[i,j] = dy[i] . v[j]
    ds[i,j] = a[i, j] (da[i, j] - sum_j' a[i, j'] da[i, j'])     (softmax backward)
    dq[i]   = sum_j ds[i, j] k[j] / sqrt(HS)
    dk[j]   = sum_i ds[i, j] q[i] / sqrt(HS)

With Tq = 1 only the last position is queried: that is all the loss needs in the last layer.
"""

from __future__ import annotations

import numpy as np


def _heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """(B, T, C) -> (B, NH, T, HS)."""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def attention_forward_ref(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, n_head: int
) -> tuple[np.ndarray, np.ndarray]:
    """q (B, Tq, C), k and v (B, T, C) -> y (B, Tq, C), a (B, NH, Tq, T) the attention weights."""
    B, Tq, C = q.shape
    T = k.shape[1]
    scale = q.dtype.type(1.0 / np.sqrt(C // n_head))
    qh, kh, vh = _heads(q, n_head), _heads(k, n_head), _heads(v, n_head)  # (B, NH, *, HS)
    s = (qh @ kh.transpose(0, 1, 3, 2)) * scale  # (B, NH, Tq, T)
    future = np.arange(T)[None, :] > (T - Tq + np.arange(Tq))[:, None]  # (Tq, T)
    s = np.where(future, -np.inf, s)
    s = s - s.max(axis=-1, keepdims=True)
    a = np.exp(s)
    a /= a.sum(axis=-1, keepdims=True)  # (B, NH, Tq, T)
    yh = a @ vh  # (B, NH, Tq, HS)
    return yh.transpose(0, 2, 1, 3).reshape(B, Tq, C), a


def attention_backward_ref(
    dy: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, a: np.ndarray, n_head: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dy (B, Tq, C) and the forward's inputs and weights -> dq (B, Tq, C), dk and dv (B, T, C)."""
    B, Tq, C = q.shape
    T = k.shape[1]
    scale = q.dtype.type(1.0 / np.sqrt(C // n_head))
    qh, kh, vh, dyh = _heads(q, n_head), _heads(k, n_head), _heads(v, n_head), _heads(dy, n_head)
    # y = a @ v
    da = dyh @ vh.transpose(0, 1, 3, 2)  # (B, NH, Tq, T)
    dvh = a.transpose(0, 1, 3, 2) @ dyh  # (B, NH, T, HS)
    # a = softmax(s)
    ds = a * (da - (da * a).sum(axis=-1, keepdims=True))  # (B, NH, Tq, T)
    # s = q @ k^T * scale
    dqh = (ds @ kh) * scale  # (B, NH, Tq, HS)
    dkh = (ds.transpose(0, 1, 3, 2) @ qh) * scale  # (B, NH, T, HS)

    def merge(xh: np.ndarray, n: int) -> np.ndarray:
        return xh.transpose(0, 2, 1, 3).reshape(B, n, C)

    return merge(dqh, Tq), merge(dkh, T), merge(dvh, T)


def attention_forward(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, n_head: int, engine: str = "numpy"
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `attention_forward_ref` for shapes."""
    return attention_forward_ref(q, k, v, n_head)


def attention_backward(
    dy: np.ndarray,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    a: np.ndarray,
    n_head: int,
    engine: str = "numpy",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `attention_backward_ref` for shapes."""
    return attention_backward_ref(dy, q, k, v, a, n_head)
