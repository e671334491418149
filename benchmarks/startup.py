"""Start-up: `tinygrok --help`, the time to the first training step with a cold and a warm
numba kernel cache, and the peak memory of a default run.

    python benchmarks/startup.py [--repeats 3]

The first-step times run a fresh Python process that does what `tinygrok run division` does
before its first step (import the engine, build the data and the model, evaluate step 0 on the
full training and validation sets), then takes one training step. The cold run points numba's
cache at an empty folder (NUMBA_CACHE_DIR), so every kernel compiles; the warm runs reuse it.
The difference is the compile time a first run pays once. Peak memory is the largest resident
set of a real `tinygrok run division` of 200 steps (four full evaluations), read by a parent
process that does nothing else.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from _common import machine_line

FIRST_STEP = """
from tinygrok.config import Config
from tinygrok.fast import evaluate, loss_and_grads
from tinygrok.params import Params, init_params
from tinygrok.optim import make_optimizer
from tinygrok.tasks import Batches, make_dataset
import tinygrok.train  # what the CLI imports
from tinygrok.threads import set_threads

set_threads(1)  # as `tinygrok run` by default
cfg = Config()
data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
params, _ = init_params(cfg)
grads = Params.zeros(params.shapes, params.flat.dtype)
opt = make_optimizer(cfg, params.flat.size)
for d in data:
    evaluate(params, d.train_x, d.train_y, cfg)
    evaluate(params, d.val_x, d.val_y, cfg)
tokens, targets = Batches(data, cfg.batch_size, cfg.seed, cfg.epoch_batches)(1)
loss_and_grads(params, tokens, targets, cfg, grads)
opt.step(params.flat, grads.flat, 1e-4)
"""


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds a command takes, from process start to exit. CPU time (user + system,
    all threads) hardly changes when other processes share the cores; wall time does."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


PEAK_RSS = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_mb(cmd: list[str]) -> float:
    """Peak resident set (MB) of `cmd`, measured by a fresh parent that runs nothing else."""
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, *cmd], check=True, capture_output=True)
    return int(out.stdout) / 1024  # ru_maxrss is in KiB on Linux


def medians(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs of each warm measurement")
    args = ap.parse_args()
    tinygrok = os.path.join(os.path.dirname(sys.executable), "tinygrok")
    help_s = medians([timed([tinygrok, "--help"]) for _ in range(args.repeats + 2)])
    with tempfile.TemporaryDirectory() as cache:
        env = os.environ | {"NUMBA_CACHE_DIR": cache}
        cold = timed([sys.executable, "-c", FIRST_STEP], env)
        warm = medians(
            [timed([sys.executable, "-c", FIRST_STEP], env) for _ in range(args.repeats)]
        )
        with tempfile.TemporaryDirectory() as out:
            run = [tinygrok, "run", "division", "--steps", "200", "--threads", "1", "-q"]
            peak = peak_rss_mb([*run, "--out", os.path.join(out, "run")])
    print(machine_line())
    print(f"{'':44s} {'wall s':>7s} {'CPU s':>7s}")
    print(f"{'tinygrok --help':44s} {help_s[0]:7.2f} {help_s[1]:7.2f}")
    print(f"{'to the first step, cold cache (compiles)':44s} {cold[0]:7.2f} {cold[1]:7.2f}")
    print(f"{'to the first step, warm cache':44s} {warm[0]:7.2f} {warm[1]:7.2f}")
    compile_s = (cold[0] - warm[0], cold[1] - warm[1])
    print(f"{'compile time paid once (cold - warm)':44s} {compile_s[0]:7.2f} {compile_s[1]:7.2f}")
    print(f"peak memory of `tinygrok run division` (200 steps): {peak:.0f} MB")


if __name__ == "__main__":
    main()
