"""Figures of a run, drawn from its files alone (`metrics.jsonl`, `summary.json`)."""

from __future__ import annotations

import json
from pathlib import Path

from tinygrok.tasks import describe_tasks


def read_metrics(run_dir: Path) -> list[dict]:
    """Every evaluation record of a run, in order."""
    with (Path(run_dir) / "metrics.jsonl").open() as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(run_dir: Path, out: Path | None = None) -> Path:
    """curves.png: accuracy (top) and loss (bottom) against step on a log axis, one line per task
    and split, with the memorization and generalization steps marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    log_x = records[-1]["step"] > 0
    if log_x:  # step 0 has no place on a log axis
        records = [r for r in records if r["step"] > 0]
    summary = json.loads((run_dir / "summary.json").read_text())
    p = json.loads((run_dir / "config.json").read_text())["config"]["p"]
    fig, (ax_acc, ax_loss) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    steps = [r["step"] for r in records]
    series = {"": records}
    if records and "per_task" in records[0]:
        series = {f"{t} ": [r["per_task"][t] for r in records] for t in records[0]["per_task"]}
    for i, (label, rows) in enumerate(series.items()):
        color = f"C{i}"
        for split, style in (("train", "--"), ("val", "-")):
            ax_acc.plot(
                steps,
                [100 * r[f"{split}_acc"] for r in rows],
                style,
                color=color,
                label=f"{label}{split}",
            )
            ax_loss.plot(
                steps,
                [r[f"{split}_loss"] for r in rows],
                style,
                color=color,
                label=f"{label}{split}",
            )
    for key, name, color in (
        ("memorized_step", "memorized", "0.4"),
        ("generalized_step", "generalized", "k"),
    ):
        if summary.get(key):
            for ax in (ax_acc, ax_loss):
                ax.axvline(summary[key], color=color, lw=0.8, ls=":")
            ax_acc.text(
                summary[key], 50, f" {name}\n step {summary[key]:,}", fontsize=8, color=color
            )
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_ylim(-2, 102)
    ax_acc.legend(fontsize=8, loc="lower right")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    if log_x:
        ax_loss.set_xscale("log")
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.25, which="major")
    delay = summary.get("delay_steps")
    title = f"{describe_tasks(summary['tasks'], p)}, seed {summary['seed']}"
    if delay is not None:
        title += f": delay {delay:,} steps"
    ax_acc.set_title(title)
    fig.tight_layout()
    out = out or run_dir / "curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
