"""The parameters: their table (name -> shape), one flat vector with named views, and the starts.

All parameters live in one flat vector; `Params` gives named views into it with the shapes of the
table, so optimizers, weight decay, masks, norms and checkpoints work on one array, and the layers
on named tensors. `init_params` draws the start --init names, with --sparse and --init-scale.

Shape legend: V vocabulary, T = 4 positions, C d_model, F d_mlp, P classes of the head.
"""

from __future__ import annotations

import numpy as np

from tinygrok.config import Config
from tinygrok.layers import group
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
        """One layer's tensors, named without `prefix.` (`layers.group`): group("blocks.0.attn")
        -> {"w_qkv": ..., "b_qkv": ..., "w_o": ..., "b_o": ...}."""
        return group(self.views, prefix)

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


def n_params(cfg: Config) -> int:
    """Number of parameters of the model `cfg` describes."""
    return sum(int(np.prod(s)) for s in param_shapes(cfg).values())
