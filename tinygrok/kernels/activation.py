"""The MLP's activation with its bias: out = act(h + b).

GELU is the tanh form used by GPT-2 (PyTorch's `GELU(approximate="tanh")`):

    gelu(x)  = 0.5 x (1 + tanh(u)),        u = sqrt(2/pi) (x + 0.044715 x^3)
    gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)

ReLU: relu(x) = max(x, 0), relu'(x) = [x > 0]. Reference: Hendrycks & Gimpel 2016, "Gaussian
Error Linear Units (GELUs)", arXiv:1606.08415, for GELU and its tanh approximation.

The float32 kernel evaluates tanh with Eigen's rational approximation (`generic_fast_tanh_float`,
absolute error below 1e-6): numba calls libm's scalar `tanhf`, which does not vectorize and made the
kernel ten times slower than NumPy. float64 keeps the exact `np.tanh`.

Shapes: N rows, F features.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from tinygrok.kernels import FASTMATH

GELU_C = 0.044715
SQRT_2_OVER_PI = float(np.sqrt(2.0 / np.pi))


def bias_act_forward_ref(h: np.ndarray, b: np.ndarray, act: str) -> tuple[np.ndarray, np.ndarray]:
    """h (N, F), b (F,) -> pre (N, F) = h + b, out (N, F) = act(pre)."""
    pre = h + b
    if act == "relu":
        return pre, np.maximum(pre, 0)
    c, s = pre.dtype.type(GELU_C), pre.dtype.type(SQRT_2_OVER_PI)
    return pre, pre * pre.dtype.type(0.5) * (1 + np.tanh(s * (pre + c * pre * pre * pre)))


def bias_act_backward_ref(dout: np.ndarray, pre: np.ndarray, act: str) -> np.ndarray:
    """dout (N, F), pre (N, F) -> dpre (N, F); the bias gradient is dpre summed over rows."""
    if act == "relu":
        return dout * (pre > 0)
    c, s, half = pre.dtype.type(GELU_C), pre.dtype.type(SQRT_2_OVER_PI), pre.dtype.type(0.5)
    t = np.tanh(s * (pre + c * pre * pre * pre))
    grad = half * (1 + t) + half * pre * (1 - t * t) * s * (1 + 3 * c * pre * pre)
    return dout * grad


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _tanh(u, rational):
    """tanh(u): Eigen's float32 rational approximation when `rational`, else np.tanh.

    Inlined into the kernels (numba IR inlining), so that their loops vectorize."""
    if not rational:
        return np.tanh(u)
    clamp = np.float32(7.90531110763549805)  # tanh rounds to +-1 beyond this in float32
    x = min(max(u, -clamp), clamp)
    x2 = x * x
    p = np.float32(-2.76076847742355e-16)
    p = p * x2 + np.float32(2.00018790482477e-13)
    p = p * x2 + np.float32(-8.60467152213735e-11)
    p = p * x2 + np.float32(5.12229709037114e-08)
    p = p * x2 + np.float32(1.48572235717979e-05)
    p = p * x2 + np.float32(6.37261928875436e-04)
    p = p * x2 + np.float32(4.89352455891786e-03)
    q = np.float32(1.19825839466702e-06)
    q = q * x2 + np.float32(1.18534705686654e-04)
    q = q * x2 + np.float32(2.26843463243900e-03)
    q = q * x2 + np.float32(4.89352518554385e-03)
    t = x * p / q
    return np.float32(1) if u >= clamp else (np.float32(-1) if u <= -clamp else t)


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def _bias_act_forward_nb(h, b, gelu, c, s, rational, pre, out):
    """Fills pre = h + b and out = act(pre); one row per iteration (disjoint outputs)."""
    N, F = h.shape
    one, half, zero = pre.dtype.type(1), pre.dtype.type(0.5), pre.dtype.type(0)
    for n in prange(N):
        for f in range(F):
            x = h[n, f] + b[f]
            pre[n, f] = x
            if gelu:
                out[n, f] = half * x * (one + _tanh(s * (x + c * x * x * x), rational))
            else:
                out[n, f] = max(x, zero)


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def _bias_act_backward_nb(dout, pre, gelu, c, s, rational, dpre):
    """Fills dpre = dout * act'(pre); one row per iteration (disjoint outputs)."""
    N, F = pre.shape
    one, half, zero = pre.dtype.type(1), pre.dtype.type(0.5), pre.dtype.type(0)
    three = pre.dtype.type(3)
    for n in prange(N):
        for f in range(F):
            x = pre[n, f]
            if gelu:
                t = _tanh(s * (x + c * x * x * x), rational)
                g = half * (one + t) + half * x * (one - t * t) * s * (one + three * c * x * x)
            else:
                g = one if x > zero else zero
            dpre[n, f] = dout[n, f] * g


def bias_act_forward(
    h: np.ndarray, b: np.ndarray, act: str, engine: str
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `bias_act_forward_ref`."""
    if engine != "numba":
        return bias_act_forward_ref(h, b, act)
    k = h.dtype.type
    pre, out = np.empty_like(h), np.empty_like(h)
    gelu, rational = act == "gelu", h.dtype == np.float32
    _bias_act_forward_nb(h, b, gelu, k(GELU_C), k(SQRT_2_OVER_PI), rational, pre, out)
    return pre, out


def bias_act_backward(dout: np.ndarray, pre: np.ndarray, act: str, engine: str) -> np.ndarray:
    """Dispatch on the engine; see `bias_act_backward_ref`."""
    if engine != "numba":
        return bias_act_backward_ref(dout, pre, act)
    k = pre.dtype.type
    dpre = np.empty_like(pre)
    gelu, rational = act == "gelu", pre.dtype == np.float32
    _bias_act_backward_nb(dout, pre, gelu, k(GELU_C), k(SQRT_2_OVER_PI), rational, dpre)
    return dpre
