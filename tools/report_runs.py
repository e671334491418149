"""Where each run of an experiment's folder stands, for division: one line per ARM/seedK run.

    python tools/report_runs.py [FOLDER]          (default: results/report)

FOLDER holds one folder per arm and seed (ARM/seedK/), each with the config.json and
metrics.jsonl a run writes, and its summary.json once it has finished or been interrupted (a run
still training has none yet, or one that a resume has since carried past: its line is made from
its evaluations so far, as the summary would be, status "running"). Per run: its status, the
steps it ran of its budget, the steps at which division was memorized and generalized (by the
run's own thresholds), and division's best and last validation accuracy so far. A run of several
tasks reports its division. Then the CPUs each run was started and resumed on (its config.json's
provenance), since the same code computes other last digits on another CPU. Runs that cannot be
read are named on stderr, and the exit code is 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

from tinygrok.folders import read_config, read_metrics, read_summary
from tinygrok.summary import run_summary

TASK = "division"
HEADER = (
    f"{'arm':<15}{'seed':>5}  {'status':<11}{'steps':>16}{'mem':>7}{'gen':>8}{'val max':>9}"
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
        f"{arm:<15}{seed:>5}  {summary['status']:<11}{steps:>16}{step(d['memorized_step']):>7}"
        f"{step(d['generalized_step']):>8}{100 * max(val):>8.1f}%{100 * val[-1]:>6.1f}%"
    )


def provenances(doc: dict) -> list[dict]:
    """Where and how a run's config.json says it was started, then each resume."""
    return [doc.get("provenance", {}), *(r for r in doc.get("resumes", []) if isinstance(r, dict))]


def cpus(rows: dict[str, list[str]]) -> list[str]:
    """The footer naming each CPU's runs, wrapped to 80 columns: rows maps a CPU to the runs
    ("ARM SEED") started on it."""
    return [
        textwrap.fill(
            f"on {cpu}: {', '.join(names)}", 80, subsequent_indent="  ", break_on_hyphens=False
        )
        for cpu, names in sorted(rows.items())
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", type=Path, default=Path("results/report"))
    args = ap.parse_args()
    runs = sorted(p.parent for p in args.folder.glob("*/seed*/metrics.jsonl"))
    if not runs:
        print(f"{args.folder}: no ARM/seedK/metrics.jsonl in it", file=sys.stderr)
        return 2
    print(HEADER)
    failed = False
    on: dict[str, list[str]] = {}
    for run in runs:
        try:
            metrics = read_metrics(run)
            row = line(
                run.parent.name, run.name.removeprefix("seed"), summary_of(run, metrics), metrics
            )
            doc = read_config(run)[1]
        except (OSError, ValueError, KeyError, IndexError) as e:  # damaged or empty files
            print(f"{run}: cannot read its files ({e})", file=sys.stderr)
            failed = True
            continue
        print(row)
        for cpu in dict.fromkeys(p.get("cpu", "an unrecorded CPU") for p in provenances(doc)):
            on.setdefault(cpu, []).append(f"{run.parent.name} {run.name.removeprefix('seed')}")
    print("\n".join(["", *cpus(on)]))
    return 2 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader stopped reading (`| head`): nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
