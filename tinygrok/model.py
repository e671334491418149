"""The textbook model: its parameter table, initialization, and the whole forward and backward.

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

All parameters live in one flat vector; `Params` gives named views into it with the shapes of the
table, so optimizers, weight decay, masks, norms and checkpoints work on one array, and the layers
on named tensors. Gradients come back as a dict keyed like the table.

Shape legend: B batch, T = 4 positions, C d_model, F d_mlp, V vocabulary, P classes of the head.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinygrok import layers as L
from tinygrok.config import Config
from tinygrok.tasks import INIT_STREAM, SEQ_LEN, vocab_size


def param_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """The parameter table: name -> shape, in the order of the forward pass."""
    V, T, C, F, P = vocab_size(cfg.p, len(cfg.tasks)), SEQ_LEN, cfg.d_model, cfg.d_mlp, cfg.p
    shapes: dict[str, tuple[int, ...]] = {"wte": (V, C), "wpe": (T, C)}
    for i in range(cfg.layers):
        b = f"blocks.{i}."
        if cfg.layer_norm:
            shapes |= {b + "ln1.w": (C,), b + "ln1.b": (C,)}
        shapes |= {
            b + "attn.w_qkv": (C, 3 * C),
            b + "attn.b_qkv": (3 * C,),
            b + "attn.w_o": (C, C),
            b + "attn.b_o": (C,),
        }
        if cfg.layer_norm:
            shapes |= {b + "ln2.w": (C,), b + "ln2.b": (C,)}
        shapes |= {
            b + "mlp.w_fc": (C, F),
            b + "mlp.b_fc": (F,),
            b + "mlp.w_proj": (F, C),
            b + "mlp.b_proj": (C,),
        }
    if cfg.layer_norm and cfg.final_norm:
        shapes |= {"ln_f.w": (C,), "ln_f.b": (C,)}
    n_out = V if cfg.head == "vocab" else P
    shapes |= {"head.w": (C, n_out), "head.b": (n_out,)}
    return shapes


def is_matrix(name: str, shape: tuple[int, ...]) -> bool:
    """Weight matrices (embeddings, projections, unembedding): what --sparse and --init-scale
    change; biases and LayerNorm parameters are left alone."""
    return len(shape) == 2


class Params:
    """A flat vector (N,) and named views of it with the table's shapes."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], flat: np.ndarray):
        self.shapes, self.flat = shapes, flat
        self.views: dict[str, np.ndarray] = {}
        offset = 0
        for name, shape in shapes.items():
            n = int(np.prod(shape))
            self.views[name] = flat[offset : offset + n].reshape(shape)
            offset += n
        assert offset == flat.size, "flat vector does not match the table"

    @classmethod
    def zeros(cls, shapes: dict[str, tuple[int, ...]], dtype: np.dtype) -> Params:
        """All-zero parameters (or gradients) of the table."""
        return cls(shapes, np.zeros(sum(int(np.prod(s)) for s in shapes.values()), dtype=dtype))

    def __getitem__(self, name: str) -> np.ndarray:
        return self.views[name]

    def astype(self, dtype: np.dtype) -> Params:
        """A copy in another dtype."""
        return Params(self.shapes, self.flat.astype(dtype))

    def copy(self) -> Params:
        """A copy of the values."""
        return Params(self.shapes, self.flat.copy())

    def group(self, prefix: str) -> dict[str, np.ndarray]:
        """One layer's tensors, named without `prefix.`: group("blocks.0.attn") ->
        {"w_qkv": ..., "b_qkv": ..., "w_o": ..., "b_o": ...}; {} when the table has none (a layer
        norm without --layer-norm)."""
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.views.items() if k.startswith(prefix + ".")}

    def set_grads(self, grads: dict[str, np.ndarray]) -> None:
        """Write a gradient dict keyed like the table into these views: every name of the table
        must be there, so no gradient is left from an earlier step."""
        missing = sorted(set(self.shapes) - set(grads))
        assert not missing, f"no gradient for {missing}"
        for name, g in grads.items():
            self.views[name][...] = g


def matrix_sparsity(params: Params) -> float:
    """Fraction of exactly-zero entries over all weight matrices (`is_matrix`) together."""
    zeros = total = 0
    for name, shape in params.shapes.items():
        if is_matrix(name, shape):
            zeros += int(np.count_nonzero(params[name] == 0))
            total += params[name].size
    return zeros / total


