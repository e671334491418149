"""What subnormal numbers cost the head's backward products, and what flushing them saves.

    python benchmarks/subnormals.py RUN [--rounds 30] [--threads 1]

RUN is a run folder with a checkpoint, e.g. one of `--preset report` deep in its fit: past step
50,000 or so its float32 softmax gives many classes a probability below 512 times float32's
smallest normal number (1.2e-38), so that their gradient over a batch of 512 is subnormal. At the
checkpoint's parameters, on the next training batch, the script computes the cross-entropy
gradient dlogits (N, P) as the kernel does, once with its subnormal entries kept and once
flushed to zero (the kernel's output), prints the share of subnormal entries, and times the
head's two backward products with each: the weight gradient h^T dlogits and the gradient into
the last hidden state dlogits W^T (h a standard normal (N, C) array: the time depends on the
subnormal operands, not on h's values), on `--threads` BLAS threads, interleaved rounds,
medians. It also
says whether the two give the same products bit for bit, and then how many of the model's
parameter gradients (the whole backward from each dlogits) differ at all. Last, a whole
training step's forward and backward, as the run computes it and with subnormal floats treated
as zero in the CPU (`kernels.subnormals.subnormals_as_zero`, what training does since), timed in
turn, and whether any parameter gradient differs between the two; on more than one thread also
with subnormals as zero on the calling thread only, BLAS's workers left as they are.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import numpy as np
from _common import machine_line, median, set_all_threads

from tinygrok import fast
from tinygrok import layers as L
from tinygrok.checkpoint import load_checkpoint
from tinygrok.folders import CHECKPOINT, read_config
from tinygrok.kernels.subnormals import subnormals_as_zero
from tinygrok.params import Params, init_params, param_shapes
from tinygrok.tasks import Batches, make_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a run folder with a checkpoint")
    ap.add_argument("--rounds", type=int, default=30, help="interleaved rounds per product")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads")
    args = ap.parse_args()
    threads = set_all_threads(args.threads)
    cfg, _ = read_config(args.run)
    ckpt = load_checkpoint(args.run / CHECKPOINT, cfg)
    params, _ = init_params(cfg)
    params.flat[:] = ckpt.params
    data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
    tokens, targets = Batches(data, cfg.batch_size, cfg.seed, cfg.epoch_batches)(ckpt.step + 1)
    z, _ = fast.forward(params, tokens, cfg)
    _, c_ce = L.cross_entropy_forward(z, targets, cfg.engine, cfg.loss_dtype)
    flushed = L.cross_entropy_backward(1.0, c_ce)[0]  # (N, P)
    rows, inv_n = np.arange(len(targets)), c_ce.probs.dtype.type(1 / len(targets))
    kept = c_ce.probs * inv_n
    kept[rows, targets] = (c_ce.probs[rows, targets] - 1) * inv_n
    kept = kept.astype(flushed.dtype)
    tiny = np.finfo(kept.dtype).tiny
    share = np.mean((kept != 0) & (np.abs(kept) < tiny))
    w = params["head.w"]  # (C, P)
    h = np.random.default_rng(0).standard_normal((len(targets), w.shape[0])).astype(w.dtype)
    products = {
        f"h^T dlogits ({w.shape[0]} x {w.shape[1]})": lambda d: h.T @ d,
        f"dlogits W^T ({len(targets)} x {w.shape[0]})": lambda d: d @ w.T,
    }
    print(machine_line())
    print(f"{args.run}: step {ckpt.step:,}, batch of {len(targets)}, {threads['blas']} thread(s)")
    print(
        f"cross-entropy gradient {flushed.shape[0]} x {flushed.shape[1]} ({flushed.dtype}): "
        f"{100 * share:.1f}% of its entries subnormal before the flush"
    )
    print(f"{'median us per product':28s}{'kept':>9s}{'flushed':>9s}{'ratio':>8s}  same result")
    for name, product in products.items():
        times: dict[str, list[float]] = {"kept": [], "flushed": []}
        for _ in range(args.rounds):
            for label, d in (("kept", kept), ("flushed", flushed)):
                t = time.perf_counter()
                product(d)
                times[label].append(1e6 * (time.perf_counter() - t))
        us = {label: median(ts) for label, ts in times.items()}
        same = "yes" if np.array_equal(product(kept), product(flushed)) else "no"
        print(
            f"{name:28s}{us['kept']:9.0f}{us['flushed']:9.0f}"
            f"{us['kept'] / us['flushed']:7.0f}x  {same}"
        )
    # each from a forward of its own (a backward may overwrite its cache's arrays)
    grads = [fast.backward(d, fast.forward(params, tokens, cfg)[1]) for d in (kept, flushed)]
    print(f"parameter gradients from the two: {differing(*grads)}")
    modes = {"as is": contextlib.nullcontext, "subnormals as zero": subnormals_as_zero}
    if threads["blas"] > 1:
        modes["subnormals as zero, calling thread only"] = lambda: subnormals_as_zero(
            blas_workers=False
        )
    buffers = {m: Params.zeros(param_shapes(cfg), params.flat.dtype) for m in modes}
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds // 3):
        for mode, block in modes.items():
            with block():
                t = time.perf_counter()
                fast.loss_and_grads(params, tokens, targets, cfg, buffers[mode])
                times[mode].append(1e3 * (time.perf_counter() - t))
    print("a step's forward and backward, median ms:")
    for mode in modes:
        print(f"  {mode:40s}{median(times[mode]):7.1f}")
    print("parameter gradients against as is:")
    for mode in list(modes)[1:]:
        print(f"  {mode:40s}{differing(buffers['as is'].views, buffers[mode].views)}")


def differing(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> str:
    """How many of two gradient tables' tensors (name -> array) differ at all, and which."""
    names = [n for n in a if not np.array_equal(a[n], b[n])]
    return f"{len(names)} of {len(a)} differ" + (f" ({', '.join(names)})" if names else "")


if __name__ == "__main__":
    main()
