"""Experiments: the comparisons of the report "Grokking: Shortening the Delay" (and Grokfast),
each rerun with one command.

An experiment is a list of arms, each a few Config fields changed from a base config (the run
options the user gave); the first arm is the baseline. Every arm runs for every seed, each run in
its own run folder, and the experiment folder gets a markdown table and a comparison figure:

    OUT/experiment.json           name, arms, base config, seeds, the command
    OUT/<arm>/seed<k>/            one ordinary run folder per arm and seed (train.train)
    OUT/table.md                  per arm and task: median [min-max] over seeds
    OUT/comparison.png            validation curves and steps-to-generalize, every seed

The table and the figure are `tinygrok.lab.comparison`'s. Runs go through the sweep's executor
(`sweep.run_jobs`: one process of one BLAS thread per run, each an idempotent task), so rerunning
the same command skips every run that ended (finished or diverged), resumes the ones with a
checkpoint, and starts the others; a folder holding a run of another config is an error, so one
experiment folder never mixes two experiments.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tinygrok.config import Config, validate
from tinygrok.errors import ConfigError
from tinygrok.folders import CONFIG, make_folder, read_summary, write_json
from tinygrok.lab.grid import Job

if typing.TYPE_CHECKING:
    from tinygrok.interrupt import StopFlag
    from tinygrok.lab.sweep import SweepOutcome

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
    start at the sparse start's weight norm, sparse0.9-keep the sparse start with its mask kept,
    exact-loss the baseline with its loss in float64 instead of PyTorch's float32 (its gradient
    stays the loss's after the fit outruns float32, kernels/crossentropy.py). Its SGD had no
    momentum and PyTorch's coupled weight decay (torch.optim.SGD's defaults; the report's figures
    print lr and weight decay 1e-3 only), so momentum is 0 and the decay the preset's.
    """
    xavier = {"init": "report-xavier"}
    return [
        Arm("baseline"),
        Arm("sparse0.9", xavier | {"sparse": 0.9}),
        Arm("small0.01", xavier | {"init_scale": 0.01}),
        Arm("xavier", xavier),
        Arm("norm", {"init": "report-norm"}),
        Arm("sparse0.9-keep", xavier | {"sparse": 0.9, "keep_mask": True}),
        Arm("exact-loss", {"loss_dtype": "float64"}),
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


def plan(
    name: str,
    base: Config,
    seeds: tuple[int, ...],
    out: Path,
    only: tuple[str, ...] = (),
    **arm_options,
) -> list[Job]:
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
            name = f"{arm.label}/seed{seed}"
            specs.append(Job(name, arm.label, {"seed": seed}, cfg, out / name))
    return specs


def write_plan(name: str, specs: list[Job], base: Config, out: Path, command: str) -> None:
    """experiment.json: what this folder holds."""
    arms = list(dict.fromkeys(s.label for s in specs))
    write_json(
        out / "experiment.json",
        {
            "experiment": name,
            "command": command,
            "base_config": base.to_dict(),
            "arms": {a: [str(s.out.relative_to(out)) for s in specs if s.label == a] for a in arms},
        },
    )


def check_started(specs: list[Job], out: Path) -> None:
    """ConfigError unless some run of `specs` has started in `out`, and every folder holds a run
    of its own config (not one of another experiment), whatever budget it started with: what a
    report of the runs so far needs."""
    from tinygrok.lab.runner import check_run

    started = [s for s in specs if (s.out / CONFIG).is_file()]
    if not started:
        raise ConfigError(f"--out: {out} holds no run of this experiment yet; run it first")
    for s in started:
        check_run(s.cfg, s.out, any_budget=True)


def baselines(specs: list[Job]) -> list[Job]:
    """The baseline's runs of `specs`: the first arm's, one per seed."""
    return [s for s in specs if s.label == specs[0].label]


def baseline_steps(specs: list[Job]) -> dict[int, float]:
    """seed -> the step its baseline run generalized at (every task of it; inf if it did not),
    for the baselines that have ended (finished or diverged)."""
    from tinygrok.lab.runner import DONE

    ended = {}
    for s in baselines(specs):
        summary = read_summary(s.out, cfg=s.cfg) if (s.out / CONFIG).is_file() else None
        if summary is not None and summary["status"] in DONE:
            steps = [m["generalized_step"] for m in summary["per_task"].values()]
            ended[s.seed] = math.inf if None in steps else max(steps)
    return ended


def cut_to_baseline(specs: list[Job]) -> list[Job]:
    """The arms of `specs` (every run but the baseline's) once every baseline has ended (none
    before), each with its budget cut to G, the step where its seed's baseline generalized, or
    the baselines' median if that is later (the table's "no speed-up" asks an arm's runs to have
    trained as far as that median): ceil(G / k) steps per task for k tasks, so at least G steps
    in all, the baseline's in steps (not in each task's examples). An arm keeps its budget if G
    is not within it (the baseline did not generalize)."""
    first = baselines(specs)
    ended = baseline_steps(specs)
    if len(ended) < len(first):
        return []
    median = statistics.median(ended.values())
    arms = []
    for s in specs:
        if s.label == first[0].label:
            continue
        g = max(ended[s.seed], median)
        steps = s.cfg.steps if g > s.cfg.step_budget else max(1, math.ceil(g / len(s.cfg.tasks)))
        arms.append(dataclasses.replace(s, cfg=s.cfg.replace(steps=steps)))
    return arms


def run_experiment(
    name: str,
    specs: list[Job],
    base: Config,
    out: Path,
    command: str,
    stop: StopFlag,
    workers: int = 1,
    progress: bool = True,
    stop_at_baseline: bool = False,
) -> SweepOutcome:
    """Run every run of `specs` not done yet into `out`, `workers` at a time, under the folder's
    lock: every run folder is checked first (one of another experiment is a ConfigError), then
    experiment.json is written and the runs go to the local pool, each retried once.

    With `stop_at_baseline` the baselines run first, all of them (a worker may idle while the
    last ones train), then each arm only as far as its seed's baseline took to generalize, or
    the baselines' median if later (`cut_to_baseline`; no arm is cut if that median is a
    baseline that never generalized): an arm whose runs are not generalized by then is what the
    table calls "no speed-up", all the comparison needs of it, in a fraction of the budget."""
    from tinygrok.lab.sweep import SweepOutcome, pending, run_jobs
    from tinygrok.runlock import RunLock

    def run(jobs: list[Job]) -> SweepOutcome:
        todo, _ = pending(jobs)
        return run_jobs(todo, len(jobs), stop, workers=workers, retries=1, progress=progress)

    with RunLock(make_folder(out, "--out")):
        first = baselines(specs)
        if stop_at_baseline:
            _, states = pending(first)  # the baselines' folders checked before their steps read
            arms = cut_to_baseline(specs)
            started = [s for s in specs if s not in first and (s.out / CONFIG).exists()]
            if not arms and started:
                waiting = [b for b in first if b.seed not in baseline_steps(specs)]
                raise ConfigError(
                    f"--stop-at-baseline: {started[0].out} has started, but {waiting[0].out} "
                    "has not ended: an arm's budget comes from every seed's baseline, so run "
                    "the seeds and options the arms started with, or choose another --out"
                )
            states += pending(arms)[1]
        else:
            _, states = pending(specs)
        write_plan(name, specs, base, out, command)
        print(
            f"tinygrok: experiment {name}, {len(specs)} runs ({states['done']} already done) "
            f"-> {out}",
            file=sys.stderr,
        )
        if not stop_at_baseline:
            return run(specs)
        done = run(first)
        if done.failures and len(first) < len(specs):
            print(
                "tinygrok: --stop-at-baseline: no arm runs until every baseline has ended",
                file=sys.stderr,
            )
        if done.interrupted or done.failures:
            return done
        then = run(cut_to_baseline(specs))
        return SweepOutcome(done.failures | then.failures, then.interrupted)
