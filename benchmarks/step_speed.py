"""Training-step speed: tinygrok (numba), tinygrok (numpy) and the same model in PyTorch eager,
measured side by side in one run, at 1 and at 2 threads.

    python benchmarks/step_speed.py [--threads 1,2] [--rounds 7] [--steps 10] [--no-torch]

Every round times `--steps` steps of each engine in turn (the numpy engine and the BLAS-only run
take fewer), and the tables give the medians over rounds, so a noisy minute on a shared machine
falls on all engines alike. Before timing, PyTorch gets tinygrok's initial parameters and must
reproduce tinygrok's loss and gradients on one batch (see torch_reference.py).

Columns: ms per step, steps per second, speed relative to PyTorch eager, the FLOPs of the matrix
products each engine performs per step (tinygrok skips the last block's work for positions that do
not reach the loss and computes the first block's prefix positions once per distinct prefix;
PyTorch, as usually written, does neither; "last only" does the first), the GFLOP/s that makes,
and that rate
as a share of BLAS's own rate on the same products measured in the same run ("BLAS products":
tinygrok's matrix products alone, on random float32 matrices, which is the floor of a tinygrok
step).
"""

from __future__ import annotations

import argparse

from _common import (
    TinygrokSteps,
    blas_products,
    gflop,
    machine_line,
    median,
    ms_per_step,
    require_torch,
    set_all_threads,
    step_products,
)

from tinygrok.config import PRESETS, Config, from_preset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds per thread count")
    ap.add_argument("--steps", type=int, default=10, help="steps per round (numba, PyTorch)")
    ap.add_argument("--batch-size", type=int, default=Config.batch_size)
    ap.add_argument("--preset", default="power", choices=list(PRESETS), help="the model and recipe")
    ap.add_argument("--no-torch", action="store_true", help="time tinygrok only")
    args = ap.parse_args()
    if not args.no_torch:
        require_torch("step_speed.py", "--no-torch")
    threads = [int(t) for t in args.threads.split(",")]

    cfg = from_preset(args.preset, batch_size=args.batch_size)
    runners = {"tinygrok numba": TinygrokSteps(cfg.replace(engine="numba"))}
    runners["tinygrok numpy"] = TinygrokSteps(cfg.replace(engine="numpy"))
    tokens, _ = runners["tinygrok numba"].batches(1)
    tiny_products = step_products(cfg, "fast", tokens)
    tiny_flops = gflop(tiny_products)
    last_flops = gflop(step_products(cfg, "last"))
    full_flops = gflop(step_products(cfg, "full"))
    runners["BLAS products"] = blas_products(tiny_products)
    flops = {"tinygrok numba": tiny_flops, "tinygrok numpy": tiny_flops}
    flops["BLAS products"] = tiny_flops
    steps = {"tinygrok numba": args.steps, "tinygrok numpy": max(1, args.steps // 4)}
    steps["BLAS products"] = args.steps
    if args.preset != "power" and not args.no_torch:
        print(
            "PyTorch rows: its GPT-2-shaped reference models the power preset only; "
            f"--preset {args.preset} times tinygrok alone"
        )
        args.no_torch = True
    if not args.no_torch:
        from torch_reference import TorchSteps, check_same_model

        params = runners["tinygrok numba"].params
        diff = check_same_model(cfg.replace(engine="numba"), params)
        print(f"PyTorch reproduces tinygrok's loss and gradients (max rel. diff {diff:.1e})")
        for name, last_only in (("PyTorch eager", False), ("PyTorch eager, last only", True)):
            runners[name] = TorchSteps(cfg, params, last_only)
            flops[name] = last_flops if last_only else full_flops
            steps[name] = args.steps
    runners["tinygrok numba"].evaluate_once()

    print(machine_line())
    print(
        f"preset {args.preset} ({cfg.layers} layers, d_model {cfg.d_model}, d_mlp {cfg.d_mlp}, "
        f"{cfg.norm}-norm, {cfg.activation}, head {cfg.head}), batch {cfg.batch_size}, "
        f"{cfg.optimizer}; medians of {args.rounds} interleaved rounds"
    )
    for n in threads:
        counts = set_all_threads(n)
        samples = ms_per_step(runners, steps, args.rounds)
        ms = {name: median(s) for name, s in samples.items()}
        blas_rate = flops["BLAS products"] / ms["BLAS products"]  # GFLOP per ms
        ref = ms.get("PyTorch eager")
        print(f"\n{n} thread(s) {counts}")
        print(
            f"{'engine':26s} {'ms/step':>8s} {'(min-max)':>15s} {'steps/s':>8s} "
            f"{'vs PyTorch':>10s} {'GFLOP':>6s} {'GFLOP/s':>8s} {'of BLAS':>8s} {'/ floor':>8s}"
        )
        for name, m in ms.items():
            lo, hi = min(samples[name]), max(samples[name])
            rel = f"{ref / m:9.2f}x" if ref else f"{'-':>10s}"
            rate = flops[name] / m
            print(
                f"{name:26s} {m:8.1f} {f'({lo:.1f}-{hi:.1f})':>15s} {1000 / m:8.1f} {rel} "
                f"{flops[name]:6.2f} {1000 * rate:8.1f} {rate / blas_rate:8.0%} "
                f"{m / ms['BLAS products']:7.2f}x"
            )
        nb = ms["tinygrok numba"]
        line = (
            f"floor (tinygrok's products at BLAS's rate): {ms['BLAS products']:.1f} ms; "
            f"numba step / floor: {nb / ms['BLAS products']:.2f}x; "
            f"numba vs numpy engine: {ms['tinygrok numpy'] / nb:.2f}x"
        )
        if ref:
            line += (
                f"; numba vs PyTorch last only: {ms['PyTorch eager, last only'] / nb:.2f}x, "
                f"vs PyTorch full: {ref / nb:.2f}x"
            )
        print(line)


if __name__ == "__main__":
    main()
