"""The table and the figure of an experiment (`tinygrok.lab.experiments`), from its run folders
alone: `table.md` (per arm and task, median [min-max] over seeds, speedups against the baseline,
stability) and `comparison.png` (validation curves and steps to generalize, every seed).

Speedups are ratios of the baseline's median to the arm's median, for the same task:

    speedup (steps)    = generalized_step of the baseline / generalized_step of the arm
    speedup (progress) = progress_pct of the baseline / progress_pct of the arm
    speedup (delay)    = delay_steps of the baseline / delay_steps of the arm

An arm most of whose runs never generalized, while the baseline's median run did, has no such
ratio. If each of its runs that never generalized trained at least as far as the baseline's
median generalized step (the whole budget, or an arm ended there: started with that budget, as
`--stop-at-baseline` does, or given it by `tinygrok resume RUN --steps N`), it is slower than
the baseline, and the steps and progress cells say "no speed-up (> N steps)", N the fewest
steps such a run trained. Progress % is always of the budget the
experiment planned, whatever budget a resume gave a run.

progress_pct is generalized_step / (steps * tasks), the report's measure: with the budget scaled by
the number of tasks, it compares the examples of each task seen before generalizing.
"""

from __future__ import annotations

import math
import statistics
import textwrap
from collections.abc import Callable
from pathlib import Path

from tinygrok.config import Config
from tinygrok.folders import METRICS, read_config, read_metrics, read_summary
from tinygrok.lab.experiments import EXPERIMENTS
from tinygrok.lab.grid import Job
from tinygrok.lab.runner import DONE


def median_spread(values: list[float | None]) -> tuple[float, float, float] | None:
    """(median, min, max) with None counted as +inf (did not happen); None if no values."""
    xs = [math.inf if v is None else v for v in values]
    return (statistics.median(xs), min(xs), max(xs)) if xs else None


def fmt_stat(stat: tuple[float, float, float] | None, fmt: Callable[[float], str]) -> str:
    """'median [min-max]'; 'never' for +inf."""
    if stat is None:
        return "-"

    def one(v: float) -> str:
        return "never" if math.isinf(v) else fmt(v)

    med, lo, hi = stat
    return one(med) if lo == hi else f"{one(med)} [{one(lo)}-{one(hi)}]"


def fmt_int(v: float) -> str:
    """1950.0 -> '1,950'."""
    return f"{v:,.0f}"


def fmt_speedup(base: float | None, arm: float | None) -> str:
    """base / arm as '3.2x', '-' when either is missing or not finite."""
    if base is None or arm is None or not math.isfinite(base) or not math.isfinite(arm):
        return "-"
    if arm <= 0:
        return "-"
    return f"{base / arm:.2g}x" if base / arm < 10 else f"{base / arm:.0f}x"


def collect(specs: list[Job]) -> dict[str, dict[str, list[dict]]]:
    """arm -> task -> the per-task summaries of its finished seeds (summary fields + status)."""
    rows: dict[str, dict[str, list[dict]]] = {}
    for spec in specs:
        summary = read_summary(spec.out, cfg=spec.cfg)
        by_task = rows.setdefault(spec.label, {t: [] for t in spec.cfg.tasks})
        if not summary or summary.get("status") not in DONE:
            continue
        for t in spec.cfg.tasks:
            row = summary["per_task"][t] | {"status": summary["status"]}
            # a budget changed by `resume --steps` changes the run's own progress %: the
            # experiment's is of the budget it planned
            gen = row["generalized_step"]
            row["progress_pct"] = None if gen is None else 100.0 * gen / spec.cfg.step_budget
            by_task[t].append(row | {"steps_run": summary["steps_run"]})
    return rows


def no_speedup(runs: list[dict], base_median: float | None) -> str | None:
    """'no speed-up (> N steps)' when more than half of the arm's runs never generalized, the
    baseline's median run did, and every run of the arm that never generalized trained N >= the
    baseline's median steps; else None."""
    never = [r["steps_run"] for r in runs if r["generalized_step"] is None]
    # more than half never generalized (with an even count, a median of inf may rest on half)
    if base_median is None or not math.isfinite(base_median) or 2 * len(never) <= len(runs):
        return None
    return f"no speed-up (> {min(never):,} steps)" if min(never) >= base_median else None


TABLE_HEADER = (
    "| arm | task | seeds generalized | generalized step | progress % | delay (steps) "
    "| speedup (steps) | speedup (progress) | speedup (delay) | final val acc % | stability |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|\n"
)


