"""Figures of a run, drawn from its files alone (`config.json`, `metrics.jsonl`, `summary.json`)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from tinygrok.config import PRESETS, Config
from tinygrok.folders import read_config, read_metrics, read_summary
from tinygrok.tasks import describe_tasks

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def run_label(cfg: Config) -> str:
    """What sets a run apart: the preset its config follows (the one that sets most of its fields
    to this config's values, if it matches at least three quarters of them) and every field that
    differs from it, e.g. "preset report, init=report-xavier, sparse=0.9"."""
    given = cfg.to_dict()
    best, base, best_share = "power", Config().to_dict(), 0.75
    for name, fields in PRESETS.items():
        if name == "power" or not fields:
            continue
        preset = Config(**fields).to_dict()
        share = sum(given[k] == preset[k] for k in fields) / len(fields)
        if share >= best_share:
            best, base, best_share = name, preset, share
    skip = {"tasks", "p", "seed", "engine", "grokfast_lamb"}
    changed = [f"{k}={given[k]}" for k in given if k not in skip and given[k] != base[k]]
    return ", ".join(([f"preset {best}"] if best != "power" else []) + changed)


def step_axis(ax: Axes, log_x: bool) -> None:
    """Step labels readable on any run length: 1-2-5 ticks on a log axis, in thousands ("2k",
    "20k") from 1,000 on, short enough not to collide over five decades; on a linear axis about
    six ticks, with thousands commas below 10,000 ("2,500") and in thousands from there on
    ("12.5k")."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(6, integer=True))
    thousands = 1_000 if log_x else 10_000

    def label(v: float, _) -> str:
        if v < thousands:
            return f"{v:,.0f}"
        return f"{v / 1000:,.3f}".rstrip("0").rstrip(".") + "k"  # 10k, 12.5k, 10.05k

    ax.xaxis.set_major_formatter(FuncFormatter(label))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_curves(run_dir: Path, out: Path | None = None) -> Path:
    """curves.png: accuracy, loss and (with --measures-every) the progress measures against step
    on a log axis; training dashed, validation solid, in colours of their own for one task (one
    colour per task for several); memorization and generalization marked; legends beside the
    axes, the run's options in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    log_x = records[-1]["step"] > 0
    if log_x:  # step 0 has no place on a log axis
        records = [r for r in records if r["step"] > 0]
    summary = read_summary(run_dir) or {}  # none yet while the run trains
    cfg, _ = read_config(run_dir)
    measured = [r for r in records if r.get("measures")]
    n_panels = 3 if measured else 2
    fig, axes = plt.subplots(n_panels, 1, figsize=(8.6, 3.1 * n_panels + 0.6), sharex=True)
    ax_acc, ax_loss = axes[0], axes[1]
    steps = [r["step"] for r in records]
    series = {"": records}
    if records and "per_task" in records[0]:
        series = {f"{t} ": [r["per_task"][t] for r in records] for t in records[0]["per_task"]}
    for i, (label, rows) in enumerate(series.items()):
        for split, style, lw in (("train", "--", 1.0), ("val", "-", 1.6)):
            color = f"C{i}" if len(series) > 1 else ("C0" if split == "train" else "C3")
            name = f"{label}{'training' if split == 'train' else 'validation'}"
            ax_acc.plot(steps, [100 * r[f"{split}_acc"] for r in rows], style, color=color, lw=lw)
            ax_loss.plot(steps, [r[f"{split}_loss"] for r in rows], style, color=color, lw=lw)
            ax_acc.plot([], [], style, color=color, lw=lw, label=name)
    if measured:
        ax_m = axes[2]
        m_steps = [r["step"] for r in measured]
        ms = [r["measures"] for r in measured]
        for key, style, name in (
            ("restricted_loss", "C3-", "restricted loss"),
            ("excluded_loss", "C2-", "excluded loss"),
        ):
            if key in ms[0]:
                ax_m.plot(m_steps, [m[key] for m in ms], style, label=name)
        ax_m.set_yscale("log")
        ax_m.set_ylabel("loss")
        ax_g = ax_m.twinx()
        for key, style, name in (
            ("gini_embedding", "C0-", "Gini, embedding"),
            ("gini_unembedding", "C1-", "Gini, unembedding"),
            ("gini_embedding_additive", "C0:", "Gini, embedding (additive)"),
        ):
            if key in ms[0]:
                ax_g.plot(m_steps, [m[key] for m in ms], style, label=name)
        ax_g.set_ylim(0, 1)
        ax_g.set_ylabel("Gini of the Fourier norms")
        lines = ax_m.get_legend_handles_labels()[0] + ax_g.get_legend_handles_labels()[0]
        ax_m.legend(lines, [ln.get_label() for ln in lines], **legend_beside(offset=1.12))
    for key, name, color in (
        ("memorized_step", "memorized", "0.4"),
        ("generalized_step", "generalized", "k"),
    ):
        if summary.get(key):
            for ax in axes:
                ax.axvline(summary[key], color=color, lw=0.8, ls=":")
            ax_acc.text(
                summary[key], 50, f" {name}\n step {summary[key]:,}", fontsize=8, color=color
            )
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_ylim(-2, 102)
    ax_acc.legend(**legend_beside())
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.set_yscale("log")
    axes[-1].set_xlabel("step")
    for ax in axes:
        step_axis(ax, log_x)
        ax.grid(alpha=0.25, which="major")
    delay = summary.get("delay_steps")
    title = f"{describe_tasks(list(cfg.tasks), cfg.p)}, seed {cfg.seed}"
    if delay is not None:
        title += f": delay {delay:,} steps"
    label = run_label(cfg)
    if label:
        title += "\n" + "\n".join(textwrap.wrap(label, 90)[:2])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = out or run_dir / "curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def legend_beside(offset: float = 1.01) -> dict:
    """Legend arguments that put it right of the axes, outside the data."""
    return {"fontsize": 8, "loc": "upper left", "bbox_to_anchor": (offset, 1.0), "borderaxespad": 0}
