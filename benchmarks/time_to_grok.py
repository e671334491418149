"""Time to grok: wall seconds from the start of training to validation accuracy >= 95% on the
default division run, tinygrok against the same model and recipe in PyTorch eager.

    python benchmarks/time_to_grok.py [--seeds 0,1] [--max-steps 20000] [--threads 2]

Recipe (DESIGN.md defaults): division mod 97, train fraction 0.5, batch 512, AdamW lr 1e-3,
betas (0.9, 0.98), weight decay 1, linear warmup over 10 steps, evaluation every 50 steps on the
full training and validation sets (loss and accuracy). tinygrok runs through `tinygrok.train`
exactly as `tinygrok run division` does (logging, checkpoints and all, into a temporary folder);
PyTorch starts from tinygrok's initial parameters and sees the same batches, so both runs follow
nearly the same path and differ mostly in speed. The clock starts at the step-0 evaluation and
stops at the end of the first evaluation with validation accuracy >= 95%. Takes minutes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_line, set_all_threads

from tinygrok.config import Config
from tinygrok.model import init_params
from tinygrok.tasks import make_dataset
from tinygrok.train import train


def tinygrok_time(cfg: Config) -> tuple[int | None, float]:
    """(step, seconds) of the first evaluation with validation >= the threshold, via train()."""
    with tempfile.TemporaryDirectory() as out:
        train(cfg, Path(out), progress=False)
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").open()]
    for r in records:
        if r["val_acc"] >= cfg.generalized_threshold:
            return r["step"], r["elapsed_s"]
    return None, records[-1]["elapsed_s"]


def torch_time(cfg: Config) -> tuple[int | None, float]:
    """The same for PyTorch: evaluate every eval_every steps, stop once validation >= 95%."""
    from torch_reference import TorchSteps

    data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)[0]
    steps = TorchSteps(cfg, init_params(cfg)[0])
    t0 = time.perf_counter()
    for step in range(cfg.steps + 1):
        if step:
            steps(1)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            steps.evaluate(data.train_x, data.train_y)
            _, val_acc = steps.evaluate(data.val_x, data.val_y)
            if val_acc >= cfg.generalized_threshold:
                return step, time.perf_counter() - t0
    return None, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0", help="comma-separated seeds")
    ap.add_argument("--max-steps", type=int, default=20_000, help="give up after this many steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-torch", action="store_true", help="time tinygrok only")
    args = ap.parse_args()
    use_torch = not args.no_torch
    if use_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("PyTorch is not installed: timing tinygrok only", file=sys.stderr)
            use_torch = False
    counts = set_all_threads(args.threads)
    print(machine_line())
    print(f"default division run, threads {counts}, stop at validation >= 95%")
    header = f"{'seed':>4s} {'tinygrok step':>13s} {'s':>7s} {'PyTorch step':>12s} {'s':>7s}"
    print(header + f" {'ratio':>6s}")
    ratios, tiny_s, torch_s = [], [], []
    for seed in (int(s) for s in args.seeds.split(",")):
        # patience 1: tinygrok's loop stops at the evaluation after the one that generalized
        cfg = Config(seed=seed, steps=args.max_steps, patience=1)
        t_step, t_s = tinygrok_time(cfg)
        tiny_s.append(t_s)
        line = f"{seed:4d} {t_step or 'never':>13} {t_s:7.1f}"
        if use_torch:
            p_step, p_s = torch_time(cfg)
            torch_s.append(p_s)
            line += f" {p_step or 'never':>12} {p_s:7.1f}"
            if t_step and p_step:
                ratios.append(t_s / p_s)
                line += f" {t_s / p_s:6.2f}"
        print(line, flush=True)
    summary = f"median seconds: tinygrok {statistics.median(tiny_s):.1f}"
    if torch_s:
        summary += f", PyTorch {statistics.median(torch_s):.1f}"
    if ratios:
        summary += f"; tinygrok takes {statistics.median(ratios):.2f} of PyTorch's time"
    print(summary)


if __name__ == "__main__":
    main()
