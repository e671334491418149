"""Per-kernel timings, numba against its NumPy reference, on the default model's shapes.

    python benchmarks/kernels.py [--threads 1] [--repeats 30]

Each kernel runs on the arrays of a default training step (batch 512) in a block that works on
every position (B * T rows), or, where named "last", in the last block, which works on the last
position only. The fast model's first block runs its layer norm and q/k/v projections once per
distinct (token, position), about 196 rows of a default batch ("196 rows"), and the backward of
that gather adds 2,048 rows of gradient into those 196 ("scatter-add"). Times are medians of
interleaved repeats, in microseconds per call. The activation kernels overwrite their input, so
each call gets a fresh copy of it, in both engines (the copy's time is in both columns).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import machine_line, set_all_threads

from tinygrok.config import Config
from tinygrok.kernels.activation import bias_act_backward, bias_act_forward
from tinygrok.kernels.attention import attention_backward, attention_forward
from tinygrok.kernels.crossentropy import cross_entropy_backward, cross_entropy_forward
from tinygrok.kernels.embedding import embedding_backward, scatter_add_rows
from tinygrok.kernels.layernorm import layernorm_backward, layernorm_forward
from tinygrok.kernels.optimizer import adamw_update, sgd_update
from tinygrok.params import n_params
from tinygrok.tasks import SEQ_LEN, vocab_size


def cases(cfg: Config) -> dict:
    """name -> function(engine) running the kernel once on the model's shapes."""
    rng = np.random.default_rng(0)
    B, T, C, F, P, NH = cfg.batch_size, SEQ_LEN, cfg.d_model, cfg.d_mlp, cfg.p, cfg.heads
    V, N = vocab_size(cfg.p, len(cfg.tasks)), n_params(cfg)

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    h, b_fc, h_last = r(B * T, F), r(F), r(B, F)
    x, w = r(B * T, C), r(C)
    _, mean, rstd = layernorm_forward(x, w, w, "numpy")
    q, q_last, kv = r(B, T, C), r(B, 1, C), r(B * T, 2 * C)
    own = np.arange(B * T).reshape(B, T)  # each example's own keys and values
    _, a = attention_forward(q, kv, own, NH, "numpy")
    _, a_last = attention_forward(q_last, kv, own, NH, "numpy")
    dy, dy_last = r(B, T, C), r(B, 1, C)
    logits, targets = r(B, P), rng.integers(0, P, B)
    _, probs = cross_entropy_forward(logits, targets, "numpy")
    tokens = rng.integers(0, V, (B, T))
    DISTINCT = 196  # distinct (token, position) pairs of a default batch
    x_few, index = x[:DISTINCT], rng.integers(0, DISTINCT, B * T)
    _, mean_few, rstd_few = layernorm_forward(x_few, w, w, "numpy")
    d_qkv = r(B * T, 3 * C)
    p, g, m, v2 = r(N), r(N), r(N), np.abs(r(N))
    return {
        "GELU + bias forward": lambda e: bias_act_forward(h.copy(), b_fc, "gelu", e),
        "GELU + bias backward": lambda e: bias_act_backward(h.copy(), h, "gelu", e),
        "GELU + bias backward (last)": lambda e: bias_act_backward(
            h_last.copy(), h_last, "gelu", e
        ),
        "ReLU + bias forward": lambda e: bias_act_forward(h.copy(), b_fc, "relu", e),
        "ReLU + bias backward": lambda e: bias_act_backward(h.copy(), h, "relu", e),
        "layer norm forward": lambda e: layernorm_forward(x, w, w, e),
        "layer norm backward": lambda e: layernorm_backward(x, x, w, mean, rstd, e),
        "layer norm forward (196 rows)": lambda e: layernorm_forward(x_few, w, w, e),
        "layer norm backward (196 rows)": lambda e: layernorm_backward(
            x_few, x_few, w, mean_few, rstd_few, e
        ),
        "scatter-add (2,048 into 196)": lambda e: scatter_add_rows(d_qkv, index, DISTINCT, e),
        "attention forward": lambda e: attention_forward(q, kv, own, NH, e),
        "attention backward": lambda e: attention_backward(dy, q, kv, own, a, NH, e),
        "attention forward (last)": lambda e: attention_forward(q_last, kv, own, NH, e),
        "attention backward (last)": lambda e: attention_backward(
            dy_last, q_last, kv, own, a_last, NH, e
        ),
        "cross-entropy forward": lambda e: cross_entropy_forward(logits, targets, e),
        "cross-entropy backward": lambda e: cross_entropy_backward(probs, targets, np.float32, e),
        "embedding backward": lambda e: embedding_backward(dy, tokens, V, e),
        "AdamW update (all params)": lambda e: adamw_update(
            p, g, m, v2, 1e-3, 0.9, 0.98, 1e-8, 1.0, 5, engine=e
        ),
        "SGD update (all params)": lambda e: sgd_update(p, g, m, 1e-3, 0.9, 1.0, 5, engine=e),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--threads", default="1", help="comma-separated BLAS thread counts (the NumPy references')"
    )
    ap.add_argument("--repeats", type=int, default=30, help="timed calls per kernel and engine")
    args = ap.parse_args()
    cfg = Config()
    kernels = cases(cfg)
    print(machine_line())
    print(f"default model shapes (batch {cfg.batch_size}); float32; median microseconds per call")
    for n in (int(t) for t in args.threads.split(",")):
        print(f"\n{n} thread(s) {set_all_threads(n)}")
        print(f"{'kernel':30s} {'numpy':>9s} {'numba':>9s} {'speed-up':>9s}")
        total = {"numpy": 0.0, "numba": 0.0}
        for name, run in kernels.items():
            times: dict[str, list[float]] = {"numpy": [], "numba": []}
            for e in times:
                run(e)  # warm up (and compile, the first time)
            for _ in range(args.repeats):
                for e, ts in times.items():
                    t = time.perf_counter()
                    run(e)
                    ts.append(1e6 * (time.perf_counter() - t))
            us = {e: float(np.median(ts)) for e, ts in times.items()}
            if not name.startswith("SGD"):  # a step runs AdamW or SGD, not both
                total = {e: total[e] + us[e] for e in total}
            speedup = us["numpy"] / us["numba"]
            print(f"{name:30s} {us['numpy']:9.0f} {us['numba']:9.0f} {speedup:8.1f}x")
        print(
            f"{'sum (one of each, AdamW)':30s} {total['numpy']:9.0f} {total['numba']:9.0f} "
            f"{total['numpy'] / total['numba']:8.1f}x"
        )


if __name__ == "__main__":
    main()
