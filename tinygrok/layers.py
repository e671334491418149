"""The transformer's layers, each a pair of pure functions:

    forward(x, weights...)  -> (out, cache)
    backward(dout, cache)   -> (dx, dweights...)

Nothing is stored between calls; the cache holds what the backward needs. The backward repeats,
in a comment, the forward line it differentiates.

The math (rows are examples or positions; the kernel files state the rest of it):

    embedding   x[b, t] = wte[tok[b, t]] + wpe[t]
                dwte[v] = sum of dx[b, t] over tok[b, t] = v,    dwpe[t] = sum_b dx[b, t]
    linear      y = x W + b
                dx = dy W^T,    dW = x^T dy,    db = sum_rows dy
    layer norm  y = (x - mean x) / sqrt(var x + eps) * w + b        (kernels/layernorm.py)
    attention   [q, k, v] = x W_qkv + b_qkv,    y = attn(q, k, v) W_o + b_o,
                attn = softmax(q k^T / sqrt(HS) + causal mask) v per head  (kernels/attention.py)
                backward: the linear rule through W_o, the kernel's backward, the linear rule
                through W_qkv; x feeds q, k and v, so dx is the sum of the three
    MLP         y = act(x W_fc + b_fc) W_proj + b_proj           (kernels/activation.py)
                backward: the linear rule, act'(pre) elementwise, the linear rule
    loss        mean_n -log softmax(z_n)[y_n],  dz = (softmax(z) - onehot(y)) / N
                                                                   (kernels/crossentropy.py)

Shape legend: B batch, T sequence length (4), Tq positions that are queried (T, or 1 in the last
layer, where only the last position reaches the loss), C channels (d_model), NH heads,
F MLP width, V vocabulary, P answer classes.
"""

from __future__ import annotations

import numpy as np

from tinygrok.kernels.activation import bias_act_backward, bias_act_forward
from tinygrok.kernels.attention import attention_backward, attention_forward
from tinygrok.kernels.crossentropy import cross_entropy_backward, cross_entropy_forward
from tinygrok.kernels.embedding import embedding_backward as embedding_backward_kernel
from tinygrok.kernels.layernorm import layernorm_backward, layernorm_forward

# ----------------------------------------------------------------------------------------------
# token and position embedding


def embedding_forward(tokens: np.ndarray, wte: np.ndarray, wpe: np.ndarray) -> np.ndarray:
    """tokens (B, T) ints, wte (V, C), wpe (T, C) -> x (B, T, C) = wte[tokens] + wpe."""
    return wte[tokens] + wpe


def embedding_backward(
    dx: np.ndarray, tokens: np.ndarray, n_vocab: int, engine: str
) -> tuple[np.ndarray, np.ndarray]:
    """dx (B, T, C) -> dwte (V, C), dwpe (T, C)."""
    # x = wte[tokens] + wpe: every use of a token row adds its dx into that row
    return embedding_backward_kernel(dx, tokens, n_vocab, engine)


# ----------------------------------------------------------------------------------------------
# layer norm


def layernorm(x: np.ndarray, w: np.ndarray, b: np.ndarray, engine: str) -> tuple[np.ndarray, tuple]:
    """x (..., C), w and b (C,) -> y (..., C), cache."""
    x2 = np.ascontiguousarray(x).reshape(-1, x.shape[-1])  # (N, C)
    y, mean, rstd = layernorm_forward(x2, w, b, engine)
    return y.reshape(x.shape), (x2, w, mean, rstd, x.shape)


def layernorm_back(dy: np.ndarray, cache: tuple, engine: str) -> tuple[np.ndarray, ...]:
    """dy (..., C) -> dx (..., C), dw (C,), db (C,)."""
    x2, w, mean, rstd, shape = cache
    dx, dw, db = layernorm_backward(dy.reshape(x2.shape), x2, w, mean, rstd, engine)
    return dx.reshape(shape), dw, db


# ----------------------------------------------------------------------------------------------
# linear map


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x (N, Cin), w (Cin, Cout), b (Cout,) -> (N, Cout)."""
    y = x @ w
    y += b  # in place: no second (N, Cout) temporary
    return y


def linear_backward(
    dy: np.ndarray, x: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dy (N, Cout), the forward's x (N, Cin) and w -> dx (N, Cin), dw (Cin, Cout), db (Cout,)."""
    # y = x @ w + b
    return dy @ w.T, x.T @ dy, dy.sum(axis=0)


# ----------------------------------------------------------------------------------------------
# causal self-attention with its projections


