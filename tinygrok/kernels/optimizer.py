"""Optimizer updates over the flat vector of all parameters (N elements), in place.

AdamW, in PyTorch's order (torch.optim.AdamW, decoupled weight decay, bias correction), step t >= 1:

    p <- p (1 - lr wd)
    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    p <- p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)

SGD with momentum, as torch.optim.SGD (weight decay added to the gradient, no dampening):

    g <- g + wd p
    buf <- g                    at the first step
    buf <- mu buf + g           after it
    p <- p - lr buf
"""

from __future__ import annotations

import numpy as np


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
    p -= (lr / bc1) * m / (np.sqrt(v) / np.sqrt(bc2) + eps)


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


def adamw_update(*args, engine: str = "numpy") -> None:
    """Dispatch on the engine; see `adamw_update_ref`."""
    adamw_update_ref(*args)


def sgd_update(*args, engine: str = "numpy") -> None:
    """Dispatch on the engine; see `sgd_update_ref`."""
    sgd_update_ref(*args)
