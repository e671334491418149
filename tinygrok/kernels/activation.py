"""The MLP's activation with its bias: out = act(h + b).

GELU is the tanh form used by GPT-2 (PyTorch's `GELU(approximate="tanh")`):

    gelu(x)  = 0.5 x (1 + tanh(u)),        u = sqrt(2/pi) (x + 0.044715 x^3)
    gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)

ReLU: relu(x) = max(x, 0), relu'(x) = [x > 0]. Reference: Hendrycks & Gimpel 2016, "Gaussian
Error Linear Units (GELUs)", arXiv:1606.08415, for GELU and its tanh approximation.

The float32 kernel evaluates tanh with Eigen's rational approximation (`generic_fast_tanh_float`,
absolute error below 1e-6): numba calls libm's scalar `tanhf`, which does not vectorize and made the
kernel ten times slower than NumPy. float64 keeps the exact `np.tanh`.

Both work in place: the forward turns its input h (the fresh product x W_fc) into h + b, and
for ReLU into the output itself; the backward turns dout (the fresh product dy W_proj^T) into
dpre. Writing a second and third (N, F) array made the ReLU pair several times slower than the
in-place loops, which only stream h once.

Shapes: N rows, F features.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from tinygrok.kernels import FASTMATH, kernel

GELU_C = 0.044715
SQRT_2_OVER_PI = float(np.sqrt(2.0 / np.pi))


def bias_act_forward_ref(h: np.ndarray, b: np.ndarray, act: str) -> tuple[np.ndarray, np.ndarray]:
    """h (N, F), b (F,) -> out (N, F) = act(h + b), and what the backward reads (N, F): out itself
    for ReLU (relu'(pre) = [out > 0]), pre = h + b for GELU. Overwrites h with h + b."""
    h += b
    if act == "relu":
        return np.maximum(h, 0, out=h), h
    c, s = h.dtype.type(GELU_C), h.dtype.type(SQRT_2_OVER_PI)
    return h * h.dtype.type(0.5) * (1 + np.tanh(s * (h + c * h * h * h))), h


def bias_act_backward_ref(dout: np.ndarray, saved: np.ndarray, act: str) -> np.ndarray:
    """dout (N, F), the forward's saved (N, F) -> dpre (N, F) = dout act'(pre), in dout's memory;
    the bias gradient is dpre summed over rows."""
    if act == "relu":
        dout *= saved > 0
        return dout
    pre = saved
    c, s, half = pre.dtype.type(GELU_C), pre.dtype.type(SQRT_2_OVER_PI), pre.dtype.type(0.5)
    t = np.tanh(s * (pre + c * pre * pre * pre))
    dout *= half * (1 + t) + half * pre * (1 - t * t) * s * (1 + 3 * c * pre * pre)
    return dout


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


@kernel
def _bias_relu_forward_nb(h, b):
    """h = relu(h + b), in place."""
    N, F = h.shape
    zero = h.dtype.type(0)
    for n in range(N):
        for f in range(F):
            h[n, f] = max(h[n, f] + b[f], zero)


@kernel
def _bias_gelu_forward_nb(h, b, c, s, rational, out):
    """h += b (the pre-activation, in place) and out = gelu(h)."""
    N, F = h.shape
    one, half = h.dtype.type(1), h.dtype.type(0.5)
    for n in range(N):
        for f in range(F):
            x = h[n, f] + b[f]
            h[n, f] = x
            out[n, f] = half * x * (one + _tanh(s * (x + c * x * x * x), rational))


@kernel
def _relu_backward_nb(dout, out):
    """dout *= [out > 0], in place."""
    N, F = out.shape
    one, zero = out.dtype.type(1), out.dtype.type(0)
    for n in range(N):
        for f in range(F):
            dout[n, f] *= one if out[n, f] > zero else zero


@kernel
def _gelu_backward_nb(dout, pre, c, s, rational):
    """dout *= gelu'(pre), in place."""
    N, F = pre.shape
    one, half, three = pre.dtype.type(1), pre.dtype.type(0.5), pre.dtype.type(3)
    for n in range(N):
        for f in range(F):
            x = pre[n, f]
            t = _tanh(s * (x + c * x * x * x), rational)
            g = half * (one + t) + half * x * (one - t * t) * s * (one + three * c * x * x)
            dout[n, f] *= g


def bias_act_forward(
    h: np.ndarray, b: np.ndarray, act: str, engine: str
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `bias_act_forward_ref` (h is overwritten)."""
    if engine != "numba":
        return bias_act_forward_ref(h, b, act)
    if act == "relu":
        _bias_relu_forward_nb(h, b)
        return h, h
    k, out = h.dtype.type, np.empty_like(h)
    _bias_gelu_forward_nb(h, b, k(GELU_C), k(SQRT_2_OVER_PI), h.dtype == np.float32, out)
    return out, h


def bias_act_backward(dout: np.ndarray, saved: np.ndarray, act: str, engine: str) -> np.ndarray:
    """Dispatch on the engine; see `bias_act_backward_ref` (dout is overwritten)."""
    if engine != "numba":
        return bias_act_backward_ref(dout, saved, act)
    if act == "relu":
        _relu_backward_nb(dout, saved)
    else:
        k = saved.dtype.type
        _gelu_backward_nb(dout, saved, k(GELU_C), k(SQRT_2_OVER_PI), saved.dtype == np.float32)
    return dout
