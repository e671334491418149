"""Experiments: the comparisons of the report "Grokking: Shortening the Delay" (and Grokfast),
each rerun with one command.

An experiment is a list of arms, each a few Config fields changed from a base config (the run
options the user gave); the first arm is the baseline. Every arm runs for every seed, each run in
its own run folder, and the experiment folder gets a markdown table and a comparison figure:

    OUT/experiment.json           name, arms, base config, seeds, the command
    OUT/<arm>/seed<k>/            one ordinary run folder per arm and seed (train.train)
    OUT/table.md                  per arm and task: median [min-max] over seeds
    OUT/comparison.png            validation curves and steps-to-generalize, every seed

Runs go through the sweep's pool (`sweep.run_local`, one process of one BLAS thread per run), so
rerunning the same command skips every run that ended (finished or diverged), resumes the ones with
a checkpoint, and starts the others; a folder holding a run of another config is an error, so one
experiment folder never mixes two experiments.

Speedups are ratios of the baseline's median to the arm's median, for the same task:

    speedup (steps)    = generalized_step of the baseline / generalized_step of the arm
    speedup (progress) = progress_pct of the baseline / progress_pct of the arm
    speedup (delay)    = delay_steps of the baseline / delay_steps of the arm

progress_pct is generalized_step / (steps * tasks), the report's measure: with the budget scaled by
the number of tasks, it compares the examples of each task seen before generalizing.
"""

from __future__ import annotations

import json
import math
import statistics
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tinygrok.config import Config, validate
from tinygrok.errors import ConfigError
from tinygrok.sweep import DONE

FOUR_TASKS = ("division", "multiplication", "addition", "subtraction")


@dataclass(frozen=True)
class Arm:
    """One setting of an experiment: a label (also its folder name) and the fields it changes."""

    label: str
    changes: dict = field(default_factory=dict)


def diversity_arms(base: Config) -> list[Arm]:
    """Division alone, with each other operation, and all four in one model."""
    return [
        Arm("division", {"tasks": ("division",)}),
        Arm("div+mul", {"tasks": ("division", "multiplication")}),
        Arm("div+add", {"tasks": ("division", "addition")}),
        Arm("div+sub", {"tasks": ("division", "subtraction")}),
        Arm("all-four", {"tasks": FOUR_TASKS}),
    ]


# SGD noise levels (lr, batch size): the gradient noise of SGD grows with lr / batch size.
SGD_LEVELS = ((0.1, 512), (0.03, 128), (0.1, 128), (0.3, 512))


def noise_arms(base: Config, levels: tuple[tuple[float, int], ...] = SGD_LEVELS) -> list[Arm]:
    """The AdamW baseline, then SGD with momentum at each (lr, batch size).

    SGD's weight decay is coupled (g + wd p) and goes through the momentum buffer, so in steady
    state each step shrinks the weights by lr * wd / (1 - momentum). It is set so that this equals
    base.lr * base.weight_decay, the AdamW baseline's shrink per step.
    """
    arms = [Arm("adamw")]
    for lr, batch in levels:
        wd = base.lr * base.weight_decay * (1 - base.momentum) / lr
        changes = {"optimizer": "sgd", "lr": lr, "batch_size": batch, "weight_decay": wd}
        arms.append(Arm(f"sgd-lr{lr:g}-b{batch}", changes))
    return arms


def init_arms(base: Config, tiny_scale: float = 0.1) -> list[Arm]:
    """Dense start, 90% sparse (free and with the mask kept), and a tiny-scale start."""
    return [
        Arm("dense"),
        Arm("sparse0.9", {"sparse": 0.9}),
        Arm("sparse0.9-keep", {"sparse": 0.9, "keep_mask": True}),
        Arm(f"scale{tiny_scale:g}", {"init_scale": tiny_scale}),
    ]


def grokfast_arms(base: Config) -> list[Arm]:
    """No filter, Grokfast (EMA) and Grokfast-MA with Lee et al.'s defaults."""
    return [
        Arm("baseline"),
        Arm("ema", {"grokfast": "ema"}),
        Arm("ma", {"grokfast": "ma"}),
    ]


