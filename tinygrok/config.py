"""Run settings: one frozen dataclass, its validation, and named presets.

Every field maps one to one onto a command-line option (`weight_decay` is `--weight-decay`), so a
config can be saved as JSON beside a run, reloaded, and swept over by field name. `validate`
returns the first problem as one line that names the option and what it allows.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

from tinygrok.errors import ConfigError
from tinygrok.tasks import (
    OPERATIONS,
    SEQ_LEN,
    canonical_task,
    fixed_elements,
    is_prime,
    task_names,
)


@dataclass(frozen=True)
class Config:
    """Everything that determines a run (defaults: preset `power`, README.md's default recipe)."""

    # data
    tasks: tuple[str, ...] = ("division",)
    p: int = 97
    train_frac: float = 0.5
    batch_size: int = 512
    epoch_batches: bool = False
    # model
    layers: int = 2
    d_model: int = 128
    heads: int = 4
    d_mlp: int = 512
    layer_norm: bool = True
    norm: str = "pre"
    final_norm: bool = True
    activation: str = "gelu"
    head: str = "answers"
    # initialization
    init: str = "pytorch"
    sparse: float = 0.0
    init_scale: float = 1.0
    keep_mask: bool = False
    # optimizer
    optimizer: str = "adamw"
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    weight_decay: float = 1.0
    momentum: float = 0.9
    warmup_steps: int = 10
    # gradient filter (Grokfast); lamb None means the filter's default (2.0 ema, 5.0 ma)
    grokfast: str = "none"
    grokfast_alpha: float = 0.98
    grokfast_lamb: float | None = None
    grokfast_window: int = 100
    # schedule of the run
    steps: int = 20_000
    eval_every: int = 50
    checkpoint_every: int = 1000
    snapshot_every: int = 0
    measures_every: int = 0
    patience: int = 1000
    memorized_threshold: float = 0.99
    generalized_threshold: float = 0.95
    seed: int = 0
    # numerics
    dtype: str = "float32"
    loss_dtype: str = "float64"
    engine: str = "numba"

    @property
    def step_budget(self) -> int:
        """Total optimizer steps: `steps` per task times the number of tasks."""
        return self.steps * len(self.tasks)

    def replace(self, **changes) -> Config:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready dict of every field (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["tasks"] = list(self.tasks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        """Inverse of `to_dict`; unknown keys are a ConfigError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"config: unknown setting(s) {', '.join(unknown)}")
        d = dict(d)
        if "tasks" in d:
            d["tasks"] = tuple(d["tasks"])
        return cls(**d)


# Named starting points; explicit options override them (`from_preset`).
PRESETS: dict[str, dict] = {
    # Power et al. (2022) as the project's defaults have it: 2 layers, d_model 128, division mod 97
    "power": {},
    # Nanda et al. (2023): 1 layer, no LayerNorm, ReLU, a + b mod 113 on 30% of the pairs, full
    # batch (113^2 >= any training set), their initialization, AdamW lr 1e-3, betas (0.9, 0.98),
    # weight decay 1
    "nanda": {
        "tasks": ("addition",),
        "p": 113,
        "train_frac": 0.3,
        "batch_size": 113 * 113,
        "layers": 1,
        "d_model": 128,
        "heads": 4,
        "d_mlp": 512,
        "layer_norm": False,
        "activation": "relu",
        "init": "nanda",
        "lr": 1e-3,
        "beta1": 0.9,
        "beta2": 0.98,
        "weight_decay": 1.0,
        "steps": 40_000,
        "eval_every": 100,
    },
    # The report "Grokking: Shortening the Delay" (code: jetyue04/loss-plateau), as its code runs:
    # PyTorch's nn.TransformerEncoder (post-LayerNorm, ReLU, no final norm) with a head over the
    # whole vocabulary and PyTorch's init, AdamW lr 1e-3, betas (0.9, 0.98), weight decay 1e-3, no
    # warmup, DataLoader epochs of batch 512, evaluation every 50 steps, a budget of 400,000 steps
    # per task, split seed 42, memorized at 95% training accuracy (its detector's), and the loss
    # computed in float32, as PyTorch computes a float32 model's (its gradient rounds off once the
    # model fits the training set better than float32 resolves, kernels/crossentropy.py). The
    # report ran every arm to its budget; this stops 20,000 steps after validation accuracy reached
    # 95% and stayed there.
    "report": {
        "tasks": ("division",),
        "p": 97,
        "train_frac": 0.5,
        "batch_size": 512,
        "epoch_batches": True,
        "layers": 2,
        "d_model": 128,
        "heads": 4,
        "d_mlp": 512,
        "norm": "post",
        "final_norm": False,
        "activation": "relu",
        "head": "vocab",
        "init": "report",
        "lr": 1e-3,
        "beta1": 0.9,
        "beta2": 0.98,
        "eps": 1e-8,
        "weight_decay": 1e-3,
        "warmup_steps": 0,
        "steps": 400_000,
        "eval_every": 50,
        "patience": 20_000,
        "memorized_threshold": 0.95,
        "seed": 42,
        "loss_dtype": "float32",
    },
    # Groks a + b mod 23 within seconds (docs/ANALYSIS.md: memorized at step 100-125, generalized
    # at 500-850 over seeds 0-2): 1 layer, d_model 32, full batch, 60% of the pairs
    "tiny": {
        "tasks": ("addition",),
        "p": 23,
        "train_frac": 0.6,
        "batch_size": 23 * 23,
        "layers": 1,
        "d_model": 32,
        "heads": 4,
        "d_mlp": 128,
        "lr": 5e-3,
        "weight_decay": 1.0,
        "steps": 2000,
        "eval_every": 25,
        "patience": 300,
    },
}

ACTIVATIONS = ("gelu", "relu")
# Where a block's layer norms sit: pre, x + f(ln(x)) (GPT-2); post, ln(x + f(x)) (the original
# Transformer, and PyTorch's nn.TransformerEncoderLayer by default)
NORMS = ("pre", "post")
# What the unembedding predicts: the p answers, or every token of the vocabulary
HEADS = ("answers", "vocab")
INITS = ("pytorch", "nanda", "report", "report-xavier", "report-norm")
OPTIMIZERS = ("adamw", "sgd")
# Gradient filters and their default lambda (Lee et al. 2024's defaults)
GROKFAST_FILTERS: dict[str, float | None] = {"none": None, "ema": 2.0, "ma": 5.0}
# numba: the compiled kernels (the default); numpy: their NumPy references, the slow spec
ENGINES = ("numba", "numpy")
DTYPES = ("float32", "float64")

# Above this many pairs per task the dataset alone (tokens, labels, evaluation) outgrows a laptop.
MAX_P = 2000


def _finite(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"--{name}: must be a finite number (got {value})")


def _in_range(name: str, value: float, lo: float, hi: float, lo_open: bool, hi_open: bool) -> None:
    _finite(name, value)
    bad_lo = value <= lo if lo_open else value < lo
    bad_hi = value >= hi if hi_open else value > hi
    if bad_lo or bad_hi:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ConfigError(f"--{name}: must be in {left}{lo:g}, {hi:g}{right} (got {value:g})")


def _positive_int(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"--{name}: must be an integer >= {minimum} (got {value})")


def validate(cfg: Config) -> Config:
    """Check every field; return the config with task names made canonical, or raise ConfigError."""
    if not cfg.tasks or not all(isinstance(t, str) for t in cfg.tasks):
        raise ConfigError(f"TASK: give at least one task ({', '.join(task_names())})")
    tasks = tuple(canonical_task(t) for t in cfg.tasks)
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"TASK: each task may appear once (got {' '.join(cfg.tasks)})")
    _positive_int("p", cfg.p, 2)
    if cfg.p > MAX_P:
        raise ConfigError(
            f"--p: must be at most {MAX_P}; p*p pairs must fit in memory (got {cfg.p})"
        )
    for t in tasks:
        if OPERATIONS[t].needs_prime and not is_prime(cfg.p):
            raise ConfigError(f"--p: {t} needs a prime p (got {cfg.p}; try 97 or 113)")
    n_elements = fixed_elements(tasks)
    if n_elements is not None and cfg.p != n_elements:
        raise ConfigError(
            f"--p: S5 tasks have {n_elements} elements, so p must be {n_elements} "
            f"(got {cfg.p}; leave --p out)"
        )
    _in_range("train-frac", cfg.train_frac, 0.0, 1.0, True, True)
    for t in tasks:
        n_pairs = cfg.p * (cfg.p - 1) if OPERATIONS[t].b_nonzero else cfg.p**2
        if not 0 < int(cfg.train_frac * n_pairs) < n_pairs:
            raise ConfigError(
                f"--train-frac: {cfg.train_frac:g} of {n_pairs} pairs leaves an empty train or "
                "validation set; choose a fraction nearer 0.5 or a larger --p"
            )
    _positive_int("batch-size", cfg.batch_size, len(tasks))
    if not isinstance(cfg.epoch_batches, bool):
        raise ConfigError(f"--epoch-batches: must be true or false (got {cfg.epoch_batches!r})")
    for name in ("layers", "d-model", "heads", "d-mlp"):
        _positive_int(name, getattr(cfg, name.replace("-", "_")))
    if cfg.d_model % cfg.heads:
        raise ConfigError(
            f"--d-model: must be divisible by --heads (got {cfg.d_model} and {cfg.heads})"
        )
    if not isinstance(cfg.layer_norm, bool):
        raise ConfigError(f"--layer-norm: must be true or false (got {cfg.layer_norm!r})")
    if cfg.norm not in NORMS:
        raise ConfigError(f"--norm: must be one of {', '.join(NORMS)}")
    if not isinstance(cfg.final_norm, bool):
        raise ConfigError(f"--final-norm: must be true or false (got {cfg.final_norm!r})")
    if cfg.head not in HEADS:
        raise ConfigError(f"--head: must be one of {', '.join(HEADS)}")
    if cfg.activation not in ACTIVATIONS:
        raise ConfigError(f"--activation: must be one of {', '.join(ACTIVATIONS)}")
    if cfg.init not in INITS:
        raise ConfigError(f"--init: must be one of {', '.join(INITS)}")
    _in_range("sparse", cfg.sparse, 0.0, 1.0, False, True)
    _in_range("init-scale", cfg.init_scale, 0.0, math.inf, True, True)
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optimizer: must be one of {', '.join(OPTIMIZERS)}")
    _in_range("lr", cfg.lr, 0.0, math.inf, True, True)
    _in_range("beta1", cfg.beta1, 0.0, 1.0, False, True)
    _in_range("beta2", cfg.beta2, 0.0, 1.0, False, True)
    _in_range("eps", cfg.eps, 0.0, math.inf, True, True)
    _in_range("weight-decay", cfg.weight_decay, 0.0, math.inf, False, True)
    _in_range("momentum", cfg.momentum, 0.0, 1.0, False, True)
    _positive_int("warmup-steps", cfg.warmup_steps, 0)
    if not isinstance(cfg.keep_mask, bool):
        raise ConfigError(f"--keep-mask: must be true or false (got {cfg.keep_mask!r})")
    if cfg.grokfast not in GROKFAST_FILTERS:
        raise ConfigError(f"--grokfast: must be one of {', '.join(GROKFAST_FILTERS)}")
    _in_range("grokfast-alpha", cfg.grokfast_alpha, 0.0, 1.0, False, True)
    lamb = cfg.grokfast_lamb
    if lamb is None:
        lamb = GROKFAST_FILTERS[cfg.grokfast]
    else:
        _in_range("grokfast-lamb", lamb, 0.0, math.inf, False, True)
    _positive_int("grokfast-window", cfg.grokfast_window)
    _positive_int("steps", cfg.steps)
    _positive_int("eval-every", cfg.eval_every)
    _positive_int("checkpoint-every", cfg.checkpoint_every)
    _positive_int("snapshot-every", cfg.snapshot_every, 0)
    if cfg.snapshot_every % cfg.eval_every:
        raise ConfigError(
            "--snapshot-every: must be a multiple of --eval-every, snapshots are taken at "
            f"evaluations (got {cfg.snapshot_every} and {cfg.eval_every})"
        )
    _positive_int("measures-every", cfg.measures_every, 0)
    if cfg.measures_every % cfg.eval_every:
        raise ConfigError(
            "--measures-every: must be a multiple of --eval-every, measures are taken at "
            f"evaluations (got {cfg.measures_every} and {cfg.eval_every})"
        )
    _positive_int("patience", cfg.patience, 0)
    _in_range("memorized-threshold", cfg.memorized_threshold, 0.0, 1.0, True, False)
    _in_range("generalized-threshold", cfg.generalized_threshold, 0.0, 1.0, True, False)
    _positive_int("seed", cfg.seed, 0)
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"--dtype: must be one of {', '.join(DTYPES)}")
    if cfg.loss_dtype not in DTYPES:
        raise ConfigError(f"--loss-dtype: must be one of {', '.join(DTYPES)}")
    if cfg.engine not in ENGINES:
        raise ConfigError(f"--engine: must be one of {', '.join(ENGINES)}")
    need, have = memory_needed(cfg, len(tasks)), physical_memory()
    if have and need > have:
        raise ConfigError(
            f"--layers/--d-model/--d-mlp/--batch-size: this model needs about {need / 2**30:,.1f} "
            f"GB, more than this machine's {have / 2**30:,.1f} GB; choose smaller sizes"
        )
    return cfg.replace(tasks=tasks, grokfast_lamb=lamb)


def from_preset(preset: str, tasks: tuple[str, ...] = (), **given) -> Config:
    """The validated config of a preset, with the tasks (if any) and options the user gave on top.

    S5 tasks fix p at 120 unless the user gave --p (validate then checks it).
    """
    if preset not in PRESETS:
        raise ConfigError(f"--preset: must be one of {', '.join(PRESETS)} (got {preset!r})")
    fields = dict(PRESETS[preset])
    if tasks:
        fields["tasks"] = tuple(tasks)
    fields |= given
    if "p" not in given and fields.get("tasks"):
        n_elements = fixed_elements(tuple(canonical_task(t) for t in fields["tasks"]))
        fields["p"] = n_elements or fields.get("p", Config.p)
    return validate(Config(**fields))


# The model of the gradient checks (`gradcheck.small_config`, `tinygrok gradcheck`): small enough
# to check coordinate by coordinate, in float64; d_mlp None means 4 * d_model.
SMALL_MODEL: dict = {
    "tasks": ("addition",),
    "p": 11,
    "layers": 2,
    "d_model": 8,
    "heads": 2,
    "d_mlp": None,
    "layer_norm": True,
    "norm": "pre",
    "final_norm": True,
    "activation": "gelu",
    "head": "answers",
    "seed": 0,
    "batch_size": 8,
}

# Rows per evaluation forward pass: 1024 keeps a default run's peak memory near 220 MB (4096:
# about 390 MB, the forward caches of every layer) at the same speed (benchmarks/startup.py).
EVAL_CHUNK = 1024


def memory_needed(cfg: Config, n_tasks: int) -> int:
    """Rough bytes a run needs: parameters, gradients, two optimizer moments and the mask (five
    copies of N values), the activations of a batch or an evaluation chunk (EVAL_CHUNK rows), and
    the dataset. Plain integer arithmetic, so absurd sizes cost nothing to reject."""
    C, F, P = cfg.d_model, cfg.d_mlp, cfg.p
    n = cfg.layers * (4 * C * C + 2 * C * F + 9 * C + F) + (2 * P + n_tasks + 7) * C + P
    item = 8 if cfg.dtype == "float64" else 4
    rows = min(max(cfg.batch_size, EVAL_CHUNK), n_tasks * P * P)
    activations = rows * SEQ_LEN * cfg.layers * (8 * C + 2 * F) * item
    dataset = n_tasks * P * P * (SEQ_LEN + 1) * 8
    grokfast_ring = cfg.grokfast_window * n * item if cfg.grokfast == "ma" else 0
    return 5 * n * item + activations + dataset + grokfast_ring


def physical_memory() -> int | None:
    """Bytes of RAM, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
