"""Softmax cross-entropy over P answer classes, computed in a working dtype `work` whatever the
logits' dtype: float64 by default, so that the loss and its gradient stay exact however well the
model fits; float32 to compute them as PyTorch does for a float32 model.

    logp[n, c] = z[n, c] - max_c z[n] - log sum_c' exp(z[n, c'] - max_c z[n])
    loss[n]    = -logp[n, y[n]]
    d mean(loss) / dz[n, c] = (softmax(z[n])[c] - [c == y[n]]) / N

Shapes: N rows, P classes. (Derivation: the softmax's Jacobian diag(s) - s s^T applied to
-onehot/s; see CS231n's notes on the softmax classifier.)

The two differ once a row fits better than float32 resolves: when every other class's
exp(z[n, c] - max) sums to less than half of float32's epsilon (6e-8), the sum rounds to 1, the
target's probability to exactly 1, its loss and its gradient to exactly 0, while the other
classes' gradients stay. The gradient is then no longer the loss's: Prieto et al. 2025
("Grokking at the Edge of Numerical Stability") call this softmax collapse. In float64 the same
happens only below 1e-16.

The numba kernels sum a row's exponentials in column order, without reassociation
(`kernels.ORDERED`), so that the rounding that collapses a float32 row does not depend on how
a compiler splits the sum into lanes.

Subnormal numbers are flushed to zero, in the probabilities and in the gradient: a class whose
probability (in the working dtype), or whose probability over N (in the gradient's dtype), is
below that dtype's smallest normal number (1.2e-38 in float32: a logit some 80 below the row's
largest at N = 512) gets exactly 0. Their exponentials are not computed: an exponential that
small is far below the last bit of the row's sum, at least 1, and the CPU computes subnormal
results slowly too. Deep in a fit, as in the report's
float32 regime past step 50,000, a tenth of the entries are that small, and every matrix product
that reads them then runs on the CPU's slow path for subnormal operands: on an Intel Xeon the
head's two backward products took 70 to 145 times as long (benchmarks/subnormals.py), halving a
run's speed. A subnormal entry can move only a sum smaller than 2^24 times that smallest normal
number (2e-31 in float32): it moves the gradient of the last hidden state of a row that fits
that well, in its last bits, but not the parameters' gradients, sums over the batch of far
larger terms (benchmarks/subnormals.py checks this at a checkpoint of such a run).
"""

from __future__ import annotations

import numpy as np

from tinygrok.kernels import ORDERED, kernel


def cross_entropy_forward_ref(
    logits: np.ndarray, targets: np.ndarray, work: type = np.float64
) -> tuple[np.ndarray, np.ndarray]:
    """logits (N, P), targets (N,) -> loss (N,) float64, probs (N, P) in `work`, the dtype both
    are computed in, a probability below its smallest normal number 0."""
    z = logits.astype(work)
    z = z - z.max(axis=1, keepdims=True)
    logsum = np.log(np.exp(z).sum(axis=1))  # (N,)
    loss = logsum - z[np.arange(len(targets)), targets]
    probs = np.exp(z - logsum[:, None])
    probs[probs < np.finfo(work).tiny] = 0
    return loss.astype(np.float64), probs


def cross_entropy_backward_ref(
    probs: np.ndarray, targets: np.ndarray, dtype: np.dtype
) -> np.ndarray:
    """probs (N, P), targets (N,) -> dlogits (N, P) in `dtype`, the gradient of the mean loss,
    computed in probs' dtype, its subnormal entries (in `dtype`) flushed to zero."""
    d = probs.copy()
    d[np.arange(len(targets)), targets] -= 1
    d = (d * probs.dtype.type(1 / len(targets))).astype(dtype)
    d[np.abs(d) < np.finfo(dtype).tiny] = 0
    return d


@kernel(fastmath=ORDERED)
def _cross_entropy_forward_nb(logits, targets, tiny, log_tiny, loss, probs):
    """Fills loss (N,) float64 and probs (N, P), computed in probs' dtype; see
    `cross_entropy_forward_ref`. An exponential of z - max below log_tiny (the log of `tiny`,
    the dtype's smallest normal number) is not computed but 0: it would be subnormal or 0."""
    N, P = logits.shape
    zero = probs.dtype.type(0)
    for n in range(N):
        zr, pr = logits[n], probs[n]
        m = pr.dtype.type(zr[0])
        for c in range(1, P):
            m = max(m, pr.dtype.type(zr[c]))
        total = zero
        for c in range(P):
            d = pr.dtype.type(zr[c]) - m
            pr[c] = np.exp(d) if d > log_tiny else zero
            total += pr[c]
        for c in range(P):
            pr[c] /= total
            if pr[c] < tiny:
                pr[c] = zero
        loss[n] = np.log(total) - (pr.dtype.type(zr[targets[n]]) - m)


@kernel(fastmath=ORDERED)
def _cross_entropy_backward_nb(probs, targets, inv_n, tiny, dlogits):
    """Fills dlogits (N, P) = (probs - onehot(targets)) / N, computed in probs' dtype (inv_n's)
    and stored in dlogits', where an entry below `tiny` (dlogits' smallest normal number) is 0;
    the target's, (p - 1) / N, is 0 or at least float32's epsilon over N."""
    N, P = probs.shape
    zero = dlogits.dtype.type(0)
    for n in range(N):
        for c in range(P):
            dlogits[n, c] = probs[n, c] * inv_n
            if dlogits[n, c] < tiny:
                dlogits[n, c] = zero
        dlogits[n, targets[n]] = (probs[n, targets[n]] - probs.dtype.type(1)) * inv_n


def cross_entropy_forward(
    logits: np.ndarray, targets: np.ndarray, engine: str, work: type = np.float64
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `cross_entropy_forward_ref`."""
    if engine != "numba":
        return cross_entropy_forward_ref(logits, targets, work)
    loss, probs = np.empty(len(targets)), np.empty(logits.shape, dtype=work)
    tiny = work(np.finfo(work).tiny)
    _cross_entropy_forward_nb(logits, targets, tiny, np.log(tiny), loss, probs)
    return loss, probs


def cross_entropy_backward(
    probs: np.ndarray, targets: np.ndarray, dtype: np.dtype, engine: str
) -> np.ndarray:
    """Dispatch on the engine; see `cross_entropy_backward_ref`."""
    if engine != "numba":
        return cross_entropy_backward_ref(probs, targets, dtype)
    dlogits = np.empty(probs.shape, dtype=dtype)
    inv_n, tiny = probs.dtype.type(1 / len(targets)), dlogits.dtype.type(np.finfo(dtype).tiny)
    _cross_entropy_backward_nb(probs, targets, inv_n, tiny, dlogits)
    return dlogits
