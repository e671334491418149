"""The backward pass checked against finite differences, in float64: layer by layer, then the model.

A layer's backward maps dout, the gradient of some loss with respect to the layer's output, to
the gradients of that loss with respect to its inputs. Pick the loss `sum(out * dout)` for a random
dout: its gradient with respect to out is dout, so the backward must return its derivative, which
centered differences measure one coordinate at a time (CS231n's gradient check):

    d loss / d theta_i ~ (loss(theta + h e_i) - loss(theta - h e_i)) / (2 h)

Then the whole model, loss = mean cross-entropy, every parameter tensor (`tinygrok gradcheck`
prints the same table). Errors are |analytic - numeric| / max(|numeric|, 1e-4); the script exits 1
if any exceeds its tolerance.

    python examples/03_backward.py [--engine numba] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np

from tinygrok import layers as L
from tinygrok.config import ENGINES
from tinygrok.gradcheck import (
    TOL,
    check_gradients,
    checked_setup,
    format_report,
    numeric_grad,
    relative_error,
    small_config,
)


def check_layer(
    name: str,
    fwd: Callable[..., tuple[np.ndarray, tuple]],
    bwd: Callable[[np.ndarray, tuple], tuple[np.ndarray, dict]],
    inputs: dict[str, np.ndarray],
    max_coords: int,
    rng: np.random.Generator,
) -> bool:
    """Check `bwd` (dout, cache -> dx, grads keyed like the inputs) against centered differences
    of sum(fwd(**inputs)[0] * dout); print one line per input; True if all are within TOL."""
    out, cache = fwd(**inputs)
    dout = rng.standard_normal(out.shape)
    dx, grads = bwd(dout, cache)
    grads = {"x": dx} | grads
    ok = True
    for arg, value in inputs.items():
        flat = value.reshape(-1)  # a view: numeric_grad nudges the input itself
        coords = rng.permutation(flat.size)[:max_coords]

        def loss() -> float:
            return float(np.sum(fwd(**inputs)[0] * dout))

        err = relative_error(grads[arg].reshape(-1)[coords], numeric_grad(loss, flat, coords)).max()
        ok &= err <= TOL
        print(f"  {name:10s} d{arg:7s} {str(value.shape):12s} max rel err {err:.2e}", end="")
        print(f"  {'OK' if err <= TOL else 'FAIL'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=ENGINES, default="numpy", help="kernel path")
    parser.add_argument("--quick", action="store_true", help="fewer coordinates, one block")
    args = parser.parse_args()
    e, coords = args.engine, 12 if args.quick else 48
    rng = np.random.default_rng(0)
    B, T, C, NH, F = 3, 4, 8, 2, 16

    def randn(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape)

    print(f"one layer at a time: loss = sum(out * dout), float64, engine {e}, tol {TOL:g}")
    ok = check_layer(
        "layernorm",
        lambda x, w, b: L.layernorm_forward(x, {"w": w, "b": b}, e),
        L.layernorm_backward,
        {"x": randn(B, T, C), "w": 1 + 0.1 * randn(C), "b": 0.1 * randn(C)},
        coords,
        rng,
    )
    ok &= check_layer(
        "attention",
        lambda x, **p: L.attention_forward(x, p, NH, e),
        L.attention_backward,
        {
            "x": randn(B, T, C),
            "w_qkv": randn(C, 3 * C) / np.sqrt(C),
            "b_qkv": 0.1 * randn(3 * C),
            "w_o": randn(C, C) / np.sqrt(C),
            "b_o": 0.1 * randn(C),
        },
        coords,
        rng,
    )
    ok &= check_layer(
        "mlp",
        lambda x, **p: L.mlp_forward(x, p, "gelu", e),
        L.mlp_backward,
        {
            "x": randn(B * T, C),
            "w_fc": randn(C, F) / np.sqrt(C),
            "b_fc": 0.1 * randn(F),
            "w_proj": randn(F, C) / np.sqrt(F),
            "b_proj": 0.1 * randn(C),
        },
        coords,
        rng,
    )

    cfg = small_config(tasks=("addition", "division"), layers=1 if args.quick else 2, engine=e)
    params, tokens, targets = checked_setup(cfg)
    print(f"\nthe whole model: loss = mean cross-entropy of {len(tokens)} examples, ", end="")
    print(f"{params.flat.size:,} parameters in {len(params.shapes)} tensors")
    checks = check_gradients(cfg, params, tokens, targets, max_coords=coords)
    print(format_report(checks))
    ok &= all(c.ok for c in checks)
    print("\nevery gradient matches its finite differences" if ok else "\nFAIL", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
