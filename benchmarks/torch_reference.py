"""The same model and recipe in PyTorch (CPU, eager): what a user would write instead of tinygrok.

GPT-2-shaped, pre-LayerNorm blocks with a fused QKV projection, `scaled_dot_product_attention`
(causal), a tanh-GELU MLP, a final LayerNorm and an untied unembedding read at the last position;
torch.optim.AdamW with the run's betas, eps and weight decay on every parameter, and tinygrok's
warmup schedule. Like the usual PyTorch implementations it runs every block on every position
(`last_only=False`); `last_only=True` skips, as tinygrok does, the last block's work for the
positions that do not reach the loss.

`ReportModel` is the report's model ("Grokking: Shortening the Delay", its code the repository
jetyue04/loss-plateau) as that code builds it: `nn.TransformerEncoder` of post-LayerNorm ReLU
`nn.TransformerEncoderLayer`s with a causal mask, no final LayerNorm, and a head over the whole
vocabulary; it checks tinygrok's `--preset report` model and times it.

`load_tinygrok` copies tinygrok's parameters in (tinygrok stores a weight as (in, out), PyTorch
as (out, in)), so both start from the same point; `check_same_model` verifies that the two
compute the same loss and gradients before anything is timed. Run as a script, it checks the
default model and `--preset report`'s:

    python benchmarks/torch_reference.py
"""

from __future__ import annotations

from operator import attrgetter

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:
    if __name__ != "__main__":
        raise  # an importer (step_speed.py, time_to_grok.py, the tests) decides what to do
    from _common import require_torch  # run as a script, this folder is on sys.path

    require_torch("torch_reference.py")
    raise

from tinygrok import fast, model
from tinygrok import layers as L
from tinygrok.config import Config
from tinygrok.optim import learning_rate
from tinygrok.params import Params
from tinygrok.tasks import SEQ_LEN, Batches, make_dataset, vocab_size


class Block(nn.Module):
    def __init__(self, C: int, n_head: int, F_: int):
        super().__init__()
        self.n_head = n_head
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.fc, self.out = nn.Linear(C, F_), nn.Linear(F_, C)

    def forward(self, x: torch.Tensor, last_only: bool) -> torch.Tensor:
        B, T, C = x.shape
        NH, HS = self.n_head, C // self.n_head
        qkv = self.qkv(self.ln1(x)).view(B, T, 3, NH, HS).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, NH, T, HS)
        if last_only:  # the last position sees every key: no mask needed
            y = F.scaled_dot_product_attention(q[:, :, -1:], k, v)  # (B, NH, 1, HS)
            x = x[:, -1:]
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, NH, T, HS)
        x = x + self.proj(y.transpose(1, 2).reshape(B, x.shape[1], C))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class TorchModel(nn.Module):
    def __init__(self, cfg: Config, last_only: bool = False):
        super().__init__()
        if not cfg.layer_norm or cfg.activation != "gelu":
            raise ValueError("the PyTorch reference has LayerNorm and GELU, as the default model")
        C = cfg.d_model
        self.last_only = last_only
        self.wte = nn.Embedding(vocab_size(cfg.p, len(cfg.tasks)), C)
        self.wpe = nn.Parameter(torch.zeros(SEQ_LEN, C))
        self.blocks = nn.ModuleList([Block(C, cfg.heads, cfg.d_mlp) for _ in range(cfg.layers)])
        self.ln_f = nn.LayerNorm(C)
        self.head = nn.Linear(C, cfg.p)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> logits (B, P) at the last position."""
        x = self.wte(tokens) + self.wpe
        for i, block in enumerate(self.blocks):
            x = block(x, self.last_only and i == len(self.blocks) - 1)
        return self.head(self.ln_f(x[:, -1]))


class ReportModel(nn.Module):
    """The report's model: PyTorch's encoder layers (post-norm, ReLU), built as its code does."""

    def __init__(self, cfg: Config):
        super().__init__()
        if (cfg.norm, cfg.final_norm, cfg.activation, cfg.head) != ("post", False, "relu", "vocab"):
            raise ValueError("the report's model is post-norm, ReLU, no final norm, vocab head")
        C, V = cfg.d_model, vocab_size(cfg.p, len(cfg.tasks))
        self.embedding = nn.Embedding(V, C)
        self.pos_encoding = nn.Embedding(SEQ_LEN, C)
        layer = nn.TransformerEncoderLayer(
            d_model=C, nhead=cfg.heads, dim_feedforward=cfg.d_mlp, dropout=0.0, batch_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.output_layer = nn.Linear(C, V)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> logits (B, V) at the last position."""
        T = tokens.shape[1]
        x = self.embedding(tokens) + self.pos_encoding(torch.arange(T))
        mask = torch.triu(torch.ones(T, T), diagonal=1).bool()  # True: may not attend
        return self.output_layer(self.transformer(x, mask=mask)[:, -1])


