"""Grokfast gradient filters (Lee, Kang, Kim & Lee 2024, arXiv:2405.20233): amplify the slow
component of each parameter's gradient before the optimizer sees it.

The gradient g_t of every parameter is treated as a signal over steps t. A low-pass filter of it is
added back, scaled by lambda, and the optimizer steps on the result:

    Grokfast (EMA), alpha 0.98, lambda 2.0 by default:
        mu <- g_1                            at the first step
        mu <- alpha mu + (1 - alpha) g_t     (at every step, the first included, so mu_1 = g_1)
        g_t <- g_t + lambda mu

    Grokfast-MA, window w = 100, lambda 5.0 by default:
        g_t <- g_t + lambda mean(g_{t-w+1}, ..., g_t)   once w raw gradients have been seen
        g_t unchanged                                   during the first w - 1 steps

This is what the authors' `gradfilter_ema` and `gradfilter_ma` (github.com/ironjr/grokfast,
`grokfast.py`) do: the EMA starts from the first gradient; the MA appends the raw current gradient
to a deque of length w and, with its default `warmup=True`, filters only once the deque is full; the
mean includes the current gradient; the stored gradients are the raw ones, never the filtered ones.

Memory. The EMA keeps one vector (N,). The MA keeps the last w raw gradients: a ring buffer (w, N)
in the gradient dtype (w = 100, N = 420k float32: 168 MB) plus a running sum (N,) in float64, so a
step costs O(N) instead of the O(wN) of summing the window again. The float64 sum drifts from the
exact window sum by about 1e-16 relative per step, far below float32 gradients' own rounding.

Filters work in place on the flat gradient vector (N,), and carry `state()`/`load_state()` for
checkpoints, like the optimizers.
"""

from __future__ import annotations

import numpy as np

from tinygrok.config import Config


class EMAFilter:
    """Grokfast: g <- g + lamb * EMA_alpha(g), the EMA started at the first gradient."""

    def __init__(self, n: int, dtype: np.dtype, alpha: float = 0.98, lamb: float = 2.0):
        self.alpha, self.lamb = alpha, lamb
        self.mu = np.zeros(n, dtype=dtype)  # (N,) the slow gradient
        self.t = 0  # gradients seen

    def apply(self, g: np.ndarray) -> None:
        """Filter the flat gradient g (N,) in place."""
        if self.t == 0:
            self.mu[:] = g
        self.mu *= self.alpha
        self.mu += (1 - self.alpha) * g
        self.t += 1
        g += self.lamb * self.mu

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to checkpoint."""
        return {"mu": self.mu, "t": np.array(self.t)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `state` returned."""
        self.mu[:], self.t = state["mu"], int(state["t"])


class MAFilter:
    """Grokfast-MA: g <- g + lamb * (mean of the last `window` raw gradients), once the window is
    full; a ring buffer of the raw gradients and their running sum."""

    def __init__(self, n: int, dtype: np.dtype, window: int = 100, lamb: float = 5.0):
        self.window, self.lamb = window, lamb
        self.ring = np.zeros((window, n), dtype=dtype)  # (W, N) the last W raw gradients
        self.total = np.zeros(n, dtype=np.float64)  # (N,) sum of the ring's rows
        self.t = 0  # gradients seen; the newest sits in row (t - 1) % W

    def apply(self, g: np.ndarray) -> None:
        """Filter the flat gradient g (N,) in place."""
        row = self.ring[self.t % self.window]
        self.total -= row  # the oldest gradient leaves the window (zeros while filling)
        row[:] = g
        self.total += row
        self.t += 1
        if self.t >= self.window:
            g += (self.lamb / self.window) * self.total

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to checkpoint."""
        return {"ring": self.ring, "total": self.total, "t": np.array(self.t)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `state` returned."""
        self.ring[:], self.total[:], self.t = state["ring"], state["total"], int(state["t"])


def make_grad_filter(cfg: Config, n: int) -> EMAFilter | MAFilter | None:
    """The filter `cfg.grokfast` names, for N parameters of the config's dtype; None for
    "none"."""
    dtype = np.dtype(cfg.dtype)
    if cfg.grokfast == "ema":
        return EMAFilter(n, dtype, cfg.grokfast_alpha, cfg.grokfast_lamb)
    if cfg.grokfast == "ma":
        return MAFilter(n, dtype, cfg.grokfast_window, cfg.grokfast_lamb)
    return None
