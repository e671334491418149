"""Causal multi-head attention, the part between the projections.

Shapes: B batch, T sequence length, Tq query positions (the last Tq of the T), C channels,
NH heads, HS = C / NH head size, Ns source rows.

Keys and values are read through an index: kv (Ns, 2C) holds each source row's key (columns
:C) and value (C:), and example b's key and value at position t are those of row index[b, t].
The textbook model passes its own rows (index[b, t] = b T + t); the fast model passes rows that
several examples share (a prefix's, a distinct token's) without copying them out per example.

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

dk and dv are returned per example and position, as dkv (B, T, 2C); the rows they came from
collect them with a scatter-add (the backward of the gather, layers.scatter_rows).

With Tq = 1 only the last position is queried: that is all the loss needs in the last layer.
Reference: Vaswani et al. 2017, "Attention Is All You Need", section 3.2.

The numba kernels run one (batch row, head) pair per parallel iteration: each writes only its own
slices of the outputs. The causal mask is a loop bound, so no -inf ever enters the arithmetic.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from tinygrok.kernels import FASTMATH, check_index, dot


def _heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """(B, T, C) -> (B, NH, T, HS)."""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def attention_forward_ref(
    q: np.ndarray, kv: np.ndarray, index: np.ndarray, n_head: int
) -> tuple[np.ndarray, np.ndarray]:
    """q (B, Tq, C), kv (Ns, 2C), index (B, T) -> y (B, Tq, C), a (B, NH, Tq, T) the weights."""
    B, Tq, C = q.shape
    T = index.shape[1]
    k, v = kv[index, :C], kv[index, C:]  # (B, T, C) each
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
    dy: np.ndarray, q: np.ndarray, kv: np.ndarray, index: np.ndarray, a: np.ndarray, n_head: int
) -> tuple[np.ndarray, np.ndarray]:
    """dy (B, Tq, C) and the forward's inputs and weights -> dq (B, Tq, C), dkv (B, T, 2C)."""
    B, Tq, C = q.shape
    T = index.shape[1]
    k, v = kv[index, :C], kv[index, C:]
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

    return merge(dqh, Tq), np.concatenate([merge(dkh, T), merge(dvh, T)], axis=-1)


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def _attention_forward_nb(q, kv, index, n_head, scale, y, a):
    """Fills y (B, Tq, C) and a (B, NH, Tq, T); see `attention_forward_ref`."""
    B, Tq, C = q.shape
    T = index.shape[1]
    HS = C // n_head
    zero = q.dtype.type(0)
    for bh in prange(B * n_head):
        b, h = bh // n_head, bh % n_head
        lo, hi = h * HS, (h + 1) * HS
        rows = index[b]  # (T,) the source rows of this example's keys and values
        for i in range(Tq):
            last = T - Tq + i  # query i sees keys 0..last
            qi, yi, ai = q[b, i, lo:hi], y[b, i, lo:hi], a[b, h, i]  # (HS,), (HS,), (T,)
            # s[i, j] = q[i] . k[j] * scale, kept in a until the softmax is done
            for j in range(last + 1):
                ai[j] = dot(qi, kv[rows[j], lo:hi]) * scale
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
                vj, aij = kv[rows[j], C + lo : C + hi], ai[j]
                for c in range(HS):
                    yi[c] += aij * vj[c]


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def _attention_backward_nb(dy, q, kv, index, a, n_head, scale, dq, dkv, da):
    """Fills dq (B, Tq, C) and dkv (B, T, 2C), using da (B, NH, T) as scratch; see
    `attention_backward_ref`."""
    B, Tq, C = q.shape
    T = index.shape[1]
    HS = C // n_head
    zero = q.dtype.type(0)
    for bh in prange(B * n_head):
        b, h = bh // n_head, bh % n_head
        lo, hi = h * HS, (h + 1) * HS
        rows, dai = index[b], da[b, h]
        dkv[b, :, lo:hi] = zero
        dkv[b, :, C + lo : C + hi] = zero
        for i in range(Tq):
            last = T - Tq + i
            qi, dyi, dqi, ai = q[b, i, lo:hi], dy[b, i, lo:hi], dq[b, i, lo:hi], a[b, h, i]
            # y = a @ v:  da[i, j] = dy[i] . v[j],  dv[j] += a[i, j] dy[i];
            # and the softmax backward's ada = sum_j a[i, j] da[i, j]
            ada = zero
            for j in range(last + 1):
                dvj, aij = dkv[b, j, C + lo : C + hi], ai[j]
                for c in range(HS):
                    dvj[c] += aij * dyi[c]
                dai[j] = dot(dyi, kv[rows[j], C + lo : C + hi])
                ada += aij * dai[j]
            # a = softmax(s):  ds[i, j] = a[i, j] (da[i, j] - ada)
            # s = q k^T scale:  dq[i] = sum_j ds[i, j] k[j] scale,  dk[j] += ds[i, j] q[i] scale
            dqi[:] = zero
            for j in range(last + 1):
                kj, dkj = kv[rows[j], lo:hi], dkv[b, j, lo:hi]
                ds = ai[j] * (dai[j] - ada) * scale
                for c in range(HS):
                    dqi[c] += ds * kj[c]
                    dkj[c] += ds * qi[c]


def attention_forward(
    q: np.ndarray, kv: np.ndarray, index: np.ndarray, n_head: int, engine: str
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `attention_forward_ref` for shapes."""
    if engine != "numba":
        return attention_forward_ref(q, kv, index, n_head)
    check_index(index, len(kv), "attention")
    B, Tq, C = q.shape
    scale = q.dtype.type(1.0 / np.sqrt(C // n_head))
    y = np.empty((B, Tq, C), dtype=q.dtype)
    a = np.empty((B, n_head, Tq, index.shape[1]), dtype=q.dtype)
    # numba vectorizes the loops over a head's channels only on contiguous arrays
    q, kv = np.ascontiguousarray(q), np.ascontiguousarray(kv)
    _attention_forward_nb(q, kv, np.ascontiguousarray(index), n_head, scale, y, a)
    return y, a


def attention_backward(
    dy: np.ndarray,
    q: np.ndarray,
    kv: np.ndarray,
    index: np.ndarray,
    a: np.ndarray,
    n_head: int,
    engine: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `attention_backward_ref` for shapes."""
    if engine != "numba":
        return attention_backward_ref(dy, q, kv, index, a, n_head)
    check_index(index, len(kv), "attention")
    B, Tq, C = q.shape
    scale = q.dtype.type(1.0 / np.sqrt(C // n_head))
    T = index.shape[1]
    dq, dkv = np.empty((B, Tq, C), dtype=q.dtype), np.empty((B, T, 2 * C), q.dtype)
    da = np.empty((B, n_head, T), dtype=q.dtype)  # scratch: one query's da at a time
    q, kv, dy = (np.ascontiguousarray(t) for t in (q, kv, dy))
    _attention_backward_nb(dy, q, kv, np.ascontiguousarray(index), a, n_head, scale, dq, dkv, da)
    return dq, dkv
