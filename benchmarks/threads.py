"""Threads that never hurt: the training step at each thread count, on the machine as it is and
with a load generator busy on every core beside it.

    python benchmarks/threads.py [--threads 1,2] [--rounds 7] [--steps 10] [--preset power]

The load generator is one busy-looping process per core (started here, stopped here), the
situation of a shared machine or of a sweep running several trainings at once. In each setting
the thread counts take turns within every round, and the table gives the medians: a thread count
is a safe default only if it is never slower than one thread in either setting.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from contextlib import contextmanager

from _common import TinygrokSteps, machine_line, median, set_all_threads

from tinygrok.config import PRESETS, from_preset


@contextmanager
def load_generator(n: int):
    """n busy-looping processes for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def time_threads(run: TinygrokSteps, threads: list[int], rounds: int, steps: int) -> dict:
    """Median ms per step at each thread count, the counts taking turns within each round."""
    samples: dict[int, list[float]] = {n: [] for n in threads}
    for n in threads:
        set_all_threads(n)
        run(2)  # warm up at this count
    for _ in range(rounds):
        for n in threads:
            set_all_threads(n)
            t = time.perf_counter()
            run(steps)
            samples[n].append(1000 * (time.perf_counter() - t) / steps)
    return {n: median(s) for n, s in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10, help="steps per round and thread count")
    ap.add_argument("--preset", default="power", choices=list(PRESETS), help="the model and recipe")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    if 1 not in threads:
        ap.error("--threads must include 1, the reference")
    run = TinygrokSteps(from_preset(args.preset))
    run.evaluate_once()
    cores = os.cpu_count() or 1
    print(machine_line())
    print(f"preset {args.preset}, batch {run.cfg.batch_size}; median ms per training step")
    print(f"{'setting':34s} " + " ".join(f"{f'{n} thread(s)':>12s}" for n in threads))
    for label, busy in (("as it is", 0), (f"+ {cores} busy processes", cores)):
        with load_generator(busy):
            ms = time_threads(run, threads, args.rounds, args.steps)
        cells = " ".join(f"{ms[n]:7.1f} ({ms[1] / ms[n]:.2f}x)" for n in threads)
        print(f"{label:34s} {cells}")
    print("(in parentheses: speed relative to one thread in the same setting)")


if __name__ == "__main__":
    main()
