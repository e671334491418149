"""The model: its parameter table, initialization, and the whole forward and backward pass.

A decoder-only transformer (GPT-2 shape): token + learned position embedding, `layers` blocks of

    x = x + attention(ln1(x))      causal self-attention, NH heads
    x = x + mlp(ln2(x))            C -> F -> C with GELU or ReLU

then a final layer norm and an untied unembedding to the P answer classes, read at the last
position. With `layer_norm=False` every layer norm is the identity.

    x_0    = wte[tokens] + wpe                                   (B, T, C)
    logits = ln_f(x_L[:, -1]) head.w + head.b                    (B, P)
    loss   = mean_b -log softmax(logits_b)[target_b]

Two shortcuts give the same logits with less work (`forward`'s `lean`): the last block queries,
and runs its MLP on, the last position only, the one the loss reads; and the first block computes
positions 0 and 1, which hold [a, op] and by causality see nothing else, once per distinct
(a, op) of the batch, the way a key-value cache shares a prompt between continuations.

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


# Positions 0 and 1 of every example hold [a, op]. In a causal model the output at a position
# depends on the tokens up to it only, so the first block computes these positions once per
# distinct (a, op): at most n_tasks * p of them in a batch (97 for one task, against 512 rows).
PREFIX = 2


def distinct_prefixes(tokens: np.ndarray, n_vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """tokens (B, T) -> first (U,), the first row of each distinct prefix tokens[:, :PREFIX], and
    inv (B,), each row's prefix: tokens[first][inv, :PREFIX] == tokens[:, :PREFIX]."""
    key = tokens[:, :PREFIX] @ (n_vocab ** np.arange(PREFIX - 1, -1, -1))  # (B,) one int each
    _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    return first, inv


def forward(
    params: Params, tokens: np.ndarray, cfg: Config, engine: str = "numpy", lean: bool = True
) -> tuple[np.ndarray, dict]:
    """tokens (B, T) -> logits (B, P) read at the last position, and the cache for `backward`.

    `lean` skips work that cannot change the logits: the last block queries, and runs its MLP on,
    the last position only (nothing else of it reaches the loss), and, with two blocks or more, the
    first block computes the prefix positions once per distinct prefix (`PREFIX`). Without it,
    every block computes every position of every example: the textbook model, same logits.
    """
    shared = lean and cfg.layers > 1
    if shared:
        x, first_cache = _shared_first_block(params, tokens, cfg, engine)  # (B, T, C)
    else:
        x, first_cache = L.embedding_forward(tokens, params["wte"], params["wpe"]), tokens
    blocks = []
    for i in range(1 if shared else 0, cfg.layers):
        x, c = _block(params, f"blocks.{i}.", x, cfg, lean and i == cfg.layers - 1, engine)
        blocks.append(c)  # x: (B, Tq, C)
    xl = x[:, -1]  # (B, C)
    hf, c_lnf = _ln(params, "ln_f", xl, cfg, engine) if cfg.final_norm else (xl, None)
    logits = L.linear_forward(hf, params["head.w"], params["head.b"])  # (B, P)
    caches = {"shared": shared, "first": first_cache, "blocks": blocks}
    return logits, caches | {"head": (c_lnf, hf, x.shape)}


def _ln(params: Params, name: str, x: np.ndarray, cfg: Config, engine: str) -> tuple:
    """Layer norm `name` on x (..., C), or the identity without --layer-norm -> (y, cache)."""
    if not cfg.layer_norm:
        return x, None
    return L.layernorm(x, params[name + ".w"], params[name + ".b"], engine)


def _ln_back(grads: Params, name: str, dy: np.ndarray, cache: tuple | None, engine: str):
    """Backward of `_ln`: dy -> dx; writes the layer norm's gradients."""
    if cache is None:
        return dy
    dx, grads[name + ".w"][...], grads[name + ".b"][...] = L.layernorm_back(dy, cache, engine)
    return dx


def _put(grads: Params, prefix: str, names: tuple[str, ...], values: list) -> None:
    for name, value in zip(names, values, strict=True):
        grads[prefix + name][...] = value


ATTN, MLP = ("w_qkv", "b_qkv", "w_o", "b_o"), ("w_fc", "b_fc", "w_proj", "b_proj")