def init_params(cfg: Config) -> tuple[Params, Params]:
    """Initialize as --init says, then apply --sparse and --init-scale. Returns the parameters and
    the mask (1 = kept).

    pytorch: as PyTorch initializes these layers: nn.Embedding N(0, 1), MultiheadAttention's
    xavier_uniform_ with zero biases, nn.Linear U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and
    bias. nanda: as Nanda et al.'s code: every matrix N(0, 1/d_model) except the unembedding,
    N(0, 1/p), and every bias 0. LayerNorm starts at w = 1, b = 0 either way. For these two,
    --sparse zeroes exactly that fraction of every weight matrix and --init-scale multiplies every
    weight matrix.

    The report's starts ("Grokking: Shortening the Delay", its code jetyue04/loss-plateau):
    report, PyTorch's init of its nn.TransformerEncoder, which deep-copies one layer, so every
    block starts as a copy of the first; report-xavier, the rule of its sparse and small starts on
    top of that: each nn.Linear module (`REPORT_LINEAR`) redrawn Xavier-normal, std
    sqrt(2 / (fan_in + fan_out)), with a zero bias, --sparse dropping each of those weights with
    that probability and multiplying the survivors by 1 / sqrt(1 - s) (no mask is kept unless
    --keep-mask), and --init-scale multiplying them; report-norm, the report start with each of
    those weights rescaled to the Frobenius norm that Xavier-normal has in expectation, which the
    sparse start keeps (a dense control of the sparse start's size).
    """
    shapes = param_shapes(cfg)
    rng = np.random.default_rng([cfg.seed, INIT_STREAM])
    # the masks draw from their own stream: a sparse start is the dense start with entries zeroed
    mask_rng = np.random.default_rng([cfg.seed, INIT_STREAM, 1])
    params = Params.zeros(shapes, np.float64)
    mask = Params(shapes, np.ones(params.flat.size, dtype=np.float64))
    for name, shape in shapes.items():
        params[name][...] = _default_draw(name, shape, cfg, rng)
    if cfg.init.startswith("report"):
        for name in shapes:
            if name.startswith("blocks.") and not name.startswith("blocks.0."):
                params[name][...] = params["blocks.0." + name.split(".", 2)[2]]
    linear = report_linear(cfg)
    if cfg.init == "report-xavier":
        for wname, bname in linear.items():
            w = params[wname]
            w[...] = rng.standard_normal(w.shape) * np.sqrt(2.0 / sum(w.shape)) * cfg.init_scale
            params[bname][...] = 0.0
            if cfg.sparse > 0:
                mask[wname][...] = mask_rng.random(w.shape) >= cfg.sparse
                w *= mask[wname] / np.sqrt(1.0 - cfg.sparse)
        return params.astype(np.dtype(cfg.dtype)), mask.astype(np.dtype(cfg.dtype))
    if cfg.init == "report-norm":
        for wname in linear:
            w = params[wname]
            w *= np.sqrt(2.0 * w.size / sum(w.shape)) / np.linalg.norm(w)
    for name, shape in shapes.items():
        if is_matrix(name, shape):
            w = params[name]
            w *= cfg.init_scale
            if cfg.sparse > 0:
                zero = mask_rng.permutation(w.size)[: int(round(cfg.sparse * w.size))]
                mask[name].reshape(-1)[zero] = 0.0
                w *= mask[name]
    return params.astype(np.dtype(cfg.dtype)), mask.astype(np.dtype(cfg.dtype))


def _default_draw(name: str, shape: tuple[int, ...], cfg: Config, rng: np.random.Generator):
    """The initial value of one tensor under --init pytorch or nanda (the report's starts begin
    from pytorch's)."""
    C, kind = cfg.d_model, name.rsplit(".", 1)[-1]
    if name.endswith("ln1.w") or name.endswith("ln2.w") or name == "ln_f.w":
        return np.ones(shape)
    if ".ln" in name or name.startswith("ln_f"):
        return np.zeros(shape)
    if cfg.init == "nanda":
        if not is_matrix(name, shape):
            return np.zeros(shape)
        return rng.standard_normal(shape) / np.sqrt(cfg.p if name == "head.w" else C)
    if name in ("wte", "wpe"):
        return rng.standard_normal(shape)  # nn.Embedding: N(0, 1)
    if kind == "w_qkv":
        bound = np.sqrt(6.0 / (C + 3 * C))  # xavier_uniform_ on the (3C, C) in_proj_weight
        return rng.uniform(-bound, bound, shape)
    if kind in ("b_qkv", "b_o"):
        return np.zeros(shape)  # MultiheadAttention zeroes its biases
    # nn.Linear: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in is the input width of
    # the layer this tensor belongs to
    fan_in = {"w_fc": C, "b_fc": C, "w_proj": cfg.d_mlp, "b_proj": cfg.d_mlp}.get(kind, C)
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape)


def report_linear(cfg: Config) -> dict[str, str]:
    """The report model's nn.Linear modules, weight name -> bias name: each block's attention
    output projection and two MLP layers, and the head. The attention's query/key/value projection
    is a plain parameter of nn.MultiheadAttention, not an nn.Linear, so the report's starts leave
    it (and the embeddings) as PyTorch drew them."""
    pairs = {"head.w": "head.b"}
    for i in range(cfg.layers):
        b = f"blocks.{i}."
        pairs |= {b + "attn.w_o": b + "attn.b_o", b + "mlp.w_fc": b + "mlp.b_fc"}
        pairs |= {b + "mlp.w_proj": b + "mlp.b_proj"}
    return pairs