def report_arms(base: Config) -> list[Arm]:
    """The report's arms ("Grokking: Shortening the Delay") in its regime (`--preset report`),
    in the order the machine should afford them, and the controls it did not run.

    Its sparse and small starts redraw the linear modules Xavier-normal (`--init report-xavier`);
    xavier is that rule dense (separates "sparse" from "another distribution"), norm the default
    start at the sparse start's weight norm, sparse0.9-keep the sparse start with its mask kept.
    Its SGD had no momentum and PyTorch's coupled weight decay (torch.optim.SGD's defaults; the
    report's figures print lr and weight decay 1e-3 only), so momentum is 0 and the decay the
    preset's.
    """
    xavier = {"init": "report-xavier"}
    return [
        Arm("baseline"),
        Arm("sparse0.9", xavier | {"sparse": 0.9}),
        Arm("small0.01", xavier | {"init_scale": 0.01}),
        Arm("xavier", xavier),
        Arm("norm", {"init": "report-norm"}),
        Arm("sparse0.9-keep", xavier | {"sparse": 0.9, "keep_mask": True}),
        Arm("sgd-lr0.005", {"optimizer": "sgd", "lr": 0.005, "momentum": 0.0}),
        Arm("sgd-lr0.01", {"optimizer": "sgd", "lr": 0.01, "momentum": 0.0}),
        Arm("div+mul", {"tasks": ("division", "multiplication")}),
        Arm("all-four", {"tasks": FOUR_TASKS}),
        Arm("div+add", {"tasks": ("division", "addition")}),
    ]


EXPERIMENTS: dict[str, tuple[str, Callable[..., list[Arm]]]] = {
    "diversity": ("task diversity: division alone and beside other operations", diversity_arms),
    "noise": ("SGD noise: AdamW against SGD at several (lr, batch size)", noise_arms),
    "init": ("starts: dense, 90% sparse, 90% sparse with the mask kept, tiny scale", init_arms),
    "grokfast": ("Grokfast: no filter, EMA filter, MA filter", grokfast_arms),
    "report": (
        "the report's own arms and controls in its regime (use with --preset report)",
        report_arms,
    ),
}


@dataclass(frozen=True)
class RunSpec:
    """One run of an experiment."""

    arm: str
    seed: int
    cfg: Config
    dir: Path


def plan(
    name: str,
    base: Config,
    seeds: tuple[int, ...],
    out: Path,
    only: tuple[str, ...] = (),
    **arm_options,
) -> list[RunSpec]:
    """Every run of experiment `name`: arms x seeds, each config validated (a bad arm is a
    ConfigError before anything runs). With `only`, just the baseline and those arms."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"EXPERIMENT: must be one of {', '.join(EXPERIMENTS)} (got {name!r})")
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    arms = EXPERIMENTS[name][1](base, **arm_options)
    labels = [a.label for a in arms]
    unknown = [a for a in only if a not in labels]
    if unknown:
        raise ConfigError(
            f"--arms: {name} has the arms {', '.join(labels)} (got {', '.join(unknown)})"
        )
    if only:
        arms = [arms[0]] + [a for a in arms[1:] if a.label in only]
    specs = []
    for arm in arms:
        for seed in seeds:
            cfg = validate(base.replace(**arm.changes, seed=seed))
            specs.append(RunSpec(arm.label, seed, cfg, out / arm.label / f"seed{seed}"))
    return specs


def read_json(path: Path) -> dict | None:
    """A JSON file's object, or None if it is missing or unreadable (an interrupted write)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def states(specs: list[RunSpec]) -> list[str]:
    """What each run folder needs: "new", "resume" or "done" (sweep.run_state); ConfigError if a
    folder holds a run of another config (it belongs to another experiment)."""
    from tinygrok.sweep import run_state

    return [run_state(s.cfg, s.dir) for s in specs]