def stability_cell(runs: list[dict], threshold: float) -> str:
    """'fell back k of n (lowest x%)', then how many of those ended below the threshold and how
    many runs diverged; 'stable' when none fell back, '-' when none generalized."""
    gen = [r for r in runs if r["generalized_step"] is not None]
    fell = [r for r in gen if r["unstable"]]
    cell = "-" if not gen else "stable" if not fell else f"fell back {len(fell)} of {len(gen)}"
    if fell:
        low = min(r["min_val_acc_after_generalized"] for r in fell)
        cell += f" (lowest {100 * low:.0f}%)"
        ended = sum(r["final_val_acc"] < threshold for r in fell)
        cell += f", {ended} ended below" if ended else ", all recovered"
    diverged = sum(r["status"] == "diverged" for r in runs)
    if diverged:
        cell = f"{diverged} diverged" if not gen else f"{cell}; {diverged} diverged"
    return cell


def table(specs: list[Job]) -> str:
    """The markdown table of an experiment: one row per arm and task."""
    rows = collect(specs)
    baseline = specs[0].label
    stats: dict[tuple[str, str], dict] = {}
    for arm, by_task in rows.items():
        for task, runs in by_task.items():
            stats[arm, task] = {
                key: median_spread([r[key] for r in runs])
                for key in ("generalized_step", "progress_pct", "delay_steps")
            }
    lines = [TABLE_HEADER]
    for arm, by_task in rows.items():
        for task, runs in by_task.items():
            if not runs:
                lines.append(f"| {arm} | {task} | no run done yet | | | | | | | | |\n")
                continue
            s = stats[arm, task]
            # the baseline's figures for this task, once it has a run done
            b = stats[baseline, task] if arm != baseline and rows[baseline].get(task) else None
            n_gen = sum(r["generalized_step"] is not None for r in runs)
            # a run that diverged at step 0 has no final accuracy
            final = median_spread(
                [100 * r["final_val_acc"] for r in runs if r["final_val_acc"] is not None]
            )
            stab = stability_cell(runs, specs[0].cfg.generalized_threshold)
            speed = [
                fmt_speedup(b[key][0], s[key][0]) if b else "-"
                for key in ("generalized_step", "progress_pct", "delay_steps")
            ]
            slower = b and no_speedup(runs, b["generalized_step"][0])
            if slower:
                # progress % divides by budgets that grow with the tasks: the same verdict only
                # for an arm of as many tasks as the baseline
                same_tasks = len(rows[arm]) == len(rows[baseline])
                speed[:2] = [slower, slower if same_tasks else "-"]
            lines.append(
                f"| {arm} | {task} | {n_gen} of {len(runs)} "
                f"| {fmt_stat(s['generalized_step'], fmt_int)} "
                f"| {fmt_stat(s['progress_pct'], lambda v: f'{v:.3g}')} "
                f"| {fmt_stat(s['delay_steps'], fmt_int)} "
                f"| {speed[0]} | {speed[1]} | {speed[2]} "
                f"| {fmt_stat(final, lambda v: f'{v:.1f}')} | {stab} |\n"
            )
    return "".join(lines)


def regime(base: Config, specs: list[Job] = ()) -> str:
    """The base config's fields that differ from the defaults, as 'name=value, ...', leaving out
    those that no run of `specs` keeps (every arm sets them: the tasks of `diversity`)."""
    default, given = Config().to_dict(), base.to_dict()
    runs = [s.cfg.to_dict() for s in specs]
    changed = [
        f"{k}={given[k]}"
        for k in given
        if given[k] != default[k]
        and k != "seed"
        and (not runs or any(r[k] == given[k] for r in runs))
    ]
    return ", ".join(changed) or "the default recipe"


# ---------------------------------------------------------------------------------------------
# The figure


def figure_title(name: str, specs: list[Job], base: Config) -> str:
    """comparison.png's title: the experiment, then what every run shares (the tasks unless the
    arms set them, the base's preset and options) and the seeds."""
    from tinygrok.plots import run_label
    from tinygrok.tasks import describe_tasks

    shared = all(s.cfg.tasks == base.tasks for s in specs)
    what = describe_tasks(base.tasks, base.p) if shared else f"tasks mod {base.p}"
    seeds = ", ".join(str(s) for s in dict.fromkeys(s.seed for s in specs))
    return (
        f"Experiment {name}: {EXPERIMENTS[name][0]}\n"
        f"{what}, {run_label(base) or 'the default recipe'}; seeds {seeds}"
    )


def finished(specs: list[Job]) -> list[tuple[Job, dict]]:
    """The runs that are done, each with its summary."""
    done = [(s, summary) for s in specs if (summary := read_summary(s.out, cfg=s.cfg)) is not None]
    return [(s, summary) for s, summary in done if summary["status"] in DONE]


