"""The transformer's layers, each a pair of pure functions with one contract:

    X_forward(x, p, ...)    -> (out, cache)
    X_backward(dout, cache) -> (dx, grads)

`p` is the layer's slice of the parameter table (`Params.group`: {"w_qkv": ..., "b_qkv": ...}),
`grads` a dict with the same keys, `cache` a NamedTuple holding what the backward needs (the
engine included, so a backward runs on the engine its forward ran on). Nothing is stored between
calls. Each backward repeats, in a comment, the forward line it differentiates.

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

Two sublayers put the norms around a branch f (attention or MLP) as the config says:
pre-norm x + f(ln(x)) (GPT-2), post-norm ln(x + f(x)) (the original Transformer); without
--layer-norm every norm is the identity.

Shape legend: B batch, T sequence length (4), C channels (d_model), NH heads, F MLP width,
V vocabulary, P answer classes, N rows (any number of positions).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinygrok.config import Config
from tinygrok.kernels import activation, attention, crossentropy, embedding, layernorm

Grads = dict[str, np.ndarray]

# ----------------------------------------------------------------------------------------------
# token and position embedding


class EmbeddingCache(NamedTuple):
    tokens: np.ndarray  # (B, T) ints
    n_vocab: int
    engine: str


def embedding_forward(
    tokens: np.ndarray, p: dict[str, np.ndarray], engine: str
) -> tuple[np.ndarray, EmbeddingCache]:
    """tokens (B, T) ints, p {wte (V, C), wpe (T, C)} -> x (B, T, C) = wte[tokens] + wpe."""
    x = p["wte"][tokens] + p["wpe"]  # (B, T, C)
    return x, EmbeddingCache(tokens, p["wte"].shape[0], engine)


def embedding_backward(dx: np.ndarray, cache: EmbeddingCache) -> tuple[None, Grads]:
    """dx (B, T, C) -> (None: tokens have no gradient, {wte (V, C), wpe (T, C)})."""
    # x = wte[tokens] + wpe: every use of a token row adds its dx into that row
    dwte, dwpe = embedding.embedding_backward(dx, cache.tokens, cache.n_vocab, cache.engine)
    return None, {"wte": dwte, "wpe": dwpe}


def scatter_rows(
    dy: np.ndarray, index: np.ndarray, n: int, engine: str, out: np.ndarray | None = None
) -> np.ndarray:
    """dy (M, ...) and index (M,) into n rows -> dtable (n, ...), the backward of table[index]:
    each table row sums the dy rows that read it (in row order); given a C-contiguous `out`
    (n, ...), the sums are added into it instead."""
    if out is not None and (out.shape != (n, *dy.shape[1:]) or not out.flags.c_contiguous):
        # reshaping such an out would copy it, and the sums would be lost with the copy
        raise ValueError(f"scatter: out {out.shape} for {n} rows of {dy.shape[1:]}")
    flat_out = None if out is None else out.reshape(n, -1)
    dtable = embedding.scatter_add_rows(dy.reshape(len(index), -1), index, n, engine, flat_out)
    return dtable.reshape(n, *dy.shape[1:])


# ----------------------------------------------------------------------------------------------
# layer norm


class LayerNormCache(NamedTuple):
    x: np.ndarray  # (N, C) the input, as rows
    w: np.ndarray  # (C,)
    mean: np.ndarray  # (N,)
    rstd: np.ndarray  # (N,)
    shape: tuple[int, ...]  # the input's shape
    engine: str


def layernorm_forward(
    x: np.ndarray, p: dict[str, np.ndarray], engine: str
) -> tuple[np.ndarray, LayerNormCache]:
    """x (..., C), p {w (C,), b (C,)} -> y (..., C)."""
    x2 = np.ascontiguousarray(x).reshape(-1, x.shape[-1])  # (N, C)
    y, mean, rstd = layernorm.layernorm_forward(x2, p["w"], p["b"], engine)
    return y.reshape(x.shape), LayerNormCache(x2, p["w"], mean, rstd, x.shape, engine)


def layernorm_backward(dy: np.ndarray, cache: LayerNormCache) -> tuple[np.ndarray, Grads]:
    """dy (..., C) -> dx (..., C), {w (C,), b (C,)}."""
    c = cache
    dy2 = np.ascontiguousarray(dy).reshape(c.x.shape)
    dx, dw, db = layernorm.layernorm_backward(dy2, c.x, c.w, c.mean, c.rstd, c.engine)
    return dx.reshape(c.shape), {"w": dw, "b": db}


# ----------------------------------------------------------------------------------------------
# linear map


def matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x (N, Cin) @ w (Cin, Cout): a product whose bias a kernel after it adds (the MLP's)."""
    return x @ w


