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
Reference: Vaswani et al. 2017, "Attention Is All You Need", section 3.2.

q, k and v may be strided views (slices of one (B, T, 3C) projection).

The numba kernels run one (batch row, head) pair per parallel iteration: each writes only its own
slices of the outputs. The causal mask is a loop bound, so no -inf ever enters the arithmetic.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from tinygrok.kernels import FASTMATH, dot


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


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def _attention_forward_nb(q, k, v, n_head, scale, y, a):
    """Fills y (B, Tq, C) and a (B, NH, Tq, T); see `attention_forward_ref`."""
    B, Tq, C = q.shape
    T = k.shape[1]
    HS = C // n_head
    zero = q.dtype.type(0)
    for bh in prange(B * n_head):
        b, h = bh // n_head, bh % n_head
        lo, hi = h * HS, (h + 1) * HS
        for i in range(Tq):
            last = T - Tq + i  # query i sees keys 0..last
            qi, yi, ai = q[b, i, lo:hi], y[b, i, lo:hi], a[b, h, i]  # (HS,), (HS,), (T,)
            # s[i, j] = q[i] . k[j] * scale, kept in a until the softmax is done
            for j in range(last + 1):
                ai[j] = dot(qi, k[b, j, lo:hi]) * scale
            # a[i, :] = softmax(s[i, :])
            m = ai[0]
            for j in range(1, last + 1):
                m = max(m, ai[j])
            total = zero
            for j in range(last + 1):
                ai[j] = np.exp(ai[j] - m)
                total += ai[j]
            for j in range(last + 1):
                ai[j] /= total
            for j in range(last + 1, T):
                ai[j] = zero
            # y[i] = sum_j a[i, j] v[j]
            yi[:] = zero
            for j in range(last + 1):
                vj, aij = v[b, j, lo:hi], ai[j]
                for c in range(HS):
                    yi[c] += aij * vj[c]


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def _attention_backward_nb(dy, q, k, v, a, n_head, scale, dq, dk, dv):
    """Fills dq (B, Tq, C), dk and dv (B, T, C); see `attention_backward_ref`."""
    B, Tq, C = q.shape
    T = k.shape[1]
    HS = C // n_head
    zero = q.dtype.type(0)
    for bh in prange(B * n_head):
        b, h = bh // n_head, bh % n_head
        lo, hi = h * HS, (h + 1) * HS
        dk[b, :, lo:hi] = zero
        dv[b, :, lo:hi] = zero
        for i in range(Tq):
            last = T - Tq + i
            qi, dyi, dqi, ai = q[b, i, lo:hi], dy[b, i, lo:hi], dq[b, i, lo:hi], a[b, h, i]
            # y = a @ v:  da[i, j] = dy[i] . v[j],  dv[j] += a[i, j] dy[i];
            # and the softmax backward's ada = sum_j a[i, j] da[i, j]
            ada = zero
            for j in range(last + 1):
                dvj, aij = dv[b, j, lo:hi], ai[j]
                for c in range(HS):
                    dvj[c] += aij * dyi[c]
                ada += aij * dot(dyi, v[b, j, lo:hi])
            # a = softmax(s):  ds[i, j] = a[i, j] (da[i, j] - ada)
            # s = q k^T scale:  dq[i] = sum_j ds[i, j] k[j] scale,  dk[j] += ds[i, j] q[i] scale
            dqi[:] = zero
            for j in range(last + 1):
                kj, dkj = k[b, j, lo:hi], dk[b, j, lo:hi]
                ds = ai[j] * (dot(dyi, v[b, j, lo:hi]) - ada) * scale
                for c in range(HS):
                    dqi[c] += ds * kj[c]
                    dkj[c] += ds * qi[c]


def attention_forward(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, n_head: int, engine: str
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `attention_forward_ref` for shapes."""
    if engine != "numba":
        return attention_forward_ref(q, k, v, n_head)
    B, Tq, C = q.shape
    scale = q.dtype.type(1.0 / np.sqrt(C // n_head))
    y = np.empty((B, Tq, C), dtype=q.dtype)
    a = np.empty((B, n_head, Tq, k.shape[1]), dtype=q.dtype)
    _attention_forward_nb(q, k, v, n_head, scale, y, a)
    return y, a


def attention_backward(
    dy: np.ndarray,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    a: np.ndarray,
    n_head: int,
    engine: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `attention_backward_ref` for shapes."""
    if engine != "numba":
        return attention_backward_ref(dy, q, k, v, a, n_head)
    # numba vectorizes the accumulations below only over contiguous rows: on strided views the
    # kernel ran 8x slower than these copies cost
    q, k, v = (np.ascontiguousarray(t) for t in (q, k, v))
    scale = q.dtype.type(1.0 / np.sqrt(q.shape[2] // n_head))
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    _attention_backward_nb(np.ascontiguousarray(dy), q, k, v, a, n_head, scale, dq, dk, dv)
    return dq, dk, dv
