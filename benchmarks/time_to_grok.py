"""Time to grok: wall seconds of training until validation accuracy >= 95% on the default
division run, tinygrok against the same model and recipe in PyTorch eager.

    python benchmarks/time_to_grok.py [--seeds 0,1] [--max-steps 20000] [--threads 2]

Recipe (README.md's defaults): division mod 97, train fraction 0.5, batch 512, AdamW lr 1e-3,
betas (0.9, 0.98), weight decay 1, linear warmup over 10 steps, evaluation every 50 steps on the
full training and validation sets (loss and accuracy). PyTorch starts from tinygrok's initial
parameters and sees the same batches, so both follow nearly the same path and differ mostly in
speed; each reports the step at which it generalized.

The two run in lockstep: 50 steps and an evaluation of one, then of the other, each on its own
clock. A busy minute on a shared machine so slows both alike. tinygrok's side is its training
step and `train.evaluate_run`, what `tinygrok run` does between two log lines (the run folder's
file writes, a few milliseconds per evaluation, are left out). Compilation is not timed: the
kernels are loaded before the clocks start. Takes minutes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from _common import TinygrokSteps, machine_line, require_torch, set_all_threads

from tinygrok.config import Config
from tinygrok.tasks import make_dataset
from tinygrok.train import evaluate_run


def race(cfg: Config, use_torch: bool) -> dict[str, tuple[int | None, float]]:
    """name -> (step of the first evaluation with validation >= threshold or None, seconds)."""
    data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
    tiny = TinygrokSteps(cfg.replace(engine="numba"))
    warm = TinygrokSteps(cfg.replace(engine="numba"))  # load the kernels before any clock runs
    warm(1)
    warm.evaluate_once()

    def tinygrok_eval() -> float:
        return evaluate_run(tiny.params, data, cfg)["val_acc"]

    runners = {"tinygrok": (tiny, tinygrok_eval)}
    if use_torch:
        from torch_reference import TorchSteps

        torch_steps = TorchSteps(cfg, tiny.params)  # copies the initial parameters

        def torch_eval() -> float:
            torch_steps.evaluate(data[0].train_x, data[0].train_y)
            return torch_steps.evaluate(data[0].val_x, data[0].val_y)[1]

        runners["PyTorch"] = (torch_steps, torch_eval)
    clock = {name: 0.0 for name in runners}
    result: dict[str, tuple[int | None, float]] = {}
    for step in range(0, cfg.steps + 1, cfg.eval_every):
        for name, (steps, evaluate_fn) in runners.items():
            if name in result:
                continue
            t = time.perf_counter()
            if step:
                steps(cfg.eval_every)
            val_acc = evaluate_fn()
            clock[name] += time.perf_counter() - t
            if val_acc >= cfg.generalized_threshold:
                result[name] = (step, clock[name])
            print(f"  {name} step {step}: val {val_acc:.3f}, {clock[name]:.0f} s", file=sys.stderr)
        if len(result) == len(runners):
            break
    return {name: result.get(name, (None, clock[name])) for name in runners}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0", help="comma-separated seeds")
    ap.add_argument("--max-steps", type=int, default=20_000, help="give up after this many steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-torch", action="store_true", help="time tinygrok only")
    args = ap.parse_args()
    use_torch = not args.no_torch
    if use_torch:
        require_torch("time_to_grok.py", "--no-torch")
    counts = set_all_threads(args.threads)
    print(machine_line())
    print(f"default division run, threads {counts}; seconds until validation >= 95%")
    header = f"{'seed':>4s} {'tinygrok step':>13s} {'s':>7s} {'PyTorch step':>12s} {'s':>7s}"
    print(header + f" {'tinygrok/PyTorch':>16s}")
    times: dict[str, list[float]] = {"tinygrok": [], "PyTorch": []}
    ratios = []
    for seed in (int(s) for s in args.seeds.split(",")):
        res = race(Config(seed=seed, steps=args.max_steps), use_torch)
        line = f"{seed:4d}"
        for name in ("tinygrok", "PyTorch"):
            if name in res:
                step, s = res[name]
                times[name].append(s)
                line += f" {step if step is not None else 'never':>13} {s:7.1f}"
        if use_torch and None not in (res["tinygrok"][0], res["PyTorch"][0]):
            ratios.append(res["tinygrok"][1] / res["PyTorch"][1])
            line += f" {ratios[-1]:16.2f}"
        print(line, flush=True)
    summary = f"median seconds: tinygrok {statistics.median(times['tinygrok']):.1f}"
    if times["PyTorch"]:
        summary += f", PyTorch {statistics.median(times['PyTorch']):.1f}"
    if ratios:
        summary += f"; tinygrok needs {statistics.median(ratios):.2f} of PyTorch's time"
    print(summary)


if __name__ == "__main__":
    main()