def attention(
    x: np.ndarray,
    w_qkv: np.ndarray,
    b_qkv: np.ndarray,
    w_o: np.ndarray,
    b_o: np.ndarray,
    n_head: int,
    q_last: bool,
    engine: str,
) -> tuple[np.ndarray, tuple]:
    """x (B, T, C), w_qkv (C, 3C), b_qkv (3C,), w_o (C, C), b_o (C,) -> y (B, Tq, C), cache.

    With `q_last` only the last position is queried (Tq = 1): its query is projected alone, the
    keys and values of every position are still needed.
    """
    B, T, C = x.shape
    x2 = x.reshape(B * T, C)
    if q_last:
        xq = np.ascontiguousarray(x[:, -1])  # (B, C)
        q = linear_forward(xq, w_qkv[:, :C], b_qkv[:C]).reshape(B, 1, C)  # (B, 1, C)
        kv = linear_forward(x2, w_qkv[:, C:], b_qkv[C:]).reshape(B, T, 2 * C)  # (B, T, 2C)
        k, v = kv[..., :C], kv[..., C:]
    else:
        xq = x2
        qkv = linear_forward(x2, w_qkv, b_qkv).reshape(B, T, 3 * C)  # (B, T, 3C)
        q, k, v = qkv[..., :C], qkv[..., C : 2 * C], qkv[..., 2 * C :]
    # one copy each: the attention kernels run about twice as fast on contiguous rows
    q, k, v = (np.ascontiguousarray(t) for t in (q, k, v))
    att_y, a = attention_forward(q, k, v, n_head, engine)  # (B, Tq, C), (B, NH, Tq, T)
    Tq = q.shape[1]
    att_y2 = att_y.reshape(B * Tq, C)
    y = linear_forward(att_y2, w_o, b_o).reshape(B, Tq, C)  # (B, Tq, C)
    return y, (x2, xq, q, k, v, a, att_y2, w_qkv, w_o, n_head, q_last, (B, T, C))


def attention_back(dy: np.ndarray, cache: tuple, engine: str) -> tuple[np.ndarray, ...]:
    """dy (B, Tq, C) -> dx (B, T, C), dw_qkv (C, 3C), db_qkv (3C,), dw_o (C, C), db_o (C,)."""
    x2, xq, q, k, v, a, att_y2, w_qkv, w_o, n_head, q_last, (B, T, C) = cache
    Tq = q.shape[1]
    # y = att_y @ w_o + b_o
    datt_y, dw_o, db_o = linear_backward(dy.reshape(B * Tq, C), att_y2, w_o)
    # att_y, a = attention(q, k, v)
    dq, dk, dv = attention_backward(datt_y.reshape(B, Tq, C), q, k, v, a, n_head, engine)
    if q_last:
        # kv = x @ w_qkv[:, C:] + b_qkv[C:];  q = x[:, -1] @ w_qkv[:, :C] + b_qkv[:C]
        dkv = np.concatenate([dk, dv], axis=-1).reshape(B * T, 2 * C)  # (B*T, 2C)
        dx2, dw_kv, db_kv = linear_backward(dkv, x2, w_qkv[:, C:])
        dxq, dw_q, db_q = linear_backward(dq.reshape(B, C), xq, w_qkv[:, :C])
        dx = dx2.reshape(B, T, C)
        dx[:, -1] += dxq
        dw_qkv = np.concatenate([dw_q, dw_kv], axis=1)
        db_qkv = np.concatenate([db_q, db_kv])
    else:
        # qkv = x @ w_qkv + b_qkv
        dqkv = np.concatenate([dq, dk, dv], axis=-1).reshape(B * T, 3 * C)  # (B*T, 3C)
        dx2, dw_qkv, db_qkv = linear_backward(dqkv, x2, w_qkv)
        dx = dx2.reshape(B, T, C)
    return dx, dw_qkv, db_qkv, dw_o, db_o


def attention_shared(
    x: np.ndarray,
    w_qkv: np.ndarray,
    b_qkv: np.ndarray,
    w_o: np.ndarray,
    b_o: np.ndarray,
    n_head: int,
    prefix_shape: tuple[int, int],
    inv: np.ndarray,
    engine: str,
) -> tuple[np.ndarray, tuple]:
    """Attention over sequences that share prefixes, each prefix's positions computed once.

    x (R, C) holds U*S prefix rows (U distinct prefixes of S positions, `prefix_shape` = (U, S)),
    then B*Tm rows (the other Tm positions of each of B sequences, row-major); inv (B,) gives each
    sequence's prefix. -> y (R, C) in the same rows, cache. Each prefix attends within itself; each
    sequence's own positions attend to its prefix's keys and values, then to their own: causal
    attention over every whole sequence, as `attention` computes it.
    """
    (U, S), C = prefix_shape, x.shape[1]
    P = U * S
    B = len(inv)
    qkv = linear_forward(x, w_qkv, b_qkv)  # (R, 3C)

    def split(t: np.ndarray, rows: tuple[int, int]) -> list[np.ndarray]:
        t = t.reshape(*rows, 3 * C)
        return [np.ascontiguousarray(t[..., j * C : (j + 1) * C]) for j in range(3)]

    qp, kp, vp = split(qkv[:P], (U, S))  # (U, S, C) each
    qm, km, vm = split(qkv[P:], (B, -1))  # (B, Tm, C) each
    kf = np.concatenate([kp[inv], km], axis=1)  # (B, T, C): the prefix's keys, then its own
    vf = np.concatenate([vp[inv], vm], axis=1)
    yp, ap = attention_forward(qp, kp, vp, n_head, engine)  # (U, S, C)
    ym, am = attention_forward(qm, kf, vf, n_head, engine)  # (B, Tm, C)
    att = np.concatenate([yp.reshape(P, C), ym.reshape(-1, C)])  # (R, C)
    y = linear_forward(att, w_o, b_o)
    return y, (x, qp, kp, vp, ap, qm, kf, vf, am, att, w_qkv, w_o, n_head, inv)


