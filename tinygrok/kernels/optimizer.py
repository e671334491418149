"""Optimizer updates over the flat vector of all parameters (N elements), in place.

AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization", Kingma & Ba 2015 for
Adam), in PyTorch's order (torch.optim.AdamW, bias correction), step t >= 1:

    p <- p (1 - lr wd)
    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    p <- p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)

SGD with momentum, as torch.optim.SGD (weight decay added to the gradient, no dampening):

    g <- g + wd p
    buf <- g                    at the first step
    buf <- mu buf + g           after it
    p <- p - lr buf

Every element is independent; the numba kernels' scalars arrive in the parameters' dtype, as
NumPy treats Python floats in the reference.
"""

from __future__ import annotations

import math

import numpy as np

from tinygrok.kernels import kernel


def adamw_update_ref(
    p: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: int,
) -> None:
    """p, g, m, v (N,); updates p, m and v in place."""
    p *= 1 - lr * weight_decay
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    bc1, bc2 = 1 - beta1**step, 1 - beta2**step
    p -= (lr / bc1) * m / (np.sqrt(v) / math.sqrt(bc2) + eps)


def sgd_update_ref(
    p: np.ndarray,
    g: np.ndarray,
    buf: np.ndarray,
    lr: float,
    momentum: float,
    weight_decay: float,
    step: int,
) -> None:
    """p, g, buf (N,); updates p and buf in place."""
    d = g + weight_decay * p
    if step == 1:
        buf[:] = d
    else:
        buf *= momentum
        buf += d
    p -= lr * buf


@kernel
def _adamw_update_nb(p, g, m, v, decay, beta1, c1, beta2, c2, step_size, sqrt_bc2, eps):
    """p, g, m, v (N,); decay = 1 - lr wd, c1 = 1 - beta1, c2 = 1 - beta2,
    step_size = lr / (1 - beta1^t), sqrt_bc2 = sqrt(1 - beta2^t)."""
    for i in range(p.size):
        p[i] *= decay
        m[i] = beta1 * m[i] + c1 * g[i]
        v[i] = beta2 * v[i] + c2 * g[i] * g[i]
        p[i] -= step_size * m[i] / (np.sqrt(v[i]) / sqrt_bc2 + eps)


@kernel
def _sgd_update_nb(p, g, buf, lr, momentum, weight_decay, first):
    """p, g, buf (N,); `first` starts the momentum buffer at the first step's gradient."""
    for i in range(p.size):
        d = g[i] + weight_decay * p[i]
        buf[i] = d if first else momentum * buf[i] + d
        p[i] -= lr * buf[i]


def adamw_update(
    p: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: int,
    engine: str,
) -> None:
    """Dispatch on the engine; see `adamw_update_ref`."""
    if engine != "numba":
        adamw_update_ref(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step)
        return
    k = p.dtype.type
    bc1, bc2 = 1 - beta1**step, 1 - beta2**step
    decay, step_size = k(1 - lr * weight_decay), k(lr / bc1)
    _adamw_update_nb(
        p,
        g,
        m,
        v,
        decay,
        k(beta1),
        k(1 - beta1),
        k(beta2),
        k(1 - beta2),
        step_size,
        k(math.sqrt(bc2)),
        k(eps),
    )


def sgd_update(
    p: np.ndarray,
    g: np.ndarray,
    buf: np.ndarray,
    lr: float,
    momentum: float,
    weight_decay: float,
    step: int,
    engine: str,
) -> None:
    """Dispatch on the engine; see `sgd_update_ref`."""
    if engine != "numba":
        sgd_update_ref(p, g, buf, lr, momentum, weight_decay, step)
        return
    k = p.dtype.type
    _sgd_update_nb(p, g, buf, k(lr), k(momentum), k(weight_decay), step == 1)