def affine(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x (N, Cin), w (Cin, Cout), b (Cout,) -> x w + b (N, Cout)."""
    y = x @ w
    y += b  # in place: no second (N, Cout) temporary
    return y


def affine_backward(
    dy: np.ndarray, x: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dy (N, Cout), the forward's x (N, Cin) and w -> dx (N, Cin), dw (Cin, Cout), db (Cout,)."""
    # y = x @ w + b
    return dy @ w.T, x.T @ dy, dy.sum(axis=0)


class LinearCache(NamedTuple):
    x: np.ndarray  # (N, Cin)
    w: np.ndarray  # (Cin, Cout)


def linear_forward(x: np.ndarray, p: dict[str, np.ndarray]) -> tuple[np.ndarray, LinearCache]:
    """x (N, Cin), p {w (Cin, Cout), b (Cout,)} -> y (N, Cout) = x w + b."""
    return affine(x, p["w"], p["b"]), LinearCache(x, p["w"])


def linear_backward(dy: np.ndarray, cache: LinearCache) -> tuple[np.ndarray, Grads]:
    """dy (N, Cout) -> dx (N, Cin), {w (Cin, Cout), b (Cout,)}."""
    dx, dw, db = affine_backward(dy, cache.x, cache.w)
    return dx, {"w": dw, "b": db}


# ----------------------------------------------------------------------------------------------
# causal self-attention with its projections


class AttentionCache(NamedTuple):
    x: np.ndarray  # (B*T, C) the input, as rows
    q: np.ndarray  # (B, T, C)
    kv: np.ndarray  # (B*T, 2C) every row's key and value
    index: np.ndarray  # (B, T) example b's rows: b T + t
    a: np.ndarray  # (B, NH, T, T) attention weights
    att: np.ndarray  # (B*T, C) the heads' outputs, before W_o
    w_qkv: np.ndarray
    w_o: np.ndarray
    n_head: int
    engine: str


def attention_forward(
    x: np.ndarray, p: dict[str, np.ndarray], n_head: int, engine: str
) -> tuple[np.ndarray, AttentionCache]:
    """x (B, T, C), p {w_qkv (C, 3C), b_qkv (3C,), w_o (C, C), b_o (C,)} -> y (B, T, C)."""
    B, T, C = x.shape
    x2 = x.reshape(B * T, C)
    qkv = affine(x2, p["w_qkv"], p["b_qkv"])  # (B*T, 3C)
    # contiguous copies: the attention kernels run about twice as fast on contiguous rows
    q = np.ascontiguousarray(qkv[:, :C]).reshape(B, T, C)
    kv = np.ascontiguousarray(qkv[:, C:])  # (B*T, 2C)
    index = np.arange(B * T).reshape(B, T)  # each example reads its own rows
    att, a = attention.attention_forward(q, kv, index, n_head, engine)  # (B, T, C), (B, NH, T, T)
    att2 = att.reshape(B * T, C)
    y = affine(att2, p["w_o"], p["b_o"]).reshape(B, T, C)
    return y, AttentionCache(x2, q, kv, index, a, att2, p["w_qkv"], p["w_o"], n_head, engine)


def attention_backward(dy: np.ndarray, cache: AttentionCache) -> tuple[np.ndarray, Grads]:
    """dy (B, T, C) -> dx (B, T, C), {w_qkv, b_qkv, w_o, b_o}."""
    c = cache
    B, T, C = c.q.shape
    # y = att @ w_o + b_o
    datt, dw_o, db_o = affine_backward(dy.reshape(B * T, C), c.att, c.w_o)
    # att, a = attention(q, kv[index])
    dq, dkv = attention.attention_backward(
        datt.reshape(B, T, C), c.q, c.kv, c.index, c.a, c.n_head, c.engine
    )
    # qkv = x @ w_qkv + b_qkv (the index is the identity: no scatter)
    dqkv = np.concatenate([dq, dkv], axis=-1).reshape(B * T, 3 * C)  # (B*T, 3C)
    dx, dw_qkv, db_qkv = affine_backward(dqkv, c.x, c.w_qkv)
    return dx.reshape(B, T, C), {"w_qkv": dw_qkv, "b_qkv": db_qkv, "w_o": dw_o, "b_o": db_o}


# ----------------------------------------------------------------------------------------------
# MLP


class MLPCache(NamedTuple):
    x: np.ndarray  # (N, C)
    saved: np.ndarray  # (N, F) what act's backward reads: hact for ReLU, pre for GELU
    hact: np.ndarray  # (N, F) act(pre),  pre = x w_fc + b_fc
    w_fc: np.ndarray
    w_proj: np.ndarray
    act: str
    engine: str


def mlp_forward(
    x: np.ndarray, p: dict[str, np.ndarray], act: str, engine: str
) -> tuple[np.ndarray, MLPCache]:
    """x (N, C), p {w_fc (C, F), b_fc (F,), w_proj (F, C), b_proj (C,)} -> y (N, C)."""
    h = matmul(x, p["w_fc"])  # (N, F)
    hact, saved = activation.bias_act_forward(h, p["b_fc"], act, engine)  # in h's memory
    y = affine(hact, p["w_proj"], p["b_proj"])  # (N, C)
    return y, MLPCache(x, saved, hact, p["w_fc"], p["w_proj"], act, engine)


def mlp_backward(dy: np.ndarray, cache: MLPCache) -> tuple[np.ndarray, Grads]:
    """dy (N, C) -> dx (N, C), {w_fc, b_fc, w_proj, b_proj}."""
    c = cache
    # y = hact @ w_proj + b_proj
    dhact, dw_proj, db_proj = affine_backward(dy, c.hact, c.w_proj)
    # hact = act(x @ w_fc + b_fc)
    dpre = activation.bias_act_backward(dhact, c.saved, c.act, c.engine)  # in dhact's memory
    dx, dw_fc, db_fc = affine_backward(dpre, c.x, c.w_fc)
    return dx, {"w_fc": dw_fc, "b_fc": db_fc, "w_proj": dw_proj, "b_proj": db_proj}


# ----------------------------------------------------------------------------------------------
# the norms around a branch, and the MLP sublayer


def group(p: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The tensors of p under `prefix.`, named without it: group(p, "ln2") -> {"w": ..., "b": ...};
    {} when there are none (a norm without --layer-norm)."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in p.items() if k.startswith(prefix + ".")}


def pre_norm(
    x: np.ndarray, p: dict[str, np.ndarray], cfg: Config
) -> tuple[np.ndarray, LayerNormCache | None]:
    """A branch's input: ln(x) in pre-norm blocks (x + f(ln(x))), x itself elsewhere (cache
    None). Post-norm blocks norm the sum instead (`add_norm`)."""
    if cfg.layer_norm and cfg.norm == "pre":
        return layernorm_forward(x, p, cfg.engine)
    return x, None


def add_norm(
    x: np.ndarray, y: np.ndarray, p: dict[str, np.ndarray], cfg: Config
) -> tuple[np.ndarray, LayerNormCache | None]:
    """The residual sum s = x + y (..., C), then ln(s) in post-norm blocks (the original
    Transformer's "Add & Norm"), s itself elsewhere (cache None). y, a branch's fresh
    (contiguous) output, is overwritten with s: the sum and the norm are one pass over the rows,
    with no third array."""
    if cfg.layer_norm and cfg.norm == "post":
        assert y.flags.c_contiguous, "add_norm writes the sum over y, which must be contiguous"
        C = y.shape[-1]
        s = y.reshape(-1, C)  # (N, C) a view of y: the kernel writes the sum there
        x2 = np.ascontiguousarray(x).reshape(-1, C)
        out, mean, rstd = layernorm.add_layernorm_forward(x2, s, p["w"], p["b"], cfg.engine)
        return out.reshape(y.shape), LayerNormCache(s, p["w"], mean, rstd, y.shape, cfg.engine)
    y += x
    return y, None


def norm_backward(dy: np.ndarray, cache: LayerNormCache | None) -> tuple[np.ndarray, Grads]:
    """Backward of `pre_norm`'s or `add_norm`'s norm: the identity's when the cache is None."""
    return (dy, {}) if cache is None else layernorm_backward(dy, cache)


class MLPSublayerCache(NamedTuple):
    ln_in: LayerNormCache | None
    mlp: MLPCache
    ln_out: LayerNormCache | None


def mlp_sublayer_forward(
    x: np.ndarray, p: dict[str, np.ndarray], cfg: Config
) -> tuple[np.ndarray, MLPSublayerCache]:
    """x (N, C), p a block's tensors (it reads "ln2.*" and "mlp.*") -> x + mlp(ln2(x))
    (pre-norm) or ln2(x + mlp(x)) (post-norm) (N, C)."""
    p_ln = group(p, "ln2")
    h, c_in = pre_norm(x, p_ln, cfg)
    m, c_mlp = mlp_forward(h, group(p, "mlp"), cfg.activation, cfg.engine)
    y, c_out = add_norm(x, m, p_ln, cfg)
    return y, MLPSublayerCache(c_in, c_mlp, c_out)


def mlp_sublayer_backward(dy: np.ndarray, cache: MLPSublayerCache) -> tuple[np.ndarray, Grads]:
    """dy (N, C) -> dx (N, C), {"ln2.w", "ln2.b" (with a norm), "mlp.w_fc", ...}.

    One of the two norm caches is None (the identity), so one backward serves both placements."""
    # y = ln2(s) (post-norm; else y = s),  s = x + mlp(h)
    ds, g_out = norm_backward(dy, cache.ln_out)
    dh, g_mlp = mlp_backward(ds, cache.mlp)
    # h = ln2(x) (pre-norm; else h = x)
    dx, g_in = norm_backward(dh, cache.ln_in)
    return ds + dx, prefixed("ln2", g_in | g_out) | prefixed("mlp", g_mlp)


def prefixed(prefix: str, grads: Grads) -> Grads:
    """A layer's grads {"w": ...} under its table names {"prefix.w": ...}."""
    return {f"{prefix}.{k}": g for k, g in grads.items()}


# ----------------------------------------------------------------------------------------------
# softmax cross-entropy


class CrossEntropyCache(NamedTuple):
    probs: np.ndarray  # (N, P) in the loss's dtype
    targets: np.ndarray  # (N,)
    dtype: np.dtype  # the logits'
    engine: str


def cross_entropy_forward(
    logits: np.ndarray, targets: np.ndarray, engine: str, loss_dtype: str = "float64"
) -> tuple[float, CrossEntropyCache]:
    """logits (N, P), targets (N,) -> mean loss, computed in `loss_dtype` (the config's: float64,
    exact; float32, rounded as PyTorch's float32 loss is; kernels/crossentropy.py)."""
    work = np.dtype(loss_dtype).type
    loss, probs = crossentropy.cross_entropy_forward(logits, targets, engine, work)
    return float(loss.mean()), CrossEntropyCache(probs, targets, logits.dtype, engine)


def cross_entropy_backward(dloss: float, cache: CrossEntropyCache) -> tuple[np.ndarray, Grads]:
    """dloss (the loss's own gradient, 1.0 for a loss) -> dlogits (N, P), {} (no parameters)."""
    c = cache
    dlogits = crossentropy.cross_entropy_backward(c.probs, c.targets, c.dtype, c.engine)
    if dloss != 1.0:
        dlogits *= c.dtype.type(dloss)
    return dlogits, {}
