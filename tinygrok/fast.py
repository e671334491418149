"""The fast model: the textbook model's logits and gradients (model.py), with less work.

What training and evaluation run. Three facts about the sequences [a, op, b, =] let it skip work
that cannot change a number reaching the loss (tests/test_model.py holds the two models equal in
float64 for every model option):

1. Only the last position reaches the loss. The last block needs keys and values at every
   position, but its query, attention output, MLP, the final norm and the head at the last only.
2. A first-block position's input, wte[token] + wpe[t], depends on its token alone. So the first
   block's layer norm (pre-norm) and query/key/value projection run once per distinct
   (token, position) of the batch (at most p + n_tasks + p + 1 rows against B * T) and are
   gathered for every example.
3. Attention is causal, so positions 0 and 1, [a, op], depend on that prefix alone, in every
   block. Blocks before the last compute them once per distinct prefix (at most n_tasks * p),
   and every example reads its prefix's keys and values, the way a key-value cache shares a
   prompt. The residual stream is held as rows: U * S prefix rows, then B * Tm rows of each
   example's own positions.

Every block runs on "source rows" (the first block: the distinct (token, position) rows; later
blocks: the stream's rows) and a `Gather` that says which source row each query, each prefix key
and each example's key reads; one block function serves all blocks. The backward of a gather
y = src[index] is the scatter-add dsrc[r] = sum of dy over index == r (`layers.scatter_rows`,
in row order).

Shape legend: B batch, T = 4, S = 2 prefix positions, Tm = T - S, U distinct prefixes,
E distinct (token, position) rows, R = U*S + B*Tm stream rows, Ns source rows, Nq query rows,
C d_model, NH heads, P classes of the head.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinygrok import layers as L
from tinygrok.config import EVAL_CHUNK, Config
from tinygrok.kernels import attention
from tinygrok.model import final_norm, numerics
from tinygrok.params import Params

PREFIX = 2  # S: positions [a, op], shared by every example with that prefix


class Gather(NamedTuple):
    """Which source row each row of one block's attention reads."""

    query: np.ndarray | None  # (Nq,) the query rows; None: every source row, in order
    prefix: np.ndarray | None  # (U, S) each prefix's rows; None in the last block
    keys: np.ndarray  # (B, T) each example's rows at every position


class Layout(NamedTuple):
    """A batch's distinct rows and the gathers of its blocks."""

    etok: np.ndarray  # (E,) token of each distinct (token, position) row
    epos: np.ndarray  # (E,) its position
    first: Gather  # the first block's, from the E rows
    later: Gather  # a later block's before the last, from the R stream rows
    last: Gather  # the last block's, from the R stream rows (for 2 layers and more)


