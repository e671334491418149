"""Optimizers over the flat parameter vector: AdamW and SGD with momentum, and the learning-rate
schedule (linear warmup, then constant). The update formulas (AdamW: decoupled weight decay
p <- p (1 - lr wd), then the bias-corrected Adam step; SGD: momentum on g + wd p) are in
`kernels/optimizer.py`. The learning rate at step t = 1, 2, ...:

    lr_t = lr * t / warmup_steps     for t < warmup_steps
    lr_t = lr                        after

An optimizer is a small object because it carries state (moments, step count) from step to step;
its dtype and engine are the config's;
`state()` and `load_state()` let checkpoints save and restore it exactly.
"""

from __future__ import annotations

import numpy as np

from tinygrok.config import Config
from tinygrok.kernels.optimizer import adamw_update, sgd_update


def learning_rate(cfg: Config, step: int) -> float:
    """lr at `step` (1-based): rises linearly from lr/warmup to lr over `warmup_steps`."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    return cfg.lr


class AdamW:
    """torch.optim.AdamW: decoupled weight decay, bias-corrected moments."""

    def __init__(self, cfg: Config, n: int):
        self.cfg, self.engine = cfg, cfg.engine
        self.m = np.zeros(n, dtype=cfg.dtype)  # (N,) first moment
        self.v = np.zeros(n, dtype=cfg.dtype)  # (N,) second moment
        self.t = 0

    def step(self, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        """One update of the flat parameters p (N,) with gradient g (N,), in place."""
        c = self.cfg
        self.t += 1
        adamw_update(
            p,
            g,
            self.m,
            self.v,
            lr,
            c.beta1,
            c.beta2,
            c.eps,
            c.weight_decay,
            self.t,
            engine=self.engine,
        )

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to checkpoint."""
        return {"m": self.m, "v": self.v, "t": np.array(self.t)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `state` returned."""
        self.m[:], self.v[:], self.t = state["m"], state["v"], int(state["t"])


class SGD:
    """torch.optim.SGD with momentum and (coupled) weight decay, no dampening, no Nesterov."""

    def __init__(self, cfg: Config, n: int):
        self.cfg, self.engine = cfg, cfg.engine
        self.buf = np.zeros(n, dtype=cfg.dtype)  # (N,) momentum buffer
        self.t = 0

    def step(self, p: np.ndarray, g: np.ndarray, lr: float) -> None:
        """One update of the flat parameters p (N,) with gradient g (N,), in place."""
        self.t += 1
        sgd_update(
            p, g, self.buf, lr, self.cfg.momentum, self.cfg.weight_decay, self.t, engine=self.engine
        )

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to checkpoint."""
        return {"buf": self.buf, "t": np.array(self.t)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `state` returned."""
        self.buf[:], self.t = state["buf"], int(state["t"])


def make_optimizer(cfg: Config, n: int) -> AdamW | SGD:
    """The optimizer `cfg.optimizer` names, for N parameters in the config's dtype, updated by
    the config's engine."""
    return {"adamw": AdamW, "sgd": SGD}[cfg.optimizer](cfg, n)