def numerics(params: Params, cfg: Config) -> str:
    """The engine that `cfg` names, after checking that the parameters are in its dtype. Engine
    and dtype come from the config alone: no model, optimizer, gradient filter or gradient check
    takes them as arguments, and the layers' backward passes read the engine from their caches."""
    if params.flat.dtype != np.dtype(cfg.dtype):
        raise ValueError(f"parameters are {params.flat.dtype}, the config says {cfg.dtype}")
    return cfg.engine


def prefixed(prefix: str, grads: L.Grads) -> L.Grads:
    """A layer's grads {"w": ...} under its table names {"prefix.w": ...}."""
    return {f"{prefix}.{k}": g for k, g in grads.items()}


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
    x: np.ndarray, params: Params, i: int, cfg: Config, engine: str
) -> tuple[np.ndarray, BlockCache]:
    """Block i on x (B, T, C) -> (B, T, C)."""
    B, T, C = x.shape
    b, p_ln1 = f"blocks.{i}.", params.group(f"blocks.{i}.ln1")
    h, c_in = L.pre_norm(x, p_ln1, cfg, engine)
    a, c_att = L.attention_forward(h, params.group(b + "attn"), cfg.heads, engine)  # (B, T, C)
    x, c_out = L.add_norm(x, a, p_ln1, cfg, engine)  # ln1(x + a) post-norm, else x + a
    x, c_mlp = L.mlp_sublayer_forward(
        x.reshape(B * T, C), params.group(b + "ln2"), params.group(b + "mlp"), cfg, engine
    )
    return x.reshape(B, T, C), BlockCache(c_in, c_att, c_out, c_mlp)


def block_backward(dx: np.ndarray, cache: BlockCache, i: int) -> tuple[np.ndarray, L.Grads]:
    """dx (B, T, C) -> dx (B, T, C) and block i's grads, keyed like the table."""
    B, T, C = dx.shape
    b = f"blocks.{i}."
    # x = mlp sublayer of x
    dx, g_ln2, g_mlp = L.mlp_sublayer_backward(dx.reshape(B * T, C), cache.mlp)
    # x = ln1(s) (post-norm; else x = s),  s = x + attention(h)
    ds, g_out = L.norm_backward(dx.reshape(B, T, C), cache.ln1_out)
    dh, g_att = L.attention_backward(ds, cache.attn)
    # h = ln1(x) (pre-norm; else h = x)
    dx, g_in = L.norm_backward(dh, cache.ln1_in)
    grads = prefixed(b + "ln1", g_in | g_out) | prefixed(b + "attn", g_att)
    return ds + dx, grads | prefixed(b + "ln2", g_ln2) | prefixed(b + "mlp", g_mlp)


def final_norm(
    x: np.ndarray, params: Params, cfg: Config, engine: str
) -> tuple[np.ndarray, L.LayerNormCache | None]:
    """x (N, C) -> ln_f(x), or x itself in a model without a final norm."""
    if cfg.layer_norm and cfg.final_norm:
        return L.layernorm_forward(x, params.group("ln_f"), engine)
    return x, None


def forward(params: Params, tokens: np.ndarray, cfg: Config) -> tuple[np.ndarray, ModelCache]:
    """tokens (B, T) -> logits (B, P) at the last position, and the cache for `backward`."""
    engine = numerics(params, cfg)
    p_emb = {"wte": params["wte"], "wpe": params["wpe"]}
    x, c_emb = L.embedding_forward(tokens, p_emb, engine)  # (B, T, C)
    blocks = []
    for i in range(cfg.layers):
        x, c = block_forward(x, params, i, cfg, engine)  # (B, T, C)
        blocks.append(c)
    B, T, C = x.shape
    h, c_lnf = final_norm(x.reshape(B * T, C), params, cfg, engine)  # (B*T, C)
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
    grads = prefixed("head", g_head)
    # h = ln_f(x) (with a final norm; else h = x)
    dx, g_lnf = L.norm_backward(dh, cache.ln_f)
    grads |= prefixed("ln_f", g_lnf)
    dx = dx.reshape(B, T, -1)
    for i in reversed(range(len(cache.blocks))):
        dx, g = block_backward(dx, cache.blocks[i], i)  # (B, T, C)
        grads |= g
    # x = wte[tokens] + wpe
    _, g_emb = L.embedding_backward(dx, cache.embedding)
    return grads | g_emb


def n_params(cfg: Config) -> int:
    """Number of parameters of the model `cfg` describes."""
    return sum(int(np.prod(s)) for s in param_shapes(cfg).values())
