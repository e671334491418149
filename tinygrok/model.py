"""The model: its parameter table, initialization, and the whole forward and backward pass.

A decoder-only transformer (GPT-2 shape): token + learned position embedding, `layers` blocks of

    x = x + attention(ln1(x))      causal self-attention, NH heads
    x = x + mlp(ln2(x))            C -> F -> C with GELU or ReLU

then a final layer norm and an untied unembedding to the P answer classes, read at the last
position. With `layer_norm=False` every layer norm is the identity.

    x_0    = wte[tokens] + wpe                                   (B, T, C)
    logits = ln_f(x_L[:, -1]) head.w + head.b                    (B, P)
    loss   = mean_b -log softmax(logits_b)[target_b]

The backward runs the blocks in reverse. A residual x_out = x + f(x) passes its gradient both
ways: dx = dx_out + (df/dx)^T dx_out, so each branch's backward adds its dx to the stream's.
Each layer's own rule is in layers.py and the kernels.

All parameters live in one flat vector; `Params` gives named views into it with the shapes of the
table, so optimizers, weight decay, masks, norms and checkpoints work on one array, and the layers
on named tensors.

Shape legend: B batch, T = 4 positions, C d_model, F d_mlp, V vocabulary, P = p classes.
"""

from __future__ import annotations

import numpy as np

from tinygrok import layers as L
from tinygrok.config import EVAL_CHUNK, Config
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
    if cfg.layer_norm:
        shapes |= {"ln_f.w": (C,), "ln_f.b": (C,)}
    shapes |= {"head.w": (C, P), "head.b": (P,)}
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


def matrix_sparsity(params: Params) -> float:
    """Fraction of exactly-zero entries over all weight matrices (`is_matrix`) together."""
    zeros = total = 0
    for name, shape in params.shapes.items():
        if is_matrix(name, shape):
            zeros += int(np.count_nonzero(params[name] == 0))
            total += params[name].size
    return zeros / total


def init_params(cfg: Config) -> tuple[Params, Params]:
    """Initialize as --init says (DESIGN.md), then apply --sparse and --init-scale to the weight
    matrices. Returns the parameters and the mask (1 = kept).

    pytorch: as PyTorch initializes these layers: nn.Embedding N(0, 1), MultiheadAttention's
    xavier_uniform_ with zero biases, nn.Linear U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and
    bias. nanda: as Nanda et al.'s code: every matrix N(0, 1/d_model) except the unembedding,
    N(0, 1/p), and every bias 0. LayerNorm starts at w = 1, b = 0 either way.
    """
    shapes = param_shapes(cfg)
    rng = np.random.default_rng([cfg.seed, INIT_STREAM])
    # the masks draw from their own stream: a sparse start is the dense start with entries zeroed
    mask_rng = np.random.default_rng([cfg.seed, INIT_STREAM, 1])
    params = Params.zeros(shapes, np.float64)
    mask = Params(shapes, np.ones(params.flat.size, dtype=np.float64))
    C = cfg.d_model
    for name, shape in shapes.items():
        w = params[name]
        kind = name.rsplit(".", 1)[-1]
        if name.endswith("ln1.w") or name.endswith("ln2.w") or name == "ln_f.w":
            w[...] = 1.0
        elif ".ln" in name or name.startswith("ln_f"):
            w[...] = 0.0
        elif cfg.init == "nanda":
            if is_matrix(name, shape):
                w[...] = rng.standard_normal(shape) / np.sqrt(cfg.p if name == "head.w" else C)
        elif name in ("wte", "wpe"):
            w[...] = rng.standard_normal(shape)  # nn.Embedding: N(0, 1)
        elif kind == "w_qkv":
            bound = np.sqrt(6.0 / (C + 3 * C))  # xavier_uniform_ on the (3C, C) in_proj_weight
            w[...] = rng.uniform(-bound, bound, shape)
        elif kind in ("b_qkv", "b_o"):
            w[...] = 0.0  # MultiheadAttention zeroes its biases
        else:
            # nn.Linear: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in is the input
            # width of the layer this tensor belongs to
            fan_in = {"w_fc": C, "b_fc": C, "w_proj": cfg.d_mlp, "b_proj": cfg.d_mlp}.get(kind, C)
            bound = 1.0 / np.sqrt(fan_in)
            w[...] = rng.uniform(-bound, bound, shape)
        if is_matrix(name, shape):
            w *= cfg.init_scale
            if cfg.sparse > 0:
                n = w.size
                zero = mask_rng.permutation(n)[: int(round(cfg.sparse * n))]
                m = mask[name].reshape(-1)
                m[zero] = 0.0
                w *= mask[name]
    return params.astype(np.dtype(cfg.dtype)), mask.astype(np.dtype(cfg.dtype))


