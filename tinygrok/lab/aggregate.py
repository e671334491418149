"""A sweep's aggregates, rebuilt from its folder alone: `sweep.json` (the definition) and, per run,
`config.json` and `summary.json`.

    runs.csv    one row per run: grid values, seed, the other options that differ from the
                defaults, the grokking metrics, final accuracies, status, steps run, wall time
    summary.md  one row per configuration: seeds, median [25th, 75th percentile] of the memorized
                step, generalized step and delay over the seeds that reached them, and the share
                of seeds that generalized
    sweep.png   generalized step per configuration: one point per seed, a bar at the median, and
                the seeds that did not generalize drawn apart at the step budget

Only complete runs (status finished or diverged) enter summary.md and sweep.png; runs.csv lists
every run, with status "incomplete" (started, no summary yet) or "not started" for the others.
Percentiles are numpy's default (linear interpolation between order statistics).
"""

from __future__ import annotations

import csv
import dataclasses
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinygrok.config import Config
from tinygrok.folders import CONFIG, read_config, read_summary
from tinygrok.lab.grid import Job, format_value, load_sweep
from tinygrok.lab.runner import DONE
from tinygrok.tasks import describe_tasks

METRICS = (
    "memorized_step",
    "generalized_step",
    "delay_steps",
    "progress_pct",
    "final_train_acc",
    "final_val_acc",
)
STEP_STATS = (
    ("memorized step", "memorized_step"),
    ("generalized step", "generalized_step"),
    ("delay", "delay_steps"),
)


@dataclass
class Row:
    """One run as its folder describes it."""

    job: Job
    config: dict  # the config the run was written with (the requested one if not started)
    summary: dict | None
    status: str

    @property
    def complete(self) -> bool:
        return self.status in DONE


def read_rows(out: Path) -> tuple[list[str], list[Row]]:
    """The grid keys and every run of the sweep in `out`, configuration by configuration."""
    sweep = load_sweep(out)
    rows = []
    for job in sweep.jobs(out):
        started = (job.out / CONFIG).exists()
        cfg = read_config(job.out)[0] if started else job.cfg
        summary, config = read_summary(job.out, cfg=cfg), cfg.to_dict()
        if summary is not None:
            status = summary.get("status")
        else:
            status = "incomplete" if started else "not started"
        rows.append(Row(job, config, summary, status))
    return list(sweep.grid), rows


def csv_columns(grid: list[str], rows: list[Row]) -> list[str]:
    """run, tasks, the grid keys, seed, the options that differ from the defaults, the results."""
    defaults = Config().to_dict()
    fixed = [
        f.name
        for f in dataclasses.fields(Config)
        if f.name not in (*grid, "tasks", "seed")
        and any(r.config.get(f.name, defaults[f.name]) != defaults[f.name] for r in rows)
    ]
    return ["run", "tasks", *grid, "seed", *fixed, *METRICS, "status", "steps_run", "wall_s"]


def _cell(v: object) -> str:
    return "" if v is None else format_value(v)


def write_runs_csv(path: Path, grid: list[str], rows: list[Row]) -> None:
    """runs.csv: one row per run (empty cells for metrics that did not happen or runs not done)."""
    columns = csv_columns(grid, rows)
    with Path(path).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            s = r.summary or {}
            values = r.config | {"run": r.job.name, "tasks": "+".join(r.config["tasks"])}
            values |= {k: s.get(k) for k in (*METRICS, "steps_run")}
            values |= {"status": r.status, "wall_s": s.get("wall_s")}
            if values["wall_s"] is not None:
                values["wall_s"] = round(values["wall_s"], 2)
            w.writerow([_cell(values.get(c)) for c in columns])


def quartiles(values: list[float]) -> str:
    """'1,200 [1,050, 1,400]': median [25th, 75th percentile]; '-' for no values."""
    if not values:
        return "-"
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return f"{med:,.0f} [{q1:,.0f}, {q3:,.0f}]"