def attention_shared_back(dy: np.ndarray, cache: tuple, engine: str) -> tuple[np.ndarray, ...]:
    """dy (R, C) -> dx (R, C), dw_qkv (C, 3C), db_qkv (3C,), dw_o (C, C), db_o (C,)."""
    x, qp, kp, vp, ap, qm, kf, vf, am, att, w_qkv, w_o, n_head, inv = cache
    U, S, C = qp.shape
    P = U * S
    # y = att @ w_o + b_o
    datt, dw_o, db_o = linear_backward(dy, att, w_o)
    # yp = attn(qp, kp, vp);  ym = attn(qm, kf, vf)
    dqp, dkp, dvp = attention_backward(datt[:P].reshape(qp.shape), qp, kp, vp, ap, n_head, engine)
    dqm, dkf, dvf = attention_backward(datt[P:].reshape(qm.shape), qm, kf, vf, am, n_head, engine)
    # kf = [kp[inv], km]: a prefix's keys and values collect the gradients of all its sequences
    dkp += scatter_rows(dkf[:, :S], inv, U, engine)
    dvp += scatter_rows(dvf[:, :S], inv, U, engine)
    # qkv = x @ w_qkv + b_qkv, in the rows of x
    dqkv = np.concatenate(
        [
            np.concatenate([dqp, dkp, dvp], axis=-1).reshape(P, 3 * C),
            np.concatenate([dqm, dkf[:, S:], dvf[:, S:]], axis=-1).reshape(-1, 3 * C),
        ]
    )  # (R, 3C)
    dx, dw_qkv, db_qkv = linear_backward(dqkv, x, w_qkv)
    return dx, dw_qkv, db_qkv, dw_o, db_o


# ----------------------------------------------------------------------------------------------
# gathering rows: y = table[index], and its backward


def scatter_rows(dy: np.ndarray, index: np.ndarray, n: int, engine: str) -> np.ndarray:
    """dy (B, ...) and index (B,) into n rows -> dtable (n, ...), the backward of table[index]:
    each table row sums the dy rows that read it. The embedding's scatter-add does the work."""
    B = len(index)
    dtable, _ = embedding_backward_kernel(dy.reshape(B, 1, -1), index[:, None], n, engine)
    return dtable.reshape(n, *dy.shape[1:])


# ----------------------------------------------------------------------------------------------
# MLP


def mlp(
    x: np.ndarray,
    w_fc: np.ndarray,
    b_fc: np.ndarray,
    w_proj: np.ndarray,
    b_proj: np.ndarray,
    act: str,
    engine: str,
) -> tuple[np.ndarray, tuple]:
    """x (N, C), w_fc (C, F), b_fc (F,), w_proj (F, C), b_proj (C,) -> y (N, C), cache."""
    h = x @ w_fc  # (N, F)
    pre, hact = bias_act_forward(h, b_fc, act, engine)  # (N, F), (N, F)
    y = linear_forward(hact, w_proj, b_proj)  # (N, C)
    return y, (x, pre, hact, w_fc, w_proj, act)


def mlp_back(dy: np.ndarray, cache: tuple, engine: str) -> tuple[np.ndarray, ...]:
    """dy (N, C) -> dx (N, C), dw_fc (C, F), db_fc (F,), dw_proj (F, C), db_proj (C,)."""
    x, pre, hact, w_fc, w_proj, act = cache
    # y = hact @ w_proj + b_proj
    dhact, dw_proj, db_proj = linear_backward(dy, hact, w_proj)
    # hact = act(h + b_fc)
    dpre = bias_act_backward(dhact, pre, act, engine)  # (N, F)
    # h = x @ w_fc
    dx, dw_fc, db_fc = linear_backward(dpre, x, w_fc)
    return dx, dw_fc, db_fc, dw_proj, db_proj


# ----------------------------------------------------------------------------------------------
# softmax cross-entropy


def cross_entropy(logits: np.ndarray, targets: np.ndarray, engine: str) -> tuple[float, tuple]:
    """logits (N, P), targets (N,) -> mean loss (float64), cache."""
    loss, probs = cross_entropy_forward(logits, targets, engine)
    return float(loss.mean()), (probs, targets, logits.dtype)


def cross_entropy_back(cache: tuple, engine: str) -> np.ndarray:
    """-> dlogits (N, P), the gradient of the mean loss."""
    probs, targets, dtype = cache
    return cross_entropy_backward(probs, targets, dtype, engine)
