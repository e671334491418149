"""Softmax cross-entropy over P answer classes, computed in float64 whatever the logits' dtype.

    logp[n, c] = z[n, c] - max_c z[n] - log sum_c' exp(z[n, c'] - max_c z[n])
    loss[n]    = -logp[n, y[n]]
    d mean(loss) / dz[n, c] = (softmax(z[n])[c] - [c == y[n]]) / N

Shapes: N rows, P classes. (Derivation: the softmax's Jacobian diag(s) - s s^T applied to
-onehot/s; see CS231n's notes on the softmax classifier.)

The numba kernels run one row per parallel iteration.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from tinygrok.kernels import kernel


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


@kernel
def _cross_entropy_forward_nb(logits, targets, loss, probs):
    """Fills loss (N,) and probs (N, P), both float64; see `cross_entropy_forward_ref`."""
    N, P = logits.shape
    for n in prange(N):
        zr, pr = logits[n], probs[n]
        m = np.float64(zr[0])
        for c in range(1, P):
            m = max(m, np.float64(zr[c]))
        total = np.float64(0)
        for c in range(P):
            pr[c] = np.exp(np.float64(zr[c]) - m)
            total += pr[c]
        for c in range(P):
            pr[c] /= total
        loss[n] = np.log(total) - (np.float64(zr[targets[n]]) - m)


@kernel
def _cross_entropy_backward_nb(probs, targets, inv_n, dlogits):
    """Fills dlogits (N, P) = (probs - onehot(targets)) / N in dlogits' dtype."""
    N, P = probs.shape
    for n in prange(N):
        for c in range(P):
            dlogits[n, c] = probs[n, c] * inv_n
        dlogits[n, targets[n]] = (probs[n, targets[n]] - 1) * inv_n


def cross_entropy_forward(
    logits: np.ndarray, targets: np.ndarray, engine: str
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `cross_entropy_forward_ref`."""
    if engine != "numba":
        return cross_entropy_forward_ref(logits, targets)
    loss, probs = np.empty(len(targets)), np.empty(logits.shape)
    _cross_entropy_forward_nb(logits, targets, loss, probs)
    return loss, probs


def cross_entropy_backward(
    probs: np.ndarray, targets: np.ndarray, dtype: np.dtype, engine: str
) -> np.ndarray:
    """Dispatch on the engine; see `cross_entropy_backward_ref`."""
    if engine != "numba":
        return cross_entropy_backward_ref(probs, targets, dtype)
    dlogits = np.empty(probs.shape, dtype=dtype)
    _cross_entropy_backward_nb(probs, targets, 1.0 / len(targets), dlogits)
    return dlogits
