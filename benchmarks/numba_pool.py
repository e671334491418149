"""Why tinygrok's numba kernels run serially, at two threads too: what numba's thread pool costs.

    python benchmarks/numba_pool.py [--rounds 7]

For each of numba's threading layers that loads here (workqueue, numba's own; omp, GNU OpenMP),
in a process of its own: the call of a parallel kernel with nothing to do (a prange over two
items), and a row-wise kernel of a training step's size (bias + ReLU over 1,218 x 512 float32,
the first block's MLP activation) compiled serial and parallel (2 threads), each alone and each
after the matrix product that feeds it in a step (1,218 x 128 @ 128 x 512, BLAS on 2 threads), as
the kernels sit between products. The kernels are this script's own, not tinygrok's. Medians of
interleaved rounds, in microseconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROWS, C, F = 1218, 128, 512  # the first block's stream rows, d_model, d_mlp (default batch)
LAYERS = ("workqueue", "omp")


def child(layer: str, rounds: int) -> None:
    """Time the kernels under one threading layer (this process's) and print one line."""
    os.environ["NUMBA_THREADING_LAYER"] = layer
    os.environ["NUMBA_NUM_THREADS"] = "2"  # the parallel kernels' pool, whatever the core count
    import numpy as np
    from _common import median, set_all_threads
    from numba import config, njit, prange, threading_layer

    flags = {"fastmath": True, "error_model": "numpy"}

    @njit(parallel=True, **flags)
    def empty(x):
        for i in prange(x.shape[0]):
            x[i] = x[i]

    def bias_relu(h, b):
        for n in prange(h.shape[0]):  # prange is range in a serial compilation
            for f in range(h.shape[1]):
                h[n, f] = max(h[n, f] + b[f], np.float32(0))

    serial, parallel = njit(**flags)(bias_relu), njit(parallel=True, **flags)(bias_relu)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((ROWS, C), np.float32), rng.standard_normal((C, F), np.float32)
    b, h, two = np.zeros(F, np.float32), np.empty((ROWS, F), np.float32), np.zeros(2, np.float32)
    empty(two), serial(h, b), parallel(h, b)
    if threading_layer() != layer:
        raise RuntimeError(f"numba loaded {threading_layer()}, not {layer}")
    set_all_threads(2)

    def product_then(kernel):
        def step():
            np.matmul(x, w, out=h)
            kernel(h, b)

        return step

    cases = {
        "empty call": lambda: empty(two),
        "serial": lambda: serial(h, b),
        "parallel": lambda: parallel(h, b),
        "product": lambda: np.matmul(x, w, out=h),
        "product + serial": product_then(serial),
        "product + parallel": product_then(parallel),
    }
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, f in cases.items():
            times = []
            for _ in range(200):
                t = time.perf_counter()
                f()
                times.append(time.perf_counter() - t)
            samples[name].append(median(times) * 1e6)
    cells = "".join(f"{median(v):>10.1f}" for v in samples.values())
    print(f"{layer:<10}{config.NUMBA_NUM_THREADS:>5}{cells}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds per layer")
    ap.add_argument("--layer", choices=LAYERS, help=argparse.SUPPRESS)  # the child's
    args = ap.parse_args()
    if args.layer:
        child(args.layer, args.rounds)
        return
    from _common import machine_line

    print(machine_line())
    print(f"bias + ReLU on {ROWS:,} x {F} float32 after a {ROWS:,} x {C} @ {C} x {F} product")
    print("(BLAS on 2 threads); median microseconds per call")
    heads = ("empty", "serial", "parallel", "product", "+serial", "+parallel")
    print(f"{'layer':<10}{'pool':>5}" + "".join(f"{h:>10}" for h in heads))
    for layer in LAYERS:
        cmd = [sys.executable, __file__, "--layer", layer, "--rounds", str(args.rounds)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            last = (run.stderr.strip().splitlines() or ["failed"])[-1]
            print(f"{layer:<10} not available here ({last})")
        else:
            print(run.stdout, end="")


if __name__ == "__main__":
    main()
