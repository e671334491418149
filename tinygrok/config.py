"""Run settings: one frozen dataclass, its validation, and named presets.

Every field maps one to one onto a command-line option (`weight_decay` is `--weight-decay`), so a
config can be saved as JSON beside a run, reloaded, and swept over by field name. `validate`
returns the first problem as one line that names the option and what it allows.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from tinygrok.errors import ConfigError
from tinygrok.tasks import canonical_task, is_prime, task_names


@dataclass(frozen=True)
class Config:
    """Everything that determines a run (defaults: preset `power`, see DESIGN.md)."""

    # data
    tasks: tuple[str, ...] = ("division",)
    p: int = 97
    train_frac: float = 0.5
    batch_size: int = 512
    # model
    layers: int = 2
    d_model: int = 128
    heads: int = 4
    d_mlp: int = 512
    layer_norm: bool = True
    activation: str = "gelu"
    # initialization
    sparse: float = 0.0
    init_scale: float = 1.0
    # optimizer
    optimizer: str = "adamw"
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    weight_decay: float = 1.0
    momentum: float = 0.9
    warmup_steps: int = 10
    # schedule of the run
    steps: int = 20_000
    eval_every: int = 50
    patience: int = 1000
    memorized_threshold: float = 0.99
    generalized_threshold: float = 0.95
    seed: int = 0
    # numerics
    dtype: str = "float32"
    engine: str = "numpy"

    @property
    def step_budget(self) -> int:
        """Total optimizer steps: `steps` per task times the number of tasks (DESIGN.md)."""
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


PRESETS: dict[str, dict] = {
    "power": {},
}

ACTIVATIONS = ("gelu", "relu")
OPTIMIZERS = ("adamw", "sgd")
ENGINES = ("numpy",)
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
    if not cfg.tasks:
        raise ConfigError(f"TASK: give at least one task ({', '.join(task_names())})")
    tasks = tuple(canonical_task(t) for t in cfg.tasks)
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"TASK: each task may appear once (got {' '.join(cfg.tasks)})")
    _positive_int("p", cfg.p, 2)
    if cfg.p > MAX_P:
        raise ConfigError(
            f"--p: must be at most {MAX_P}; p*p pairs must fit in memory (got {cfg.p})"
        )
    if "division" in tasks and not is_prime(cfg.p):
        raise ConfigError(f"--p: division needs a prime p (got {cfg.p}; try 97 or 113)")
    _in_range("train-frac", cfg.train_frac, 0.0, 1.0, True, True)
    _positive_int("batch-size", cfg.batch_size, len(tasks))
    for name in ("layers", "d-model", "heads", "d-mlp"):
        _positive_int(name, getattr(cfg, name.replace("-", "_")))
    if cfg.d_model % cfg.heads:
        raise ConfigError(
            f"--d-model: must be divisible by --heads (got {cfg.d_model} and {cfg.heads})"
        )
    if cfg.activation not in ACTIVATIONS:
        raise ConfigError(f"--activation: must be one of {', '.join(ACTIVATIONS)}")
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
    _positive_int("steps", cfg.steps)
    _positive_int("eval-every", cfg.eval_every)
    _positive_int("patience", cfg.patience, 0)
    _in_range("memorized-threshold", cfg.memorized_threshold, 0.0, 1.0, True, False)
    _in_range("generalized-threshold", cfg.generalized_threshold, 0.0, 1.0, True, False)
    _positive_int("seed", cfg.seed, 0)
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"--dtype: must be one of {', '.join(DTYPES)}")
    if cfg.engine not in ENGINES:
        raise ConfigError(f"--engine: must be one of {', '.join(ENGINES)}")
    return cfg.replace(tasks=tasks)
