"""The training step of this checkout against another commit's, in alternating processes.

    git worktree add ../other COMMIT
    python benchmarks/compare_commits.py ../other [--preset report] [--threads 1,2] [--rounds 3]

Every round runs one process per checkout, in turn; each imports its own checkout's tinygrok
(ahead of this environment's installed one) and times its training step (`_common.TinygrokSteps`)
at every thread count, set by its own `set_threads` (what its `--threads` does): a median of 4
samples of 10 steps, after 3 steps of warm-up. The other checkout needs no environment of its
own, only the same dependencies; its kernels compile in a first, untimed round. Prints each
round's medians, then the median of the rounds' and the ratio other / this (above 1: this
checkout is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _common import machine_line

HERE = Path(__file__).resolve().parents[1]

# run in a fresh process: the checkout's own tinygrok, its own benchmarks/_common.py
TIMER = """
import json, os, statistics, sys, time
tree = sys.argv[1]
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path[:0] = [tree, os.path.join(tree, "benchmarks")]
from _common import TinygrokSteps
from tinygrok.config import from_preset
from tinygrok.threads import set_threads
run = TinygrokSteps(from_preset(sys.argv[2], ("division",)))
run.evaluate_once()
out = {}
for n in json.loads(sys.argv[3]):
    set_threads(n)  # the checkout's own meaning of --threads n
    run(3)
    samples = []
    for _ in range(4):
        t = time.perf_counter()
        run(10)
        samples.append(100 * (time.perf_counter() - t))
    out[n] = statistics.median(samples)
print(json.dumps(out))
"""


def fail(message: str) -> None:
    """One line on stderr, exit code 2."""
    print(f"compare_commits.py: {message}", file=sys.stderr)
    sys.exit(2)


def time_tree(tree: Path, preset: str, threads: list[int]) -> dict[int, float]:
    """ms per step of `tree`'s training step at each thread count, in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", TIMER, str(tree), preset, json.dumps(threads)],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        fail(f"{tree}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
    return {int(n): ms for n, ms in json.loads(done.stdout.splitlines()[-1]).items()}


def commit_of(tree: Path) -> str:
    """The short commit checked out in `tree` (with "+" if its files differ from it)."""
    head = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return (head or "?") + ("+" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("other", type=Path, help="a checkout of the other commit")
    ap.add_argument("--preset", default="report", help="the model and recipe")
    ap.add_argument("--threads", default="1,2", help="comma-separated BLAS thread counts")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    args = ap.parse_args()
    if not (args.other / "tinygrok" / "__init__.py").is_file():
        fail(f"{args.other} is not a tinygrok checkout")
    threads = [int(t) for t in args.threads.split(",")]
    trees = {commit_of(HERE): HERE, commit_of(args.other): args.other.resolve()}
    if len(trees) < 2:
        fail("both checkouts are at the same commit")
    for tree in trees.values():  # warm-up: compiles each checkout's kernels, untimed
        time_tree(tree, args.preset, threads[:1])
    ms: dict[str, list[dict[int, float]]] = {name: [] for name in trees}
    print(machine_line())
    print(f"preset {args.preset}; ms per training step, median of 4 x 10 steps per round")
    for r in range(args.rounds):
        for name, tree in trees.items():
            ms[name].append(time_tree(tree, args.preset, threads))
            cells = "  ".join(f"{n} thread(s) {ms[name][-1][n]:6.1f}" for n in threads)
            print(f"round {r + 1}  {name:10s} {cells}")
    this, other = list(trees)
    for n in threads:
        med = {name: statistics.median(m[n] for m in ms[name]) for name in trees}
        print(
            f"{n} thread(s): median {this} {med[this]:.1f} ms, {other} {med[other]:.1f} ms; "
            f"{other} / {this} = {med[other] / med[this]:.2f}x"
        )


if __name__ == "__main__":
    main()