def _norm_in(params: Params, name: str, x: np.ndarray, cfg: Config, engine: str) -> tuple:
    """A branch's input: ln(x) in a pre-norm block, x itself in a post-norm one -> (h, cache)."""
    return _ln(params, name, x, cfg, engine) if cfg.norm == "pre" else (x, None)


def _norm_out(params: Params, name: str, s: np.ndarray, cfg: Config, engine: str) -> tuple:
    """A sublayer's output from s = x + branch: s in a pre-norm block, ln(s) in a post-norm one."""
    return _ln(params, name, s, cfg, engine) if cfg.norm == "post" else (s, None)


def _mlp_half(params: Params, b: str, x: np.ndarray, cfg: Config, engine: str) -> tuple:
    """x (N, C) rows -> x + mlp(ln2(x)) (pre-norm) or ln2(x + mlp(x)) (post-norm) (N, C), cache."""
    h, c_in = _norm_in(params, b + "ln2", x, cfg, engine)
    m, c_mlp = L.mlp(h, *(params[b + "mlp." + k] for k in MLP), cfg.activation, engine)
    y, c_out = _norm_out(params, b + "ln2", x + m, cfg, engine)
    return y, (c_in, c_mlp, c_out)


def _mlp_half_back(dy: np.ndarray, cache: tuple, b: str, grads: Params, engine: str):
    """dy (N, C) -> dx (N, C) through `_mlp_half`; writes the MLP's and ln2's gradients.

    Of the two layer-norm caches one is None (the identity), so one backward serves both
    placements: ds = dy through the norm after the sum (post), the branch, the norm before it (pre).
    """
    c_in, c_mlp, c_out = cache
    # y = ln2(s) (post-norm; else y = s),  s = x + mlp(h)
    ds = _ln_back(grads, b + "ln2", dy, c_out, engine)
    dh, *g = L.mlp_back(ds, c_mlp, engine)
    _put(grads, b + "mlp.", MLP, g)
    # h = ln2(x) (pre-norm; else h = x)
    return ds + _ln_back(grads, b + "ln2", dh, c_in, engine)


def _block(params: Params, b: str, x: np.ndarray, cfg: Config, q_last: bool, engine: str):
    """One block on x (B, T, C) -> (B, Tq, C), cache; Tq = 1 with `q_last`, else T."""
    h, c_in = _norm_in(params, b + "ln1", x, cfg, engine)
    weights = (params[b + "attn." + k] for k in ATTN)
    a, c_att = L.attention(h, *weights, cfg.heads, q_last, engine)  # (B, Tq, C)
    x, c_out = _norm_out(params, b + "ln1", x[:, -a.shape[1] :] + a, cfg, engine)  # (B, Tq, C)
    Bq, Tq, C = x.shape
    x, c_mlp = _mlp_half(params, b, x.reshape(Bq * Tq, C), cfg, engine)
    return x.reshape(Bq, Tq, C), (c_in, c_att, c_out, c_mlp)


def _block_back(dx: np.ndarray, cache: tuple, b: str, grads: Params, engine: str):
    """dx (B, Tq, C) -> dx (B, T, C) through `_block`; writes its gradients."""
    c_in, c_att, c_out, c_mlp = cache
    Bq, Tq, C = dx.shape
    # x = mlp half of x
    dx = _mlp_half_back(dx.reshape(Bq * Tq, C), c_mlp, b, grads, engine).reshape(Bq, Tq, C)
    # x = ln1(s) (post-norm; else x = s),  s = x[:, -Tq:] + attention(h)
    ds = _ln_back(grads, b + "ln1", dx, c_out, engine)
    dh, *g = L.attention_back(ds, c_att, engine)  # (B, T, C)
    _put(grads, b + "attn.", ATTN, g)
    # h = ln1(x) (pre-norm; else h = x)
    dh = _ln_back(grads, b + "ln1", dh, c_in, engine)
    dh[:, -Tq:] += ds
    return dh