# tinygrok's name of each block tensor -> (its attribute in a PyTorch block, stored transposed),
# for the GPT-2-style Block above and for nn.TransformerEncoderLayer
BLOCK_TENSORS = {
    Block: {
        "ln1.w": ("ln1.weight", False),
        "ln1.b": ("ln1.bias", False),
        "attn.w_qkv": ("qkv.weight", True),
        "attn.b_qkv": ("qkv.bias", False),
        "attn.w_o": ("proj.weight", True),
        "attn.b_o": ("proj.bias", False),
        "ln2.w": ("ln2.weight", False),
        "ln2.b": ("ln2.bias", False),
        "mlp.w_fc": ("fc.weight", True),
        "mlp.b_fc": ("fc.bias", False),
        "mlp.w_proj": ("out.weight", True),
        "mlp.b_proj": ("out.bias", False),
    },
    nn.TransformerEncoderLayer: {
        "ln1.w": ("norm1.weight", False),
        "ln1.b": ("norm1.bias", False),
        "attn.w_qkv": ("self_attn.in_proj_weight", True),
        "attn.b_qkv": ("self_attn.in_proj_bias", False),
        "attn.w_o": ("self_attn.out_proj.weight", True),
        "attn.b_o": ("self_attn.out_proj.bias", False),
        "ln2.w": ("norm2.weight", False),
        "ln2.b": ("norm2.bias", False),
        "mlp.w_fc": ("linear1.weight", True),
        "mlp.b_fc": ("linear1.bias", False),
        "mlp.w_proj": ("linear2.weight", True),
        "mlp.b_proj": ("linear2.bias", False),
    },
}
# the tensors outside the blocks, per model
OUTER_TENSORS = {
    "TorchModel": (
        {"wte": ("wte.weight", False), "wpe": ("wpe", False)},
        {
            "ln_f.w": ("ln_f.weight", False),
            "ln_f.b": ("ln_f.bias", False),
            "head.w": ("head.weight", True),
            "head.b": ("head.bias", False),
        },
    ),
    "ReportModel": (
        {"wte": ("embedding.weight", False), "wpe": ("pos_encoding.weight", False)},
        {"head.w": ("output_layer.weight", True), "head.b": ("output_layer.bias", False)},
    ),
}


def _pairs(model: nn.Module) -> list[tuple[str, torch.Tensor, bool]]:
    """(tinygrok name, PyTorch tensor, transposed) for every parameter."""
    first, last = OUTER_TENSORS[type(model).__name__]
    blocks = model.transformer.layers if isinstance(model, ReportModel) else model.blocks
    out = [(name, attrgetter(path)(model), t) for name, (path, t) in first.items()]
    for i, blk in enumerate(blocks):
        table = BLOCK_TENSORS[type(blk)]
        out += [(f"blocks.{i}.{n}", attrgetter(path)(blk), t) for n, (path, t) in table.items()]
    return out + [(name, attrgetter(path)(model), t) for name, (path, t) in last.items()]


def load_tinygrok(model: nn.Module, params: Params, cfg: Config) -> None:
    """Copy tinygrok's parameters into the PyTorch model."""
    with torch.no_grad():
        for name, tensor, transposed in _pairs(model):
            w = params[name]
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(w.T if transposed else w)))


