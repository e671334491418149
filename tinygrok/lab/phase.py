"""Learning regimes and phase diagrams: the four phases of Liu et al. 2022, "Towards Understanding
Grokking: An Effective Theory of Representation Learning", who draw them over pairs of training
hyperparameters (weight decay, learning rate, the amount of data).

A run falls in one of four regimes, decided from its summary alone (its grokking fields: README.md,
"A run on disk"):

    confusion      never memorized: training accuracy never reached memorized_threshold (0.99)
                   within the budget, or the run diverged
    memorization   memorized, but validation accuracy never reached generalized_threshold (0.95)
    grokking       memorized, then generalized after a delay:
                       generalized_step - memorized_step >= grok_ratio * memorized_step   and
                       generalized_step - memorized_step > 2 * eval_every
                   (generalizing took at least grok_ratio times as long again as memorizing, and
                   more than the evaluation grid can blur)
    comprehension  generalized without that delay (or before memorizing)

Regimes are relative to the step budget: a run stopped before it generalized counts as
memorization. `tinygrok phase` trains a grid of one or two run options (a sweep,
`tinygrok.lab.sweep`) and colours each cell of the grid by its runs' regime: the most common over
the seeds, the earlier in REGIMES on a tie.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tinygrok.folders import read_summary, write_json
from tinygrok.lab.grid import Sweep, format_value

REGIMES = ("comprehension", "grokking", "memorization", "confusion")
COLORS = {
    "comprehension": "#4daf4a",
    "grokking": "#377eb8",
    "memorization": "#ff7f00",
    "confusion": "#999999",
    "not run": "#ffffff",
}
GROK_RATIO = 1.0
RULES = {
    "confusion": "never memorized (train acc < memorized_threshold throughout), or diverged",
    "memorization": "memorized, never generalized (val acc < generalized_threshold throughout)",
    "grokking": "generalized_step - memorized_step >= grok_ratio * memorized_step and "
    "> 2 * eval_every",
    "comprehension": "generalized without that delay",
}
PHASE_FILES = ("phase.json", "phase.png")


def classify(summary: dict, eval_every: int = 1, grok_ratio: float = GROK_RATIO) -> str:
    """The regime of one run from its summary.json (see the module docstring)."""
    mem, gen = summary.get("memorized_step"), summary.get("generalized_step")
    if summary.get("status") == "diverged" or (mem is None and gen is None):
        return "confusion"
    if gen is None:
        return "memorization"
    if mem is None:
        return "comprehension"
    delay = gen - mem
    if delay >= grok_ratio * mem and delay > 2 * eval_every:
        return "grokking"
    return "comprehension"


def cell_regime(regimes: list[str]) -> str:
    """The regime of a grid cell from those of its runs: the most common; the earlier in
    REGIMES on a tie."""
    counts = Counter(regimes)
    return max(REGIMES, key=lambda r: (counts[r], -REGIMES.index(r)))


def phase_table(sweep: Sweep, out: Path, grok_ratio: float = GROK_RATIO) -> list[dict]:
    """One row per grid cell: its grid values, regime, and each run's regime and steps. Cells
    whose runs have no summary yet are "not run"."""
    cells: dict[str, dict] = {}
    for job in sweep.jobs(out):
        cell = cells.setdefault(
            job.label,
            {"values": {k: v for k, v in job.values.items() if k != "seed"}, "runs": []},
        )
        summary = read_summary(job.out, cfg=job.cfg)
        if summary is None:
            continue
        cell["runs"].append(
            {
                "seed": job.values["seed"],
                "regime": classify(summary, job.cfg.eval_every, grok_ratio),
                **{
                    k: summary[k]
                    for k in (
                        "memorized_step",
                        "generalized_step",
                        "delay_steps",
                        "final_train_acc",
                        "final_val_acc",
                        "steps_run",
                        "status",
                    )
                },
            }
        )
    for cell in cells.values():
        regimes = [r["regime"] for r in cell["runs"]]
        cell["regime"] = cell_regime(regimes) if regimes else "not run"
        cell["agreement"] = f"{regimes.count(cell['regime'])}/{len(regimes)}"
    return list(cells.values())


def format_table(rows: list[dict]) -> str:
    """The cells as text: grid values, regime, and the median memorized and generalized steps."""

    def median(key: str, runs: list[dict]) -> str:
        steps = sorted(r[key] for r in runs if r[key] is not None)
        return f"{steps[len(steps) // 2]:,}" if steps else "-"

    lines = [f"{'cell':36s} {'regime':14s} {'runs':>5s} {'memorized':>10s} {'generalized':>12s}"]
    for row in rows:
        values = ",".join(f"{k}={format_value(v)}" for k, v in row["values"].items())
        runs = row["runs"]
        lines.append(
            f"{values:36s} {row['regime']:14s} {row['agreement']:>5s} "
            f"{median('memorized_step', runs):>10s} {median('generalized_step', runs):>12s}"
        )
    return "\n".join(lines)


def write_phase(
    sweep: Sweep, out: Path, title: str, grok_ratio: float = GROK_RATIO
) -> tuple[list[dict], Path]:
    """Classify every run of a phase sweep; write OUT/phase.json and the diagram OUT/phase.png."""
    rows = phase_table(sweep, out, grok_ratio)
    doc = {
        "grid": {k: list(v) for k, v in sweep.grid.items()},
        "seeds": list(sweep.seeds),
        "grok_ratio": grok_ratio,
        "rules": RULES,
        "cells": rows,
    }
    write_json(Path(out) / PHASE_FILES[0], doc)
    return rows, plot_phase(sweep, rows, Path(out) / PHASE_FILES[1], title)


def plot_phase(sweep: Sweep, rows: list[dict], path: Path, title: str) -> Path:
    """Grid cells coloured by regime: the first grid key across, the second (if any) up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    keys = list(sweep.grid)
    xs = sweep.grid[keys[0]]
    ys = sweep.grid[keys[1]] if len(keys) > 1 else (None,)
    fig, ax = plt.subplots(figsize=(1.6 * len(xs) + 2.5, 1.0 * len(ys) + 2.2))
    by_values = {tuple(r["values"].get(k) for k in keys): r for r in rows}
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            row = by_values[(x, y) if len(keys) > 1 else (x,)]
            ax.add_patch(
                Rectangle((i, j), 1, 1, facecolor=COLORS[row["regime"]], edgecolor="white", lw=2)
            )
            text = row["regime"] if row["regime"] != "not run" else "(not run)"
            delays = [r["delay_steps"] for r in row["runs"] if r["delay_steps"] is not None]
            if row["regime"] in ("grokking", "comprehension") and delays:
                text += f"\ndelay {sorted(delays)[len(delays) // 2]:,}"
            if len(row["runs"]) > 1:
                text += f"\n{row['agreement']} seeds"
            ax.text(i + 0.5, j + 0.5, text, ha="center", va="center", fontsize=7)
    ax.set_xlim(0, len(xs))
    ax.set_ylim(0, len(ys))
    ax.set_xticks([i + 0.5 for i in range(len(xs))], [format_value(x) for x in xs])
    ax.set_xlabel(keys[0])
    if len(keys) > 1:
        ax.set_yticks([j + 0.5 for j in range(len(ys))], [format_value(y) for y in ys])
        ax.set_ylabel(keys[1])
    else:
        ax.set_yticks([])
    ax.legend(
        handles=[Patch(color=COLORS[r], label=r) for r in REGIMES],
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        fontsize=8,
    )
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
