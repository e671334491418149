"""`tinygrok experiment`: one of the report's comparisons through the lab's experiments
(tinygrok.lab.experiments), and its table and figure (tinygrok.lab.comparison)."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

import click

from tinygrok.cli.options import (
    RUN_OPTIONS,
    FolderPath,
    build_config,
    config_options,
    end_of_runs,
    given_options,
    refuse_unused,
    seeds_option,
    with_stop_flag,
    workers_option,
)
from tinygrok.config import PRESETS
from tinygrok.errors import ConfigError
from tinygrok.tasks import did_you_mean


def parse_sgd_level(text: str) -> tuple[float, int]:
    """'0.3:128' -> (0.3, 128); ConfigError naming --sgd otherwise."""
    try:
        lr, batch = text.split(":")
        level = float(lr), int(batch)
    except ValueError:
        raise ConfigError(f"--sgd: give LR:BATCH, e.g. 0.3:128 (got {text!r})") from None
    if not (math.isfinite(level[0]) and level[0] > 0 and level[1] >= 1):
        raise ConfigError(f"--sgd: LR must be > 0 and BATCH >= 1 (got {text!r})")
    return level


def experiment_command(name: str, seeds: str, out: Path, extras: dict, options: dict) -> str:
    """The command line that reproduces an experiment, for its table."""
    words = ["tinygrok", "experiment", name, "--seeds", seeds]
    for key, value in options.items():
        if value is None or (key not in RUN_OPTIONS and key != "preset"):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            words += [flag, str(value)]
    for flag, values in extras.items():
        for v in values:
            words += [flag] if v is True else [flag, str(v)]  # True: a flag with no value
    return shlex.join(words + ["--out", str(out)])


@click.command()
@click.argument("name", metavar="EXPERIMENT")
@config_options
@seeds_option("seeds of every arm", "--seed and the next two")
@click.option(
    "--out", type=FolderPath(path_type=Path), help="experiment folder  [default: runs/NAME]"
)
@workers_option
@click.option(
    "--sgd",
    "sgd_levels",
    multiple=True,
    metavar="LR:BATCH",
    help="noise only: an SGD arm (repeat)  [default: 0.1:512 0.03:128 0.1:128 0.3:512]",
)
@click.option(
    "--tiny-scale", type=float, help="init only: the tiny arm's --init-scale  [default: 0.1]"
)
@click.option(
    "--arms", help="only these arms (comma-separated labels), beside the baseline  [default: all]"
)
@click.option(
    "--stop-at-baseline",
    is_flag=True,
    help="the baselines first, then each arm only to the step where its seed's baseline "
    "generalized (or the baselines' median, if later): as far as the table's 'no speed-up' "
    "needs",
)
@click.option("--report-only", is_flag=True, help="write the table and figure, run nothing")
@click.option("--quiet", "-q", is_flag=True, help="no progress line")
def experiment(
    name,
    seeds,
    out,
    workers,
    sgd_levels,
    tiny_scale,
    arms,
    stop_at_baseline,
    report_only,
    quiet,
    **options,
) -> None:
    """Run one of the comparisons of the report "Grokking: Shortening the Delay" (or Grokfast's),
    baselines included, for several seeds.

    EXPERIMENT is diversity (division alone, with multiplication, addition, subtraction, all
    four), noise (AdamW against SGD at several lr and batch sizes), init (dense, --sparse 0.9,
    --sparse 0.9 --keep-mask, a tiny --init-scale), grokfast (none, ema, ma) or report (the
    report's arms and controls; with --preset report). Run options set the base recipe of every
    arm. Writes every run under --out, table.md and comparison.png.
    Running the same command again skips the runs already done.

    \b
    Examples:
      tinygrok experiment diversity --seeds 0-2
      tinygrok experiment report --preset report --stop-at-baseline --workers 2
      tinygrok experiment grokfast --weight-decay 0.1 --out runs/grokfast-wd0.1
      tinygrok experiment noise --sgd 0.3:128 --sgd 1:64
    """
    from tinygrok.lab.comparison import write_report
    from tinygrok.lab.experiments import EXPERIMENTS, check_started, plan, run_experiment
    from tinygrok.lab.grid import parse_seeds

    if name not in EXPERIMENTS:
        hint = did_you_mean(name, list(EXPERIMENTS))
        raise ConfigError(
            f"EXPERIMENT: must be one of {', '.join(EXPERIMENTS)} (got {name!r}"
            + (f"; {hint})" if hint else ")")
        )
    only_for = (("--sgd", sgd_levels, "noise"), ("--tiny-scale", tiny_scale, "init"))
    for flag, value, allowed in only_for:
        if value is not None and value != () and name != allowed:
            raise ConfigError(f"{flag}: only for the {allowed} experiment")
    preset = options.get("preset") or "power"
    base = build_config(() if "tasks" in PRESETS[preset] else ("division",), options)
    arm_options, extras = {}, {}
    if sgd_levels:
        arm_options["levels"] = tuple(parse_sgd_level(s) for s in sgd_levels)
        extras["--sgd"] = sgd_levels
    if tiny_scale is not None:
        arm_options["tiny_scale"] = tiny_scale
        extras["--tiny-scale"] = (tiny_scale,)
    out = out or Path("runs") / name
    only = tuple(a.strip() for a in arms.split(",") if a.strip()) if arms else ()
    if only:
        extras["--arms"] = (",".join(only),)
    if stop_at_baseline:
        extras["--stop-at-baseline"] = (True,)
    seeds = seeds or f"{base.seed}-{base.seed + 2}"
    specs = plan(name, base, parse_seeds(seeds), out, only, **arm_options)
    refuse_unused(set(given_options(options)), [s.cfg for s in specs])
    command = experiment_command(name, seeds, out, extras, options)
    failures, interrupted = {}, False
    if report_only:  # reads the runs, even while the experiment runs
        check_started(specs, out)
    else:
        outcome = with_stop_flag(
            lambda stop: run_experiment(
                name,
                specs,
                base,
                out,
                command,
                stop,
                workers=workers,
                progress=not quiet,
                stop_at_baseline=stop_at_baseline,
            )
        )
        failures, interrupted = outcome.failures, outcome.interrupted
    click.echo(write_report(name, specs, base, out, command))
    files = "table.md, comparison.png" if (out / "comparison.png").exists() else "table.md"
    click.echo(f"experiment folder: {out} ({files})")
    end_of_runs(failures, interrupted)