def run_all(specs: list[RunSpec], jobs: int = 1, progress: bool = True) -> tuple[dict, bool]:
    """Run every spec not done yet on `jobs` worker processes of one thread each, with the sweep's
    pool (sweep.run_local: idempotent runs, resumed from their checkpoints, retried once if a worker
    dies). Returns ({run: error} of the runs that failed, whether Ctrl-C stopped the experiment)."""
    from tinygrok.interrupt import StopFlag
    from tinygrok.sweep import Job, SweepDisplay, run_local, warm_kernels

    todo = [s for s, state in zip(specs, states(specs), strict=True) if state != "done"]
    if not todo:
        return {}, False
    kernels = {}
    for s in todo:  # compile each set of kernels once, before the workers start
        c = s.cfg
        kernels.setdefault((c.engine, c.dtype, c.activation, c.layer_norm, c.optimizer), c)
    for cfg in kernels.values():
        warm_kernels(cfg)
    work = [Job(f"{s.arm}/seed{s.seed}", s.arm, {"seed": s.seed}, s.cfg, s.dir) for s in todo]
    display = SweepDisplay(len(specs), len(specs) - len(todo), progress)
    stop = StopFlag()
    stop.install()
    try:
        failures = run_local(work, jobs, 1, display, stop)
    finally:
        stop.uninstall()
        display.close()
    return failures, stop.reason is not None


# ---------------------------------------------------------------------------------------------
# The table


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


def collect(specs: list[RunSpec]) -> dict[str, dict[str, list[dict]]]:
    """arm -> task -> the per-task summaries of its finished seeds (summary fields + status)."""
    rows: dict[str, dict[str, list[dict]]] = {}
    for spec in specs:
        summary = read_json(spec.dir / "summary.json")
        by_task = rows.setdefault(spec.arm, {t: [] for t in spec.cfg.tasks})
        if not summary or summary.get("status") not in DONE:
            continue
        for t in spec.cfg.tasks:
            by_task[t].append(summary["per_task"][t] | {"status": summary["status"]})
    return rows


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


def table(specs: list[RunSpec]) -> str:
    """The markdown table of an experiment: one row per arm and task."""
    rows = collect(specs)
    baseline = specs[0].arm
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
            s, b = stats[arm, task], stats.get((baseline, task))
            n_gen = sum(r["generalized_step"] is not None for r in runs)
            final = median_spread([100 * r["final_val_acc"] for r in runs])
            stab = stability_cell(runs, specs[0].cfg.generalized_threshold)
            speed = [
                fmt_speedup(b[key][0], s[key][0]) if b and arm != baseline else "-"
                for key in ("generalized_step", "progress_pct", "delay_steps")
            ]
            lines.append(
                f"| {arm} | {task} | {n_gen} of {len(runs)} "
                f"| {fmt_stat(s['generalized_step'], fmt_int)} "
                f"| {fmt_stat(s['progress_pct'], lambda v: f'{v:.3g}')} "
                f"| {fmt_stat(s['delay_steps'], fmt_int)} "
                f"| {speed[0]} | {speed[1]} | {speed[2]} "
                f"| {fmt_stat(final, lambda v: f'{v:.1f}')} | {stab} |\n"
            )
    return "".join(lines)


def regime(base: Config, specs: list[RunSpec] = ()) -> str:
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


def figure_title(name: str, specs: list[RunSpec], base: Config) -> str:
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


