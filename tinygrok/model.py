"""The textbook model: the whole forward and backward, every position computed.

A decoder-only transformer (GPT-2 shape): token + learned position embedding, `layers` blocks of

    x = x + attention(ln1(x))      causal self-attention, NH heads
    x = x + mlp(ln2(x))            C -> F -> C with GELU or ReLU

(pre-norm; post-norm blocks are x = ln1(x + attention(x)), x = ln2(x + mlp(x))), then a final
layer norm and an untied unembedding to the P answer classes (or the V tokens), read at the last
position. With `layer_norm=False` every layer norm is the identity.

    x_0    = wte[tokens] + wpe                                   (B, T, C)
    logits = ln_f(x_L) head.w + head.b                           (B, T, P), the loss reads [:, -1]
    loss   = mean_b -log softmax(logits_b)[target_b]

Every block computes every position of every example, as a transformer is usually written: this
file is the reference. `fast.py` computes the same logits and gradients with less work (the
tests hold the two equal in float64), and is what training and evaluation run.

The backward runs the blocks in reverse. A residual x_out = x + f(x) passes its gradient both
ways: dx = dx_out + (df/dx)^T dx_out, so each branch's backward adds its dx to the stream's.
Each layer's own rule is in layers.py and the kernels.

The parameters (params.py) are one flat vector with named views in the shapes of the parameter
table; the layers read named tensors, and gradients come back as a dict keyed like the table.

Shape legend: B batch, T = 4 positions, C d_model, F d_mlp, V vocabulary, P classes of the head.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinygrok import layers as L
from tinygrok.config import ENGINES, Config
from tinygrok.params import Params


def numerics(params: Params, cfg: Config) -> str:
    """The engine that `cfg` names, after checking that the parameters are in its dtype. Engine
    and dtype come from the config alone: no model, optimizer, gradient filter or gradient check
    takes them as arguments, and the layers' backward passes read the engine from their caches."""
    if cfg.engine not in ENGINES:  # the kernels run NumPy for any name but "numba"
        raise ValueError(f"engine {cfg.engine!r}: must be one of {', '.join(ENGINES)}")
    if params.flat.dtype != np.dtype(cfg.dtype):
        raise ValueError(f"parameters are {params.flat.dtype}, the config says {cfg.dtype}")
    return cfg.engine


class BlockCache(NamedTuple):
    ln1_in: L.LayerNormCache | None  # pre-norm: h = ln1(x)
    attn: L.AttentionCache
    ln1_out: L.LayerNormCache | None  # post-norm: x = ln1(x + a)
    mlp: L.MLPSublayerCache


class ModelCache(NamedTuple):
    embedding: L.EmbeddingCache
    blocks: list[BlockCache]
    ln_f: L.LayerNormCache | None
    head: L.LinearCache
    shape: tuple[int, int, int]  # (B, T, P) of every position's logits


def block_forward(
    x: np.ndarray, p: dict[str, np.ndarray], cfg: Config
) -> tuple[np.ndarray, BlockCache]:
    """One block, p its tensors (`Params.group("blocks.i")`), on x (B, T, C) -> (B, T, C)."""
    B, T, C = x.shape
    p_ln1 = L.group(p, "ln1")
    h, c_in = L.pre_norm(x, p_ln1, cfg)
    a, c_att = L.attention_forward(h, L.group(p, "attn"), cfg.heads, cfg.engine)  # (B, T, C)
    x, c_out = L.add_norm(x, a, p_ln1, cfg)  # ln1(x + a) post-norm, else x + a
    x, c_mlp = L.mlp_sublayer_forward(x.reshape(B * T, C), p, cfg)
    return x.reshape(B, T, C), BlockCache(c_in, c_att, c_out, c_mlp)


def block_backward(dx: np.ndarray, cache: BlockCache) -> tuple[np.ndarray, L.Grads]:
    """dx (B, T, C) -> dx (B, T, C) and the block's grads, keyed like its tensors."""
    B, T, C = dx.shape
    # x = mlp sublayer of x
    dx, g_mlp = L.mlp_sublayer_backward(dx.reshape(B * T, C), cache.mlp)
    # x = ln1(s) (post-norm; else x = s),  s = x + attention(h)
    ds, g_out = L.norm_backward(dx.reshape(B, T, C), cache.ln1_out)
    dh, g_att = L.attention_backward(ds, cache.attn)
    # h = ln1(x) (pre-norm; else h = x)
    dx, g_in = L.norm_backward(dh, cache.ln1_in)
    return ds + dx, L.prefixed("ln1", g_in | g_out) | L.prefixed("attn", g_att) | g_mlp


def final_norm(
    x: np.ndarray, params: Params, cfg: Config
) -> tuple[np.ndarray, L.LayerNormCache | None]:
    """x (N, C) -> ln_f(x), or x itself in a model without a final norm."""
    if cfg.layer_norm and cfg.final_norm:
        return L.layernorm_forward(x, params.group("ln_f"), cfg.engine)
    return x, None


def forward(params: Params, tokens: np.ndarray, cfg: Config) -> tuple[np.ndarray, ModelCache]:
    """tokens (B, T) -> logits (B, P) at the last position, and the cache for `backward`."""
    engine = numerics(params, cfg)
    p_emb = {"wte": params["wte"], "wpe": params["wpe"]}
    x, c_emb = L.embedding_forward(tokens, p_emb, engine)  # (B, T, C)
    blocks = []
    for i in range(cfg.layers):
        x, c = block_forward(x, params.group(f"blocks.{i}"), cfg)  # (B, T, C)
        blocks.append(c)
    B, T, C = x.shape
    h, c_lnf = final_norm(x.reshape(B * T, C), params, cfg)  # (B*T, C)
    logits, c_head = L.linear_forward(h, params.group("head"))  # (B*T, P)
    logits = logits.reshape(B, T, -1)
    return logits[:, -1], ModelCache(c_emb, blocks, c_lnf, c_head, logits.shape)


def backward(dlogits: np.ndarray, cache: ModelCache) -> L.Grads:
    """dlogits (B, P) -> every parameter's gradient, keyed like the table.

    Walks `forward` in reverse, quoting each forward line above its derivative.
    """
    B, T, P = cache.shape
    # logits = logits_all[:, -1]: the other positions get no gradient
    dall = np.zeros((B, T, P), dtype=dlogits.dtype)
    dall[:, -1] = dlogits
    # logits_all = h @ head.w + head.b
    dh, g_head = L.linear_backward(dall.reshape(B * T, P), cache.head)
    grads = L.prefixed("head", g_head)
    # h = ln_f(x) (with a final norm; else h = x)
    dx, g_lnf = L.norm_backward(dh, cache.ln_f)
    grads |= L.prefixed("ln_f", g_lnf)
    dx = dx.reshape(B, T, -1)
    for i in reversed(range(len(cache.blocks))):
        dx, g = block_backward(dx, cache.blocks[i])  # (B, T, C)
        grads |= L.prefixed(f"blocks.{i}", g)
    # x = wte[tokens] + wpe
    _, g_emb = L.embedding_backward(dx, cache.embedding)
    return grads | g_emb
