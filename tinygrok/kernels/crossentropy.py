"""Softmax cross-entropy over P answer classes, computed in float64 whatever the logits' dtype.

    logp[n, c] = z[n, c] - max_c z[n] - log sum_c' exp(z[n, c'] - max_c z[n])
    loss[n]    = -logp[n, y[n]]
    d mean(loss) / dz[n, c] = (softmax(z[n])[c] - [c == y[n]]) / N

Shapes: N rows, P classes.
"""

from __future__ import annotations

import numpy as np


def cross_entropy_forward_ref(
    logits: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """logits (N, P), targets (N,) -> loss (N,) float64, probs (N, P) float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logsum = np.log(np.exp(z).sum(axis=1))  # (N,)
    loss = logsum - z[np.arange(len(targets)), targets]
    probs = np.exp(z - logsum[:, None])
    return loss, probs


def cross_entropy_backward_ref(
    probs: np.ndarray, targets: np.ndarray, dtype: np.dtype
) -> np.ndarray:
    """probs (N, P), targets (N,) -> dlogits (N, P) in `dtype`, the gradient of the mean loss."""
    d = probs.copy()
    d[np.arange(len(targets)), targets] -= 1.0
    return (d / len(targets)).astype(dtype)


def cross_entropy_forward(
    logits: np.ndarray, targets: np.ndarray, engine: str = "numpy"
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `cross_entropy_forward_ref`."""
    return cross_entropy_forward_ref(logits, targets)


def cross_entropy_backward(
    probs: np.ndarray, targets: np.ndarray, dtype: np.dtype, engine: str = "numpy"
) -> np.ndarray:
    """Dispatch on the engine; see `cross_entropy_backward_ref`."""
    return cross_entropy_backward_ref(probs, targets, dtype)