def plot_comparison(specs: list[Job], path: Path, title: str) -> Path:
    """Left: validation accuracy of each arm's first task against steps per task, every seed.
    Right: steps per task to generalize (generalized_step / tasks), per arm and task, every seed;
    a run that did not generalize (in its budget, or before it diverged) is an x at the steps
    per task it trained."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinygrok.plots import step_axis

    arms = list(dict.fromkeys(s.label for s in specs))
    colors = {arm: f"C{i}" for i, arm in enumerate(arms)}
    # every file read before the figure exists, so a damaged one leaves no figure open
    done = finished(specs)
    logs = [[r for r in read_metrics(s.out) if r["step"] > 0] for s, _ in done]
    fig, (ax_curve, ax_dots) = plt.subplots(1, 2, figsize=(12, 4.8))
    labelled: set[str] = set()
    # (row label, steps per task to generalize or, not generalized, trained, arm, generalized)
    points: list[tuple[str, float, str, bool]] = []
    for (spec, summary), records in zip(done, logs, strict=True):
        k, first = len(spec.cfg.tasks), spec.cfg.tasks[0]
        acc = [100 * r.get("per_task", {}).get(first, r)["val_acc"] for r in records]
        ax_curve.plot(
            [r["step"] / k for r in records],
            acc,
            color=colors[spec.label],
            lw=1,
            alpha=0.75,
            label=None if spec.label in labelled else f"{spec.label} ({first})",
        )
        labelled.add(spec.label)
        for t in spec.cfg.tasks:
            gen = summary["per_task"][t]["generalized_step"]
            steps = max(summary["steps_run"], 1) if gen is None else gen  # on the log axis
            points.append((f"{spec.label}: {t}", steps / k, spec.label, gen is not None))
    ax_curve.axhline(100 * specs[0].cfg.generalized_threshold, color="0.5", lw=0.8, ls=":")
    step_axis(ax_curve, log_x=True)
    ax_curve.set_xlabel("step / number of tasks")
    ax_curve.set_ylabel("validation accuracy (%)")
    ax_curve.set_ylim(-2, 102)
    ax_curve.legend(fontsize=7, loc="upper left")
    ax_curve.grid(alpha=0.25)
    rows = list(dict.fromkeys(label for label, _, _, _ in points))
    for label, v, arm, reached in points:
        ax_dots.plot(v, rows.index(label), "o" if reached else "x", color=colors[arm], alpha=0.7)
    ax_dots.set_yticks(range(len(rows)), rows, fontsize=7)
    ax_dots.invert_yaxis()
    step_axis(ax_dots, log_x=True)
    ax_dots.set_xlabel("steps per task to generalize (x: not generalized in the steps it trained)")
    ax_dots.grid(alpha=0.25)
    # wrapped to the figure's width (12 in of 10-pt text holds about 140 characters)
    fig.suptitle("\n".join(textwrap.fill(line, 140) for line in title.splitlines()), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def in_progress(specs: list[Job]) -> str:
    """The runs started but not done, one line each, from their metrics.jsonl: the last
    evaluated step, its training and validation accuracy, and the best validation accuracy so
    far (first task); '' when there are none."""
    lines = []
    for spec in specs:
        summary = read_summary(spec.out, cfg=spec.cfg)
        if (summary and summary.get("status") in DONE) or not (spec.out / METRICS).exists():
            continue
        records = read_metrics(spec.out)
        if not records:
            continue
        task = spec.cfg.tasks[0]
        accs = [r.get("per_task", {}).get(task, r) for r in records]
        last, best = accs[-1], max(a["val_acc"] for a in accs)
        # the run's own budget (cut by --stop-at-baseline, or changed by a resume)
        budget = read_config(spec.out)[0].step_budget
        lines.append(
            f"- {spec.label}, seed {spec.seed}: step {records[-1]['step']:,} of "
            f"{budget:,}, {task} training {100 * last['train_acc']:.1f}%, "
            f"validation {100 * last['val_acc']:.1f}% (at most {100 * best:.1f}% so far)\n"
        )
    return "".join(lines)


def write_report(name: str, specs: list[Job], base: Config, out: Path, command: str) -> str:
    """table.md and comparison.png of the runs done so far (no figure before the first is done);
    returns the table's text."""
    seeds = ", ".join(str(s) for s in dict.fromkeys(s.seed for s in specs))
    text = (
        f"# Experiment {name}: {EXPERIMENTS[name][0]}\n\n"
        f"Command: `{command}`\n\n"
        f"Regime: {regime(base, specs)}; seeds {seeds}; step budget {base.steps:,} per "
        f"task, patience {base.patience}. Cells: median [min-max] over seeds; 'never': did not "
        f"reach validation accuracy {base.generalized_threshold:g} in the steps it trained (the "
        "budget, or fewer for an arm stopped where the baseline had generalized, whose speed-up "
        "then says 'no speed-up (> N steps)'). Stability: "
        "how many runs that generalized fell back below that threshold at a later evaluation "
        "(summary `unstable`), the lowest validation accuracy after generalizing, and whether "
        "they ended above it again.\n\n" + table(specs)
    )
    running = in_progress(specs)
    if running:
        text += "\nRuns started and not done yet (`tinygrok resume` continues them):\n\n" + running
    (out / "table.md").write_text(text)
    figure = out / "comparison.png"
    if finished(specs):
        plot_comparison(specs, figure, figure_title(name, specs, base))
    else:  # nothing to draw yet, and no figure of an earlier state left behind
        figure.unlink(missing_ok=True)
    return text