def plot_comparison(specs: list[RunSpec], path: Path, title: str) -> Path:
    """Left: validation accuracy of each arm's first task against steps per task, every seed.
    Right: steps per task to generalize (generalized_step / tasks), per arm and task, every seed;
    runs that never generalized sit at the right edge as x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinygrok.plots import read_metrics, step_axis

    arms = list(dict.fromkeys(s.arm for s in specs))
    colors = {arm: f"C{i}" for i, arm in enumerate(arms)}
    fig, (ax_curve, ax_dots) = plt.subplots(1, 2, figsize=(12, 4.8))
    labelled: set[str] = set()
    points: list[tuple[str, float | None, str]] = []  # (row label, steps per task, arm)
    for spec in specs:
        summary = read_json(spec.dir / "summary.json")
        if not summary or summary.get("status") not in DONE:
            continue
        k, first = len(spec.cfg.tasks), spec.cfg.tasks[0]
        records = [r for r in read_metrics(spec.dir) if r["step"] > 0]
        acc = [100 * r.get("per_task", {}).get(first, r)["val_acc"] for r in records]
        ax_curve.plot(
            [r["step"] / k for r in records],
            acc,
            color=colors[spec.arm],
            lw=1,
            alpha=0.75,
            label=None if spec.arm in labelled else f"{spec.arm} ({first})",
        )
        labelled.add(spec.arm)
        for t in spec.cfg.tasks:
            gen = summary["per_task"][t]["generalized_step"]
            points.append((f"{spec.arm}: {t}", None if gen is None else gen / k, spec.arm))
    ax_curve.axhline(100 * specs[0].cfg.generalized_threshold, color="0.5", lw=0.8, ls=":")
    step_axis(ax_curve, log_x=True)
    ax_curve.set_xlabel("step / number of tasks")
    ax_curve.set_ylabel("validation accuracy (%)")
    ax_curve.set_ylim(-2, 102)
    ax_curve.legend(fontsize=7, loc="upper left")
    ax_curve.grid(alpha=0.25)
    rows = list(dict.fromkeys(label for label, _, _ in points))
    reached = [v for _, v, _ in points if v is not None]
    edge = 1.5 * max([spec.cfg.steps for spec in specs] + reached)
    for label, v, arm in points:
        y = rows.index(label)
        if v is None:
            ax_dots.plot(edge, y, "x", color=colors[arm])
        else:
            ax_dots.plot(v, y, "o", color=colors[arm], alpha=0.7)
    ax_dots.set_yticks(range(len(rows)), rows, fontsize=7)
    ax_dots.invert_yaxis()
    step_axis(ax_dots, log_x=True)
    ax_dots.set_xlabel("steps per task to generalize (x: never, within the budget)")
    ax_dots.grid(alpha=0.25)
    # wrapped to the figure's width (12 in of 10-pt text holds about 140 characters)
    fig.suptitle("\n".join(textwrap.fill(line, 140) for line in title.splitlines()), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def in_progress(specs: list[RunSpec]) -> str:
    """The runs started but not done, one line each, from their metrics.jsonl: the last
    evaluated step, its training and validation accuracy, and the best validation accuracy so
    far (first task); '' when there are none."""
    from tinygrok.plots import read_metrics

    lines = []
    for spec in specs:
        summary = read_json(spec.dir / "summary.json")
        if (summary and summary.get("status") in DONE) or not (spec.dir / "metrics.jsonl").exists():
            continue
        records = read_metrics(spec.dir)
        if not records:
            continue
        task = spec.cfg.tasks[0]
        accs = [r.get("per_task", {}).get(task, r) for r in records]
        last, best = accs[-1], max(a["val_acc"] for a in accs)
        lines.append(
            f"- {spec.arm}, seed {spec.seed}: step {records[-1]['step']:,} of "
            f"{spec.cfg.step_budget:,}, {task} training {100 * last['train_acc']:.1f}%, "
            f"validation {100 * last['val_acc']:.1f}% (at most {100 * best:.1f}% so far)\n"
        )
    return "".join(lines)


def write_report(name: str, specs: list[RunSpec], base: Config, out: Path, command: str) -> str:
    """table.md and comparison.png of the runs done so far; returns the table's text."""
    seeds = ", ".join(str(s) for s in dict.fromkeys(s.seed for s in specs))
    text = (
        f"# Experiment {name}: {EXPERIMENTS[name][0]}\n\n"
        f"Command: `{command}`\n\n"
        f"Regime: {regime(base, specs)}; seeds {seeds}; step budget {base.steps:,} per "
        f"task, patience {base.patience}. Cells: median [min-max] over seeds; 'never': did not "
        f"reach validation accuracy {base.generalized_threshold:g} within the budget. Stability: "
        "how many runs that generalized fell back below that threshold at a later evaluation "
        "(summary `unstable`), the lowest validation accuracy after generalizing, and whether "
        "they ended above it again.\n\n" + table(specs)
    )
    running = in_progress(specs)
    if running:
        text += "\nRuns started and not done yet (`tinygrok resume` continues them):\n\n" + running
    (out / "table.md").write_text(text)
    plot_comparison(specs, out / "comparison.png", figure_title(name, specs, base))
    return text


def write_plan(name: str, specs: list[RunSpec], base: Config, out: Path, command: str) -> None:
    """experiment.json: what this folder holds."""
    from tinygrok.checkpoint import write_json

    out.mkdir(parents=True, exist_ok=True)
    arms = list(dict.fromkeys(s.arm for s in specs))
    write_json(
        out / "experiment.json",
        {
            "experiment": name,
            "command": command,
            "base_config": base.to_dict(),
            "arms": {a: [str(s.dir.relative_to(out)) for s in specs if s.arm == a] for a in arms},
        },
    )
