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

The numba kernels loop over (batch row, head) pairs; the causal mask is a loop bound, so no
-inf ever enters the arithmetic. They read and write at flat offsets (`x.flat[i]`,
`kernels.dot_at`) rather than through slices: numba makes a view object for every slice, and in
these loops over HS = 32 numbers the views cost more than the arithmetic (the kernels ran 1.2
to 1.8 times as fast without them, with the same bits).
"""

from __future__ import annotations

import numpy as np

from tinygrok.kernels import checked_rows, dot_at, kernel


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


@kernel
def _attention_forward_nb(q, kv, index, n_head, scale, y, a):
    """Fills y (B, Tq, C) and a (B, NH, Tq, T); see `attention_forward_ref`."""
    B, Tq, C = q.shape
    T = index.shape[1]
    HS = C // n_head
    zero = q.dtype.type(0)
    for bh in range(B * n_head):
        b, h = bh // n_head, bh % n_head
        for i in range(Tq):
            last = T - Tq + i  # query i sees keys 0..last
            qi = (b * Tq + i) * C + h * HS  # q[b, i, head] and y[b, i, head] start here
            ai = (bh * Tq + i) * T  # a[b, h, i, :]
            # s[i, j] = q[i] . k[j] * scale, kept in a until the softmax is done
            for j in range(last + 1):
                kj = index[b, j] * 2 * C + h * HS  # key j of this head, in kv
                a.flat[ai + j] = dot_at(q, qi, kv, kj, HS) * scale
            # a[i, :] = softmax(s[i, :])
            m = a.flat[ai]
            for j in range(1, last + 1):
                m = max(m, a.flat[ai + j])
            total = zero
            for j in range(last + 1):
                a.flat[ai + j] = np.exp(a.flat[ai + j] - m)
                total += a.flat[ai + j]
            for j in range(last + 1):
                a.flat[ai + j] /= total
            for j in range(last + 1, T):
                a.flat[ai + j] = zero
            # y[i] = sum_j a[i, j] v[j]
            for c in range(HS):
                y.flat[qi + c] = zero
            for j in range(last + 1):
                vj, aij = index[b, j] * 2 * C + C + h * HS, a.flat[ai + j]  # value j, its weight
                for c in range(HS):
                    y.flat[qi + c] += aij * kv.flat[vj + c]


@kernel
def _attention_backward_nb(dy, q, kv, index, a, n_head, scale, dq, dkv, da):
    """Fills dq (B, Tq, C) and dkv (B, T, 2C), using da (B, NH, T) as scratch; see
    `attention_backward_ref`."""
    B, Tq, C = q.shape
    T = index.shape[1]
    HS = C // n_head
    zero = q.dtype.type(0)
    for bh in range(B * n_head):
        b, h = bh // n_head, bh % n_head
        dai = bh * T  # da[b, h, :]: one query's da at a time
        for j in range(T):
            dkj = (b * T + j) * 2 * C + h * HS  # dk[b, j, head]; dv[b, j, head] at dkj + C
            for c in range(HS):
                dkv.flat[dkj + c] = zero
                dkv.flat[dkj + C + c] = zero
        for i in range(Tq):
            last = T - Tq + i
            qi = (b * Tq + i) * C + h * HS  # q, dy and dq of [b, i, head] start here
            ai = (bh * Tq + i) * T
            # y = a @ v:  da[i, j] = dy[i] . v[j],  dv[j] += a[i, j] dy[i];
            # and the softmax backward's ada = sum_j a[i, j] da[i, j]
            ada = zero
            for j in range(last + 1):
                dvj, aij = (b * T + j) * 2 * C + C + h * HS, a.flat[ai + j]
                for c in range(HS):
                    dkv.flat[dvj + c] += aij * dy.flat[qi + c]
                da.flat[dai + j] = dot_at(dy, qi, kv, index[b, j] * 2 * C + C + h * HS, HS)
                ada += aij * da.flat[dai + j]
            # a = softmax(s):  ds[i, j] = a[i, j] (da[i, j] - ada)
            # s = q k^T scale:  dq[i] = sum_j ds[i, j] k[j] scale,  dk[j] += ds[i, j] q[i] scale
            for c in range(HS):
                dq.flat[qi + c] = zero
            for j in range(last + 1):
                kj, dkj = index[b, j] * 2 * C + h * HS, (b * T + j) * 2 * C + h * HS
                ds = a.flat[ai + j] * (da.flat[dai + j] - ada) * scale
                for c in range(HS):
                    dq.flat[qi + c] += ds * kv.flat[kj + c]
                    dkv.flat[dkj + c] += ds * q.flat[qi + c]


def _check_shapes(q: np.ndarray, kv: np.ndarray, index: np.ndarray, n_head: int) -> None:
    """The numba kernels index their arrays at flat offsets, unchecked: shapes that do not fit
    (B, Tq <= T, C = NH HS, kv (Ns, 2C), index (B, T)) must fail here, not read or write beyond
    them."""
    B, Tq, C = q.shape
    if index.ndim != 2 or index.shape[0] != B or not 1 <= Tq <= index.shape[1]:
        raise ValueError(f"attention: index {index.shape} for queries {q.shape}")
    if kv.ndim != 2 or kv.shape[1] != 2 * C or C % n_head:
        raise ValueError(f"attention: kv {kv.shape} for queries {q.shape} and {n_head} heads")


def attention_forward(
    q: np.ndarray, kv: np.ndarray, index: np.ndarray, n_head: int, engine: str
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `attention_forward_ref` for shapes."""
    if engine != "numba":
        return attention_forward_ref(q, kv, index, n_head)
    index = checked_rows(index, len(kv), "attention")
    _check_shapes(q, kv, index, n_head)
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
    index = checked_rows(index, len(kv), "attention")
    _check_shapes(q, kv, index, n_head)
    B, Tq, C = q.shape
    if dy.shape != q.shape or a.shape != (B, n_head, Tq, index.shape[1]):
        raise ValueError(f"attention backward: dy {dy.shape} and a {a.shape} for q {q.shape}")
    scale = q.dtype.type(1.0 / np.sqrt(C // n_head))
    T = index.shape[1]
    dq, dkv = np.empty((B, Tq, C), dtype=q.dtype), np.empty((B, T, 2 * C), q.dtype)
    da = np.empty((B, n_head, T), dtype=q.dtype)  # scratch: one query's da at a time
    q, kv, dy = (np.ascontiguousarray(t) for t in (q, kv, dy))
    _attention_backward_nb(dy, q, kv, np.ascontiguousarray(index), a, n_head, scale, dq, dkv, da)
    return dq, dkv
