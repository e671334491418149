"""The MLP's activation with its bias: out = act(h + b).

GELU is the tanh form used by GPT-2 (PyTorch's `GELU(approximate="tanh")`):

    gelu(x)  = 0.5 x (1 + tanh(u)),        u = sqrt(2/pi) (x + 0.044715 x^3)
    gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)

ReLU: relu(x) = max(x, 0), relu'(x) = [x > 0].

Shapes: N rows, F features.
"""

from __future__ import annotations

import numpy as np

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


def bias_act_forward(
    h: np.ndarray, b: np.ndarray, act: str, engine: str = "numpy"
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `bias_act_forward_ref`."""
    return bias_act_forward_ref(h, b, act)


def bias_act_backward(
    dout: np.ndarray, pre: np.ndarray, act: str, engine: str = "numpy"
) -> np.ndarray:
    """Dispatch on the engine; see `bias_act_backward_ref`."""
    return bias_act_backward_ref(dout, pre, act)
