"""The report's preset: how long its 400,000-step baseline takes on this machine, evaluations
included, projected from timed steps and evaluations.

    python benchmarks/report_budget.py [--steps 200] [--evals 5] [--twins]

A run of `--preset report` takes `steps` training steps (batch 512, post-norm, ReLU, vocabulary
head) and evaluates on the full training and validation sets every `eval_every` steps, so

    hours = (steps * ms per step + steps / eval_every * ms per evaluation) / 3.6e6

The script times both at one thread (the runs' setting: `tinygrok run` defaults to one thread, and
an experiment runs one process per run) and prints the projection. With `--twins` a second copy of
this script runs the same measurement at the same time, as two trainings of one thread each on
the machine's two cores: each copy's projection is then the wall time of one baseline while the
other runs, and the machine finishes two baselines in that time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from _common import TinygrokSteps, machine_line, median, set_all_threads

from tinygrok.config import from_preset
from tinygrok.train import evaluate_run


def measure(steps: int, evals: int) -> tuple[float, float]:
    """(median ms per training step over rounds of 20, median ms per full evaluation)."""
    set_all_threads(1)
    run = TinygrokSteps(from_preset("report"))
    run.evaluate_once()
    run(5)
    step_ms = []
    for _ in range(max(1, steps // 20)):
        t = time.perf_counter()
        run(20)
        step_ms.append(1000 * (time.perf_counter() - t) / 20)
    eval_ms = []
    for _ in range(evals):
        t = time.perf_counter()
        evaluate_run(run.params, run.data, run.cfg)
        eval_ms.append(1000 * (time.perf_counter() - t))
    return median(step_ms), median(eval_ms)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200, help="timed training steps")
    ap.add_argument("--evals", type=int, default=5, help="timed evaluations")
    ap.add_argument("--twins", action="store_true", help="run a second copy at the same time")
    ap.add_argument("--quiet-twin", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    twin = None
    if args.twins:
        cmd = [sys.executable, __file__, "--steps", str(args.steps), "--evals", str(args.evals)]
        twin = subprocess.Popen([*cmd, "--quiet-twin"], stdout=subprocess.DEVNULL)
    step_ms, eval_ms = measure(args.steps, args.evals)
    if twin:
        twin.wait()
    if args.quiet_twin:
        return
    cfg = from_preset("report")
    n_evals = cfg.steps // cfg.eval_every
    hours = (cfg.steps * step_ms + n_evals * eval_ms) / 3.6e6
    print(machine_line())
    print(
        f"preset report, 1 thread{', beside a twin run' if twin else ''}: "
        f"{step_ms:.1f} ms per step, {eval_ms:.0f} ms per evaluation (train and validation sets)"
    )
    print(
        f"projected baseline: {cfg.steps:,} steps + {n_evals:,} evaluations = {hours:.2f} h"
        + (f" per run, two runs at once: {hours / 2:.2f} h of machine time per run" if twin else "")
    )


if __name__ == "__main__":
    main()