def distinct_prefixes(tokens: np.ndarray, n_vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """tokens (B, T) -> first (U,), the first row of each distinct prefix tokens[:, :S], and
    inv (B,), each row's prefix: tokens[first][inv, :S] == tokens[:, :S]."""
    key = tokens[:, :PREFIX] @ (n_vocab ** np.arange(PREFIX - 1, -1, -1))  # (B,) one int each
    _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    return first, inv.reshape(-1)


def layout(tokens: np.ndarray, n_vocab: int, layers: int) -> Layout:
    """tokens (B, T) -> the batch's `Layout`."""
    B, T = tokens.shape
    S, Tm = PREFIX, T - PREFIX
    key = (np.arange(T) * n_vocab + tokens).reshape(-1)  # (B*T,) one int per (token, position)
    uniq, erow = np.unique(key, return_inverse=True)
    epos, etok = np.divmod(uniq, n_vocab)
    erow = erow.reshape(B, T)  # each example's E row at every position
    first, inv = distinct_prefixes(tokens, n_vocab)
    U = len(first)
    if layers == 1:
        first_gather = Gather(erow[:, -1], None, erow)
    else:
        query = np.concatenate([erow[first, :S].reshape(-1), erow[:, S:].reshape(-1)])  # (R,)
        first_gather = Gather(query, erow[first, :S], erow)
    prefix_rows = np.arange(U * S).reshape(U, S)
    own = U * S + np.arange(B * Tm).reshape(B, Tm)  # the stream's own rows of every example
    keys = np.concatenate([prefix_rows[inv], own], axis=1)  # (B, T)
    return Layout(
        etok, epos, first_gather, Gather(None, prefix_rows, keys), Gather(own[:, -1], None, keys)
    )


def _gather(src: np.ndarray, index: np.ndarray | None) -> np.ndarray:
    """src[index], or src itself for None."""
    return src if index is None else src[index]


def _gather_backward(dy: np.ndarray, index: np.ndarray | None, n: int, engine: str) -> np.ndarray:
    """Backward of `_gather` into n source rows."""
    return dy if index is None else L.scatter_rows(dy, index, n, engine)


# ----------------------------------------------------------------------------------------------
# one block on source rows


class BlockCache(NamedTuple):
    gather: Gather
    ln1_in: L.LayerNormCache | None
    h: np.ndarray  # (Ns, C) the attention's input
    hq: np.ndarray | None  # (Nq, C) the query rows of h, when only they are projected to queries
    qp: np.ndarray | None  # (U, S, C) the prefixes' queries; None in the last block
    qm: np.ndarray  # (B, Tq, C) each example's own queries: Tq = Tm, or 1 in the last block
    kv: np.ndarray  # (Ns, 2C) every source row's key and value
    ap: np.ndarray | None  # (U, NH, S, S) the prefixes' attention weights; None with qp
    am: np.ndarray  # (B, NH, Tq, T) the examples' attention weights
    att: np.ndarray  # (Nq, C) the heads' outputs, before W_o
    w_qkv: np.ndarray
    w_o: np.ndarray
    ln1_out: L.LayerNormCache | None
    mlp: L.MLPSublayerCache
    engine: str


def block_forward(
    xs: np.ndarray, p: dict[str, np.ndarray], g: Gather, cfg: Config
) -> tuple[np.ndarray, BlockCache]:
    """One block, p its tensors (`Params.group("blocks.i")`), on source rows xs (Ns, C) -> its
    query rows (Nq, C): the stream rows (R, C) before the last block, each example's last
    position (B, C) in it."""
    NH, engine = cfg.heads, cfg.engine
    p_att, p_ln1 = L.group(p, "attn"), L.group(p, "ln1")
    w, bias = p_att["w_qkv"], p_att["b_qkv"]
    Ns, C = xs.shape
    h, c_in = L.pre_norm(xs, p_ln1, cfg)  # (Ns, C)
    kv = L.affine(h, w[:, C:], bias[C:])  # (Ns, 2C) every source row's key and value
    if g.query is not None and len(g.query) < Ns:
        # fewer query rows than source rows (as in the last block): project only their queries
        hq = h[g.query]  # (Nq, C)
        q = L.affine(hq, w[:, :C], bias[:C])  # (Nq, C)
    else:
        # more (or as many): project every source row, then gather the queries
        hq = None
        q = _gather(L.affine(h, w[:, :C], bias[:C]), g.query)  # (Nq, C)
    B = len(g.keys)
    if g.prefix is None:
        qp = ap = None
        qm = q.reshape(B, 1, C)
        ym, am = attention.attention_forward(qm, kv, g.keys, NH, engine)  # (B, 1, C)
        att = ym.reshape(B, C)
    else:
        U, S = g.prefix.shape
        qp, qm = q[: U * S].reshape(U, S, C), q[U * S :].reshape(B, -1, C)
        yp, ap = attention.attention_forward(qp, kv, g.prefix, NH, engine)  # (U, S, C)
        ym, am = attention.attention_forward(qm, kv, g.keys, NH, engine)  # (B, Tm, C)
        att = np.concatenate([yp.reshape(U * S, C), ym.reshape(-1, C)])  # (R, C)
    # x = ln1(s) (post-norm; else x = s),  s = xs[query] + att @ w_o + b_o  (Nq, C)
    y = L.affine(att, p_att["w_o"], p_att["b_o"])
    x, c_out = L.add_norm(_gather(xs, g.query), y, p_ln1, cfg)
    x, c_mlp = L.mlp_sublayer_forward(x, p, cfg)
    cache = BlockCache(
        g, c_in, h, hq, qp, qm, kv, ap, am, att, w, p_att["w_o"], c_out, c_mlp, engine
    )
    return x, cache


def block_backward(dx: np.ndarray, c: BlockCache) -> tuple[np.ndarray, L.Grads]:
    """dx (Nq, C) -> dxs (Ns, C) and the block's grads, keyed like its tensors."""
    g, e, NH = c.gather, c.engine, c.am.shape[1]
    Ns, C = c.h.shape
    # x = mlp sublayer of x
    dx, g_mlp = L.mlp_sublayer_backward(dx, c.mlp)
    # x = ln1(s) (post-norm; else x = s),  s = xs[query] + att @ w_o + b_o
    ds, g_out = L.norm_backward(dx, c.ln1_out)
    datt, dw_o, db_o = L.affine_backward(ds, c.att, c.w_o)
    # ym = attention(qm, kv[keys]);  yp = attention(qp, kv[prefix]) before the last block
    P = 0 if c.qp is None else c.qp.shape[0] * c.qp.shape[1]
    dqm, dkv_keys = attention.attention_backward(
        datt[P:].reshape(c.qm.shape), c.qm, c.kv, g.keys, c.am, NH, e
    )
    dq = dqm.reshape(-1, C)  # (Nq, C)
    # a source row collects the gradients of the keys and values read from it
    dkv = L.scatter_rows(dkv_keys.reshape(-1, 2 * C), g.keys.reshape(-1), Ns, e)  # (Ns, 2C)
    if c.qp is not None:
        dqp, dkv_p = attention.attention_backward(
            datt[:P].reshape(c.qp.shape), c.qp, c.kv, g.prefix, c.ap, NH, e
        )
        dq = np.concatenate([dqp.reshape(P, C), dq])  # (R, C)
        L.scatter_rows(dkv_p.reshape(-1, 2 * C), g.prefix.reshape(-1), Ns, e, out=dkv)
    # kv = h @ w_kv + b_kv
    dh, dw_kv, db_kv = L.affine_backward(dkv, c.h, c.w_qkv[:, C:])
    if c.hq is not None:
        # q = h[query] @ w_q + b_q: each query row's dh goes to its source row
        dhq, dw_q, db_q = L.affine_backward(dq, c.hq, c.w_qkv[:, :C])
        L.scatter_rows(dhq, g.query, Ns, e, out=dh)
    else:
        # q = (h @ w_q + b_q)[query]
        dq_src = _gather_backward(dq, g.query, Ns, e)  # (Ns, C)
        dhq, dw_q, db_q = L.affine_backward(dq_src, c.h, c.w_qkv[:, :C])
        dh += dhq
    dw, db = np.concatenate([dw_q, dw_kv], axis=1), np.concatenate([db_q, db_kv])
    # h = ln1(xs) (pre-norm; else h = xs)
    dxs, g_in = L.norm_backward(dh, c.ln1_in)
    # s = xs[query] + ...: the residual's ds goes to the source rows as well
    if g.query is None:
        dxs += ds
    else:
        L.scatter_rows(ds, g.query, Ns, e, out=dxs)
    g_att = {"w_qkv": dw, "b_qkv": db, "w_o": dw_o, "b_o": db_o}
    return dxs, L.prefixed("ln1", g_in | g_out) | L.prefixed("attn", g_att) | g_mlp


# ----------------------------------------------------------------------------------------------
# the whole model


class FastCache(NamedTuple):
    layout: Layout
    blocks: list[BlockCache]
    ln_f: L.LayerNormCache | None
    head: L.LinearCache
    n_vocab: int
    n_pos: int
    engine: str


def forward(
    params: Params, tokens: np.ndarray, cfg: Config, keep: bool = True
) -> tuple[np.ndarray, FastCache | None]:
    """tokens (B, T) -> logits (B, P) at the last position, and the cache for `backward` (None
    without `keep`: each block's cache is dropped as soon as the next block has run)."""
    engine = numerics(params, cfg)
    wte, wpe = params["wte"], params["wpe"]
    lay = layout(tokens, wte.shape[0], cfg.layers)
    x = wte[lay.etok] + wpe[lay.epos]  # (E, C) the first block's source rows
    blocks = []
    for i in range(cfg.layers):
        g = lay.first if i == 0 else (lay.last if i == cfg.layers - 1 else lay.later)
        x, c = block_forward(x, params.group(f"blocks.{i}"), g, cfg)  # (R, C), then (B, C)
        if keep:
            blocks.append(c)
    h, c_lnf = final_norm(x, params, cfg)  # (B, C)
    logits, c_head = L.linear_forward(h, params.group("head"))  # (B, P)
    if not keep:
        return logits, None
    return logits, FastCache(lay, blocks, c_lnf, c_head, wte.shape[0], wpe.shape[0], engine)


def backward(dlogits: np.ndarray, cache: FastCache) -> L.Grads:
    """dlogits (B, P) -> every parameter's gradient, keyed like the table."""
    lay, e = cache.layout, cache.engine
    # logits = h @ head.w + head.b
    dh, g_head = L.linear_backward(dlogits, cache.head)
    # h = ln_f(x) (with a final norm; else h = x)
    dx, g_lnf = L.norm_backward(dh, cache.ln_f)
    grads = L.prefixed("head", g_head) | L.prefixed("ln_f", g_lnf)
    for i in reversed(range(len(cache.blocks))):
        dx, g = block_backward(dx, cache.blocks[i])  # into the block's source rows
        grads |= L.prefixed(f"blocks.{i}", g)
    # x = wte[etok] + wpe[epos]
    grads["wte"] = L.scatter_rows(dx, lay.etok, cache.n_vocab, e)
    grads["wpe"] = L.scatter_rows(dx, lay.epos, cache.n_pos, e)
    return grads


def logits(params: Params, tokens: np.ndarray, cfg: Config) -> np.ndarray:
    """tokens (B, T) -> logits (B, P), keeping no caches: what evaluation runs."""
    return forward(params, tokens, cfg, keep=False)[0]


def loss_and_grads(
    params: Params, tokens: np.ndarray, targets: np.ndarray, cfg: Config, grads: Params
) -> float:
    """Mean cross-entropy of a batch (tokens (B, T), targets (B,)); every gradient goes into
    `grads`."""
    z, cache = forward(params, tokens, cfg)
    loss, c_ce = L.cross_entropy_forward(z, targets, cfg.engine, cfg.loss_dtype)
    dlogits, _ = L.cross_entropy_backward(1.0, c_ce)
    grads.set_grads(backward(dlogits, cache))
    return loss


def evaluate(
    params: Params, x: np.ndarray, y: np.ndarray, cfg: Config, chunk: int = EVAL_CHUNK
) -> tuple[float, float]:
    """Mean loss and accuracy over a whole set (x (N, T), y (N,)), in chunks: flat memory."""
    loss_sum, correct = 0.0, 0
    for s in range(0, len(y), chunk):
        z = logits(params, x[s : s + chunk], cfg)  # (n, P)
        loss, _ = L.cross_entropy_forward(z, y[s : s + chunk], cfg.engine, cfg.loss_dtype)
        loss_sum += loss * len(z)
        correct += int((z.argmax(axis=1) == y[s : s + chunk]).sum())
    return loss_sum / len(y), correct / len(y)