def _shared_first_block(params: Params, tokens: np.ndarray, cfg: Config, engine: str):
    """Embedding and first block, the prefix positions once per distinct prefix -> x (B, T, C),
    cache. The block works on rows: U*PREFIX prefix rows, then B*(T - PREFIX) rows of every
    example's own positions."""
    wte, wpe = params["wte"], params["wpe"]
    first, inv = distinct_prefixes(tokens, wte.shape[0])
    ptok, mtok = tokens[first, :PREFIX], tokens[:, PREFIX:]  # (U, PREFIX), (B, Tm)
    (U, S), (B, Tm), C = ptok.shape, mtok.shape, wte.shape[1]
    xp = L.embedding_forward(ptok, wte, wpe[:S])  # (U, S, C)
    xm = L.embedding_forward(mtok, wte, wpe[S:])  # (B, Tm, C)
    x = np.concatenate([xp.reshape(U * S, C), xm.reshape(B * Tm, C)])  # (R, C)
    b = "blocks.0."
    h, c_in = _norm_in(params, b + "ln1", x, cfg, engine)
    weights = (params[b + "attn." + k] for k in ATTN)
    a, c_att = L.attention_shared(h, *weights, cfg.heads, (U, S), inv, engine)  # (R, C)
    x, c_out = _norm_out(params, b + "ln1", x + a, cfg, engine)
    x, c_mlp = _mlp_half(params, b, x, cfg, engine)
    # every example's positions: its prefix's, then its own
    x = np.concatenate([x[: U * S].reshape(U, S, C)[inv], x[U * S :].reshape(B, Tm, C)], axis=1)
    return x, (ptok, mtok, inv, c_in, c_att, c_out, c_mlp)


def _shared_first_block_back(dx: np.ndarray, cache: tuple, grads: Params, engine: str) -> None:
    """dx (B, T, C) -> the embedding's and first block's gradients, written into `grads`."""
    ptok, mtok, inv, c_in, c_att, c_out, c_mlp = cache
    (U, S), (B, T, C) = ptok.shape, dx.shape
    b = "blocks.0."
    # x = [x_rows[:U*S][inv], x_rows[U*S:]]: a prefix row collects the gradients of its examples
    dxp = L.scatter_rows(dx[:, :S], inv, U, engine)  # (U, S, C)
    dx = np.concatenate([dxp.reshape(U * S, C), dx[:, S:].reshape(-1, C)])  # (R, C)
    # x = mlp half of x
    dx = _mlp_half_back(dx, c_mlp, b, grads, engine)
    # x = ln1(s) (post-norm; else x = s),  s = x + attention_shared(h)
    ds = _ln_back(grads, b + "ln1", dx, c_out, engine)
    dh, *g = L.attention_shared_back(ds, c_att, engine)
    _put(grads, b + "attn.", ATTN, g)
    # h = ln1(x) (pre-norm; else h = x)
    dx = ds + _ln_back(grads, b + "ln1", dh, c_in, engine)
    # xp = wte[ptok] + wpe[:S];  xm = wte[mtok] + wpe[S:]
    n_vocab = grads["wte"].shape[0]
    dwte_p, dwpe_p = L.embedding_backward(dx[: U * S].reshape(U, S, C), ptok, n_vocab, engine)
    dwte_m, dwpe_m = L.embedding_backward(dx[U * S :].reshape(B, T - S, C), mtok, n_vocab, engine)
    grads["wte"][...] = dwte_p + dwte_m
    grads["wpe"][:S], grads["wpe"][S:] = dwpe_p, dwpe_m


def backward(
    dlogits: np.ndarray,
    caches: dict,
    params: Params,
    cfg: Config,
    grads: Params,
    engine: str = "numpy",
) -> None:
    """dlogits (B, P) -> every parameter's gradient, written into `grads`.

    Walks `forward` in reverse, quoting each forward line above its derivative.
    """
    c_lnf, hf, x_shape = caches["head"]
    # logits = hf @ head.w + head.b
    dhf, grads["head.w"][...], grads["head.b"][...] = L.linear_backward(
        dlogits, hf, params["head.w"]
    )
    # hf = ln_f(x[:, -1])
    dx = np.zeros(x_shape, dtype=dlogits.dtype)  # (B, Tq, C)
    dx[:, -1] = _ln_back(grads, "ln_f", dhf, c_lnf, engine)
    shared = caches["shared"]
    for i, c in reversed(list(enumerate(caches["blocks"], start=1 if shared else 0))):
        dx = _block_back(dx, c, f"blocks.{i}.", grads, engine)  # (B, T, C)
    if shared:
        _shared_first_block_back(dx, caches["first"], grads, engine)
    else:
        # x = wte[tokens] + wpe
        grads["wte"][...], grads["wpe"][...] = L.embedding_backward(
            dx, caches["first"], params["wte"].shape[0], engine
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
