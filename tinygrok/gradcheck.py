"""Gradient check: the hand-written backward pass against centered finite differences, in float64.

For the mean cross-entropy L(theta) of one small batch and a parameter coordinate theta_i:

    numeric_i  = (L(theta + h e_i) - L(theta - h e_i)) / (2 h)     error O(h^2 L''') + O(eps L / h)
    analytic_i = what the fast model's backward gave for theta_i
    rel_err_i  = |analytic_i - numeric_i| / max(|numeric_i|, floor)

A tensor passes when its largest rel_err_i is at most `tol`. The floor makes gradients near zero
compare in absolute terms (|analytic - numeric| <= tol * floor, the form atol + rtol |reference|):
there the round-off of the differences (about 1e-16 * L / h = 1e-11 with h = 1e-5), not the
backward pass, sets the error.

The parameters are the model's initialization plus Gaussian noise, so no layer-norm gain is exactly
1 and no bias exactly 0: a unit gain or a zero bias can hide a wrong term. Small tensors are checked
at every coordinate, large ones at a seeded random sample of `max_coords` coordinates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tinygrok import layers as L
from tinygrok.config import SMALL_MODEL, Config, validate
from tinygrok.fast import logits, loss_and_grads
from tinygrok.params import Params, init_params
from tinygrok.tasks import Batches, make_dataset

STEP = 1e-5  # h: balances the O(h^2) truncation against the O(eps / h) round-off in float64
FLOOR = 1e-4  # gradients smaller than this are compared in absolute terms
TOL = 1e-5  # largest rel_err a tensor may show
NOISE = 0.1  # std of the noise added to the initialization


@dataclass(frozen=True)
class TensorCheck:
    """The result for one parameter tensor."""

    name: str
    shape: tuple[int, ...]
    n_checked: int  # coordinates compared
    max_rel_err: float
    tol: float

    @property
    def ok(self) -> bool:
        """True when the largest error is within the tolerance."""
        return self.max_rel_err <= self.tol


def small_config(**changes) -> Config:
    """A validated float64 config of SMALL_MODEL with `changes` (Config fields) on top; d_mlp
    defaults to 4 * d_model."""
    fields = SMALL_MODEL | changes
    if fields["d_mlp"] is None:
        fields["d_mlp"] = 4 * fields["d_model"]
    return validate(Config(**fields, dtype="float64"))


def checked_setup(cfg: Config, noise: float = NOISE) -> tuple[Params, np.ndarray, np.ndarray]:
    """Parameters (initialization + noise, float64), tokens (B, 4) and targets (B,) of the first
    training batch of `cfg`."""
    params, _ = init_params(cfg)
    params = params.astype(np.float64)
    rng = np.random.default_rng([cfg.seed, 8])
    params.flat[:] += noise * rng.standard_normal(params.flat.size)
    data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
    tokens, targets = Batches(data, cfg.batch_size, cfg.seed, cfg.epoch_batches)(1)
    return params, tokens, targets


def batch_loss(params: Params, tokens: np.ndarray, targets: np.ndarray, cfg: Config) -> float:
    """Mean cross-entropy of tokens (B, 4) against targets (B,): forward pass only."""
    loss, _ = L.cross_entropy_forward(
        logits(params, tokens, cfg), targets, cfg.engine, cfg.loss_dtype
    )  # (B, P)
    return loss


def analytic_grads(params: Params, tokens: np.ndarray, targets: np.ndarray, cfg: Config) -> Params:
    """Every parameter's gradient from the hand-written backward pass."""
    grads = Params.zeros(params.shapes, params.flat.dtype)
    loss_and_grads(params, tokens, targets, cfg, grads)
    return grads


def numeric_grad(
    loss: Callable[[], float], theta: np.ndarray, coords: np.ndarray, h: float = STEP
) -> np.ndarray:
    """Centered differences of `loss()` along the coordinates `coords` (K,) of the flat array
    `theta` (N,), which `loss` reads; theta is restored after each coordinate. Returns (K,)."""
    out = np.empty(len(coords))
    for k, i in enumerate(coords):
        old = theta[i]
        theta[i] = old + h
        up = loss()
        theta[i] = old - h
        down = loss()
        theta[i] = old
        out[k] = (up - down) / (2 * h)
    return out


def relative_error(analytic: np.ndarray, numeric: np.ndarray, floor: float = FLOOR) -> np.ndarray:
    """|analytic - numeric| / max(|numeric|, floor), elementwise."""
    return np.abs(analytic - numeric) / np.maximum(np.abs(numeric), floor)


def check_gradients(
    cfg: Config,
    params: Params,
    tokens: np.ndarray,
    targets: np.ndarray,
    grads: Params | None = None,
    max_coords: int = 32,
    tol: float = TOL,
    h: float = STEP,
    seed: int = 0,
) -> list[TensorCheck]:
    """Compare `grads` (default: the backward pass's) with finite differences, tensor by tensor.

    Tensors with at most `max_coords` elements are checked everywhere, larger ones at a random
    sample of `max_coords` coordinates drawn with `seed`.
    """
    if grads is None:
        grads = analytic_grads(params, tokens, targets, cfg)
    rng = np.random.default_rng(seed)
    offsets = np.cumsum([0] + [int(np.prod(s)) for s in params.shapes.values()])
    results = []
    for (name, shape), start in zip(params.shapes.items(), offsets[:-1], strict=True):
        size = int(np.prod(shape))
        local = np.arange(size) if size <= max_coords else rng.choice(size, max_coords, False)
        numeric = numeric_grad(
            lambda: batch_loss(params, tokens, targets, cfg), params.flat, start + local, h
        )
        err = relative_error(grads[name].reshape(-1)[local], numeric)
        results.append(TensorCheck(name, shape, len(local), float(err.max()), tol))
    return results


def format_report(checks: list[TensorCheck]) -> str:
    """One line per tensor: name, shape, coordinates checked, max relative error, tol, OK/FAIL."""
    width = max(len(c.name) for c in checks)
    lines = [f"{'parameter':{width}s}  {'shape':>10s}  {'checked':>7s}  max rel err  tol"]
    for c in checks:
        shape = "x".join(map(str, c.shape))
        lines.append(
            f"{c.name:{width}s}  {shape:>10s}  {c.n_checked:7d}  {c.max_rel_err:11.2e}  "
            f"{c.tol:.0e}  {'OK' if c.ok else 'FAIL'}"
        )
    return "\n".join(lines)
