"""Where each run of an experiment's folder stands, for division: one line per ARM/seedK run.

    python tools/report_runs.py [FOLDER]          (default: results/report)
    python tools/report_runs.py --by-arm [FOLDER]

FOLDER holds one folder per arm and seed (ARM/seedK/), each with the config.json and
metrics.jsonl a run writes, and its summary.json once it has finished or been interrupted (a run
still training has none yet, or one that a resume has since carried past: its line is made from
its evaluations so far, as the summary would be, status "running"). Per run: its status, the
steps it ran of its budget, the steps at which division was memorized and generalized (by the
run's own thresholds), and division's best and last validation accuracy so far. A run of several
tasks reports its division. Runs that cannot be read are named on stderr, and the exit code is 2.

`--by-arm` gives one line per arm over its seeds instead: the step division generalized at
(median and range), and how many times sooner than the baseline arm of the same seed, in steps
and in division's examples (a run of n tasks gives division 1/n of each batch, so its examples
are steps / n: the ratio of the report's "progress %"). A run that has not generalized counts as
"> its steps so far"; a median or factor that rests on one is a bound (">=", "<"). The factors
are medians over the seeds that have a generalized baseline (their number in parentheses).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import NamedTuple

from tinygrok.folders import read_config, read_metrics, read_summary
from tinygrok.summary import run_summary

TASK = "division"
HEADER = (
    f"{'arm':<15}{'seed':>5}  {'status':<12}{'steps':>17}{'mem':>7}{'gen':>8}{'val max':>9}"
    f"{'last':>7}"
)


def division(record: dict) -> dict:
    """The division part of a summary or an evaluation (the record itself for one task)."""
    return record.get("per_task", {}).get(TASK, record)


def summary_of(run: Path, metrics: list[dict]) -> dict:
    """run/summary.json, or for a run still training (none yet, or one that a resume has since
    carried past: its evaluations go further) the summary its evaluations give."""
    summary = read_summary(run)
    if summary is not None and summary["steps_run"] >= metrics[-1]["step"]:
        return summary
    cfg, doc = read_config(run)
    return run_summary(cfg, metrics, "running", metrics[-1]["elapsed_s"], doc["n_params"])


def line(arm: str, seed: str, summary: dict, metrics: list[dict]) -> str:
    """One run's line of the table."""
    d = division(summary)
    val = [division(m)["val_acc"] for m in metrics]
    steps = f"{summary['steps_run']:,}/{summary['step_budget']:,}"

    def step(s: int | None) -> str:
        return "-" if s is None else f"{s:,}"

    return (
        f"{arm:<15}{seed:>5}  {summary['status']:<12}{steps:>17}{step(d['memorized_step']):>7}"
        f"{step(d['generalized_step']):>8}{100 * max(val):>8.1f}%{100 * val[-1]:>6.1f}%"
    )


class Bound(NamedTuple):
    """A number, or (`more`) a lower bound of it: the step of a run not generalized yet."""

    value: float
    more: bool = False


def generalized(summary: dict) -> Bound:
    """Division's generalized step, or > the steps run."""
    step = division(summary)["generalized_step"]
    return Bound(summary["steps_run"], True) if step is None else Bound(step)


def median(xs: list[Bound]) -> Bound:
    """The median of the values; with lower bounds among them, the median of the bounds, which
    the true median is at least (the median is monotone in each value)."""
    return Bound(statistics.median(x.value for x in xs), any(x.more for x in xs))


def show(x: Bound, times: bool = False) -> str:
    """A step (12,345 or >12,345) or a factor (2.8x or <2.8x: an upper bound of steps saved)."""
    if times:
        return f"{'<' if x.more else ''}{x.value:.{0 if x.value >= 10 else 1}f}x"
    return f"{'>' if x.more else ''}{x.value:,.0f}"


ARM_HEADER = (
    f"{'arm':<15}{'seeds':>6}{'gen median':>12}{'gen range':>20}{'sooner (steps)':>16}"
    f"{'(examples)':>11}"
)


def arm_line(arm: str, runs: dict[str, dict], baseline: dict[str, dict]) -> str:
    """One arm's line: runs and baseline map seed -> summary."""
    gens = [generalized(s) for s in runs.values()]
    lo, hi = min(gens, key=lambda x: x.value), max(gens, key=lambda x: x.value)
    factors, examples = [], []
    for seed, s in runs.items():
        base = baseline.get(seed)
        if base is None or generalized(base).more:
            continue  # no baseline step to compare with
        g, n_tasks = generalized(s), len(s["tasks"])
        factors.append(Bound(generalized(base).value / g.value, g.more))
        examples.append(Bound(n_tasks * factors[-1].value, g.more))
    sooner = ("-", "-")
    if factors:
        sooner = (f"{show(median(factors), True)} ({len(factors)})", show(median(examples), True))
    gen_median = median(gens)
    span = show(lo) if lo == hi else f"{show(lo)} to {show(hi)}"
    med = (">=" if gen_median.more else "") + show(Bound(gen_median.value))
    return f"{arm:<15}{len(runs):>6}{med:>12}{span:>20}{sooner[0]:>16}{sooner[1]:>11}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", type=Path, default=Path("results/report"))
    ap.add_argument("--by-arm", action="store_true", help="one line per arm over its seeds")
    ap.add_argument("--baseline", default="baseline", help="the arm the others are compared with")
    args = ap.parse_args()
    runs = sorted(p.parent for p in args.folder.glob("*/seed*/metrics.jsonl"))
    if not runs:
        print(f"{args.folder}: no ARM/seedK/metrics.jsonl in it", file=sys.stderr)
        return 2
    failed, rows, arms = False, [], {}
    for run in runs:
        arm, seed = run.parent.name, run.name.removeprefix("seed")
        try:
            metrics = read_metrics(run)
            summary = summary_of(run, metrics)
            rows.append(line(arm, seed, summary, metrics))
            arms.setdefault(arm, {})[seed] = summary
        except (OSError, ValueError, KeyError, IndexError) as e:  # damaged or empty files
            print(f"{run}: cannot read its files ({e})", file=sys.stderr)
            failed = True
    if args.by_arm:
        rows = [arm_line(a, r, arms.get(args.baseline, {})) for a, r in arms.items()]
    print(ARM_HEADER if args.by_arm else HEADER)
    print("\n".join(rows))
    return 2 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader stopped reading (`| head`): nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