def by_configuration(rows: list[Row]) -> dict[str, list[Row]]:
    """Rows grouped by configuration label, in sweep order."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.job.label, []).append(r)
    return groups


def summary_markdown(grid: list[str], rows: list[Row]) -> str:
    """summary.md: a title, one line on the statistics, and the per-configuration table."""
    first = rows[0].config
    seeds = len({r.job.values["seed"] for r in rows})
    plural = "s" if seeds != 1 else ""
    title = f"# Sweep: {describe_tasks(first['tasks'], first['p'])}, {seeds} seed{plural}"
    keys = grid or ["tasks"]
    header = [*keys, "seeds", *(name for name, _ in STEP_STATS), "generalized"]
    lines = [
        title,
        "",
        "Steps are the median [25th, 75th percentile] over the seeds that reached them; "
        '"generalized" counts the complete seeds whose validation accuracy reached the threshold.',
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * len(keys) + ["---:"] * (len(header) - len(keys))) + "|",
    ]
    for group in by_configuration(rows).values():
        done = [r for r in group if r.complete]
        cells = (
            [format_value(group[0].job.values[k]) for k in grid]
            if grid
            else ["+".join(first["tasks"])]
        )
        cells.append(f"{len(done)}" if len(done) == len(group) else f"{len(done)} of {len(group)}")
        for _, key in STEP_STATS:
            cells.append(quartiles([r.summary[key] for r in done if r.summary[key] is not None]))
        n_gen = sum(r.summary["generalized_step"] is not None for r in done)
        cells.append(f"{n_gen}/{len(done)} ({100 * n_gen / len(done):.0f}%)" if done else "-")
        lines.append("| " + " | ".join(cells) + " |")
    pending = [r for r in rows if not r.complete]
    if pending:
        counts: dict[str, int] = {}
        for r in pending:
            counts[r.status] = counts.get(r.status, 0) + 1
        what = ", ".join(f"{n} {s}" for s, n in counts.items())
        lines += [
            "",
            f"{len(pending)} run(s) not complete ({what}): run the sweep again to finish them.",
        ]
    return "\n".join(lines) + "\n"


def plot_sweep(path: Path, grid: list[str], rows: list[Row]) -> None:
    """sweep.png: generalized step per configuration, a point per seed and the median."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    groups = by_configuration(rows)
    width = max(5.0, 1.1 * len(groups) + 2)  # inches
    fig, ax = plt.subplots(figsize=(width, 4.5))
    rng = np.random.default_rng(0)  # jitter only, so points of equal steps stay visible
    labelled = set()
    plotted = False

    def once(label: str) -> str | None:
        if label in labelled:
            return None
        labelled.add(label)
        return label

    for x, group in enumerate(groups.values()):
        done = [r for r in group if r.complete]
        gen = [r.summary["generalized_step"] for r in done]
        never = [r.summary["step_budget"] for r, g in zip(done, gen, strict=True) if g is None]
        gen = [g for g in gen if g is not None]
        plotted = plotted or bool(done)
        jitter = rng.uniform(-0.15, 0.15, len(done))
        if gen:
            ax.scatter(
                x + jitter[: len(gen)],
                gen,
                s=22,
                color="tab:blue",
                alpha=0.8,
                zorder=3,
                label=once("one seed"),
            )
        if never:
            ax.scatter(
                x + jitter[len(gen) :],
                never,
                s=30,
                marker="x",
                color="tab:red",
                zorder=3,
                label=once("did not generalize (drawn at the step budget)"),
            )
        if gen:
            ax.hlines(
                np.median(gen),
                x - 0.3,
                x + 0.3,
                color="black",
                lw=2,
                zorder=4,
                label=once("median of the seeds that generalized"),
            )
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([label.replace(",", "\n") or "all" for label in groups], fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    if plotted:
        ax.set_yscale("log")
        # 1-2-5 ticks (matplotlib falls back to linear ones when fewer than two are in view)
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no complete run yet", ha="center", transform=ax.transAxes)
    ax.set_ylabel("generalized step")
    ax.grid(alpha=0.25, axis="y")
    first = rows[0].config
    seeds = len({r.job.values["seed"] for r in rows})
    parts = (
        f"{describe_tasks(first['tasks'], first['p'])}:",
        f"generalized step per configuration ({seeds} seed{'s' if seeds != 1 else ''})",
    )
    # one line if it fits the figure (an inch holds about 12 characters of 10-pt text), else
    # a line per part, each wrapped
    room = int(12 * width)
    title = " ".join(parts)
    if len(title) > room:
        title = "\n".join(textwrap.fill(part, room) for part in parts)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarize(out: Path) -> str:
    """Write runs.csv, summary.md and sweep.png into the sweep folder `out`; returns summary.md."""
    out = Path(out)
    grid, rows = read_rows(out)
    write_runs_csv(out / "runs.csv", grid, rows)
    text = summary_markdown(grid, rows)
    (out / "summary.md").write_text(text)
    plot_sweep(out / "sweep.png", grid, rows)
    return text