def reference_models(cfg: Config) -> list[nn.Module]:
    """The PyTorch models that compute what tinygrok's model of `cfg` computes."""
    if cfg.norm == "post":
        return [ReportModel(cfg)]
    return [TorchModel(cfg, last_only) for last_only in (False, True)]


def check_same_model(cfg: Config, params: Params, tol: float = 2e-4) -> float:
    """Logits, loss and every gradient of one batch, tinygrok's textbook and fast models (on the
    config's engine) vs PyTorch from the same parameters; raises if they differ by more than `tol`
    (relative to each tensor's largest entry). Returns the largest relative difference."""
    data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
    tokens, targets = Batches(data, cfg.batch_size, cfg.seed, cfg.epoch_batches)(1)

    def rel(got: np.ndarray, want: np.ndarray) -> float:
        return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-6))

    worst = 0.0
    for ours in (model, fast):
        logits, cache = ours.forward(params, tokens, cfg)
        loss, c_ce = L.cross_entropy_forward(logits, targets, cfg.engine, cfg.loss_dtype)
        grads = ours.backward(L.cross_entropy_backward(1.0, c_ce)[0], cache)
        for theirs in reference_models(cfg):
            load_tinygrok(theirs, params, cfg)
            t_logits = theirs(torch.from_numpy(tokens))
            t_loss = F.cross_entropy(t_logits, torch.from_numpy(targets))
            t_loss.backward()
            t_z = t_logits.detach().numpy()
            worst = max(worst, abs(t_loss.item() - loss) / abs(loss), rel(t_z, logits))
            for name, tensor, transposed in _pairs(theirs):
                g = tensor.grad.numpy()
                worst = max(worst, rel(g.T if transposed else g, grads[name]))
    if worst > tol:
        raise AssertionError(f"PyTorch and tinygrok disagree: relative difference {worst:.2e}")
    return worst


class TorchSteps:
    """PyTorch's training step on tinygrok's batches, from tinygrok's initial parameters."""

    def __init__(self, cfg: Config, params: Params, last_only: bool = False):
        self.cfg = cfg
        data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
        self.batches = Batches(data, cfg.batch_size, cfg.seed, cfg.epoch_batches)
        self.model = TorchModel(cfg, last_only)
        load_tinygrok(self.model, params, cfg)
        self.opt = torch.optim.AdamW(
            self.model.parameters(),
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
        )
        self.t = 0

    def __call__(self, n: int) -> None:
        """Take n steps."""
        for _ in range(n):
            self.t += 1
            tokens, targets = self.batches(self.t)
            for group in self.opt.param_groups:
                group["lr"] = learning_rate(self.cfg, self.t)
            loss = F.cross_entropy(self.model(torch.from_numpy(tokens)), torch.from_numpy(targets))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()

    @torch.no_grad()
    def evaluate(self, x: np.ndarray, y: np.ndarray, chunk: int = 4096) -> tuple[float, float]:
        """Mean loss and accuracy over a whole set, in chunks (as tinygrok evaluates)."""
        loss_sum, correct = 0.0, 0
        for s in range(0, len(y), chunk):
            logits = self.model(torch.from_numpy(x[s : s + chunk]))
            targets = torch.from_numpy(y[s : s + chunk])
            loss_sum += float(F.cross_entropy(logits, targets, reduction="sum"))
            correct += int((logits.argmax(1) == targets).sum())
        return loss_sum / len(y), correct / len(y)


def main() -> None:
    """Check both reference models against tinygrok's, from tinygrok's initial parameters."""
    from tinygrok.config import from_preset
    from tinygrok.params import init_params

    for label, cfg in (("default model", Config()), ("--preset report", from_preset("report"))):
        params, _ = init_params(cfg)
        diff = check_same_model(cfg, params)
        print(f"{label}: PyTorch computes tinygrok's loss and gradients (max rel. diff {diff:.1e})")


if __name__ == "__main__":
    main()