def forward(
    params: Params, tokens: np.ndarray, cfg: Config, engine: str = "numpy", last_only: bool = True
) -> tuple[np.ndarray, list]:
    """tokens (B, T) -> logits (B, P) read at the last position, and the cache for `backward`.

    With `last_only` the last block queries, and runs its MLP on, the last position only: nothing
    else of that block reaches the loss.
    """
    ln = cfg.layer_norm
    caches: list = []
    x = L.embedding_forward(tokens, params["wte"], params["wpe"])  # (B, T, C)
    caches.append(tokens)
    for i in range(cfg.layers):
        b = f"blocks.{i}."
        q_last = last_only and i == cfg.layers - 1
        h, c_ln1 = (
            L.layernorm(x, params[b + "ln1.w"], params[b + "ln1.b"], engine) if ln else (x, None)
        )
        a, c_att = L.attention(
            h,
            params[b + "attn.w_qkv"],
            params[b + "attn.b_qkv"],
            params[b + "attn.w_o"],
            params[b + "attn.b_o"],
            cfg.heads,
            q_last,
            engine,
        )  # (B, Tq, C)
        x = x[:, -a.shape[1] :] + a  # (B, Tq, C)
        Bq, Tq, C = x.shape
        h2, c_ln2 = (
            L.layernorm(x, params[b + "ln2.w"], params[b + "ln2.b"], engine) if ln else (x, None)
        )
        m, c_mlp = L.mlp(
            h2.reshape(Bq * Tq, C),
            params[b + "mlp.w_fc"],
            params[b + "mlp.b_fc"],
            params[b + "mlp.w_proj"],
            params[b + "mlp.b_proj"],
            cfg.activation,
            engine,
        )  # (B*Tq, C)
        x = x + m.reshape(Bq, Tq, C)
        caches.append((c_ln1, c_att, c_ln2, c_mlp))
    xl = x[:, -1]  # (B, C)
    hf, c_lnf = L.layernorm(xl, params["ln_f.w"], params["ln_f.b"], engine) if ln else (xl, None)
    logits = L.linear_forward(hf, params["head.w"], params["head.b"])  # (B, P)
    caches.append((c_lnf, hf, x.shape))
    return logits, caches


def backward(
    dlogits: np.ndarray,
    caches: list,
    params: Params,
    cfg: Config,
    grads: Params,
    engine: str = "numpy",
) -> None:
    """dlogits (B, P) -> every parameter's gradient, written into `grads`.

    Walks `forward` in reverse, quoting each forward line above its derivative.
    """
    ln = cfg.layer_norm
    c_lnf, hf, x_shape = caches[-1]
    # logits = hf @ head.w + head.b
    dhf, grads["head.w"][...], grads["head.b"][...] = L.linear_backward(
        dlogits, hf, params["head.w"]
    )
    # hf = ln_f(x[:, -1])
    if ln:
        dxl, grads["ln_f.w"][...], grads["ln_f.b"][...] = L.layernorm_back(dhf, c_lnf, engine)
    else:
        dxl = dhf
    dx = np.zeros(x_shape, dtype=dlogits.dtype)  # (B, Tq, C)
    dx[:, -1] = dxl
    for i in reversed(range(cfg.layers)):
        b = f"blocks.{i}."
        c_ln1, c_att, c_ln2, c_mlp = caches[1 + i]
        Bq, Tq, C = dx.shape
        # x = x + mlp(ln2(x))
        dh2, *g = L.mlp_back(dx.reshape(Bq * Tq, C), c_mlp, engine)
        for k, gk in zip(("w_fc", "b_fc", "w_proj", "b_proj"), g, strict=True):
            grads[b + "mlp." + k][...] = gk
        dh2 = dh2.reshape(Bq, Tq, C)
        if ln:
            dh2, grads[b + "ln2.w"][...], grads[b + "ln2.b"][...] = L.layernorm_back(
                dh2, c_ln2, engine
            )
        dx = dx + dh2
        # x = x[:, -Tq:] + attention(ln1(x))
        dh, *g = L.attention_back(dx, c_att, engine)  # (B, T, C)
        for k, gk in zip(("w_qkv", "b_qkv", "w_o", "b_o"), g, strict=True):
            grads[b + "attn." + k][...] = gk
        if ln:
            dh, grads[b + "ln1.w"][...], grads[b + "ln1.b"][...] = L.layernorm_back(
                dh, c_ln1, engine
            )
        dh[:, -Tq:] += dx
        dx = dh
    # x = wte[tokens] + wpe
    grads["wte"][...], grads["wpe"][...] = L.embedding_backward(
        dx, caches[0], params["wte"].shape[0], engine
    )


def loss_and_grads(
    params: Params,
    tokens: np.ndarray,
    targets: np.ndarray,
    cfg: Config,
    grads: Params,
    engine: str = "numpy",
) -> float:
    """Mean cross-entropy of a batch (tokens (B, T), targets (B,)); gradients go into `grads`."""
    logits, caches = forward(params, tokens, cfg, engine)
    loss, c_ce = L.cross_entropy(logits, targets, engine)
    backward(L.cross_entropy_back(c_ce, engine), caches, params, cfg, grads, engine)
    return loss


def evaluate(
    params: Params,
    x: np.ndarray,
    y: np.ndarray,
    cfg: Config,
    engine: str = "numpy",
    chunk: int = EVAL_CHUNK,
) -> tuple[float, float]:
    """Mean loss and accuracy over a whole set (x (N, T), y (N,)), in chunks: flat memory."""
    loss_sum, correct = 0.0, 0
    for s in range(0, len(y), chunk):
        logits, _ = forward(params, x[s : s + chunk], cfg, engine)
        loss, _ = L.cross_entropy(logits, y[s : s + chunk], engine)
        loss_sum += loss * len(logits)
        correct += int((logits.argmax(axis=1) == y[s : s + chunk]).sum())
    return loss_sum / len(y), correct / len(y)


def n_params(cfg: Config) -> int:
    """Number of parameters of the model `cfg` describes."""
    return sum(int(np.prod(s)) for s in param_shapes(cfg).values())
