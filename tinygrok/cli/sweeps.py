"""`tinygrok sweep`, `tinygrok phase` and `tinygrok summarize`: many runs of one recipe through
the lab's sweeps (tinygrok.lab.sweep), their aggregates and phase diagrams."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
from click.core import ParameterSource

from tinygrok.cli.options import (
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
from tinygrok.errors import ConfigError
from tinygrok.folders import make_folder
from tinygrok.tasks import describe_tasks


def run_grid(
    tasks: tuple[str, ...],
    options: dict,
    grid: tuple[str, ...],
    seeds: str | None,
    out: Path,
    finish: Callable,
    *,
    extend: bool = False,
    executor: str = "local",
    workers: int = 1,
    retries: int = 2,
    scheduler: str | None = None,
    quiet: bool = False,
) -> None:
    """Run the sweep of --grid and --seeds into `out` (locked, Ctrl-C stops it cleanly), then print
    `finish(sweep, out)`, which writes the sweep's own report; exit 130 if interrupted, 1 if any
    run failed (`end_of_runs`). With `extend`, the sweep already in `out` grows by this one."""
    from tinygrok.lab.grid import make_sweep
    from tinygrok.lab.sweep import run_sweep
    from tinygrok.runlock import RunLock

    given = set(given_options(options))
    plan = make_sweep(lambda values: build_config(tasks, options | values), grid, seeds, given)
    refuse_unused(given, [job.cfg for job in plan.jobs(out)])
    with RunLock(make_folder(out, "--out")):
        outcome = with_stop_flag(
            lambda stop: run_sweep(
                plan, out.resolve(), executor, workers, retries, scheduler, not quiet, stop, extend
            )
        )
        click.echo(finish(outcome.sweep, out))
    end_of_runs(outcome.failures, outcome.interrupted)


def grid_options(grid_help: str, seeds_what: str, out_help: str):
    """--grid, --seeds, --out, --extend and --workers: what sweep and phase share, in that
    order; the helps say what the grid, the seeds and the folder are for in the command."""
    options = [
        click.option("--grid", multiple=True, metavar="KEY=V1,V2,...", help=grid_help),
        seeds_option(seeds_what, "--seed"),
        click.option(
            "--out", type=FolderPath(path_type=Path, file_okay=False), required=True, help=out_help
        ),
        click.option("--extend", is_flag=True, help=EXTEND_HELP),
        workers_option,
    ]

    def add(f):
        for option in reversed(options):
            f = option(f)
        return f

    return add


EXTEND_HELP = (
    "add this command's --grid values and --seeds to the sweep already in --out (same run "
    "options and grid keys); it becomes the product of all the values  [default: refuse a "
    "folder holding another sweep]"
)


@click.command()
@click.argument("tasks", nargs=-1, metavar="TASK [TASK ...]")
@config_options
@grid_options(
    "a run option and its values (weight_decay=0.1,1); repeat it for the product of grids",
    "seeds to run",
    "sweep folder: runs/, sweep.json, runs.csv, summary.md, sweep.png",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "dask"]),
    default="local",
    show_default=True,
    help='a local process pool, or a Dask cluster (pip install "tinygrok[dask]")',
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="Dask scheduler, e.g. tcp://10.0.0.5:8786; its workers need tinygrok and --out on a "
    "shared disk  [default: start a local cluster of --workers processes]",
)
@click.option(
    "--retries", type=int, default=2, show_default=True, help="times a failed run is tried again"
)
@click.option("--quiet", "-q", is_flag=True, help="no status line")
def sweep(
    tasks, seeds, grid, out, extend, workers, executor, scheduler, retries, quiet, **options
) -> None:
    """Train every combination of --seeds and --grid values, each as a run folder in --out.

    Every run option sets all runs; each --grid KEY (a run option, as weight_decay or
    --weight-decay) takes every listed value, and the sweep runs the product of grids times the
    seeds, as OUT/runs/KEY=V,...,seed=S. Running the same command again skips finished runs and
    resumes interrupted ones; a folder holding another sweep is refused, unless --extend adds
    this command's values and seeds to it. At the end it writes runs.csv, summary.md (printed) and
    sweep.png.

    \b
    Examples:
      tinygrok sweep division --seeds 0-9 --grid weight_decay=0.1,0.3,1 \\
          --out sweeps/wd
      tinygrok sweep division --seeds 0-9 --grid weight_decay=3 --out sweeps/wd \\
          --extend
      tinygrok sweep division --seeds 0-4 --grid sparse=0,0.9 --steps 5000 \\
          --out sweeps/sparse
      tinygrok sweep division --seeds 0-99 --executor dask \\
          --scheduler tcp://head:8786 --out /shared/sweeps/big
    """
    from tinygrok.lab.executors import check_executor

    check_executor(executor)
    if scheduler is not None and executor != "dask":
        raise ConfigError("--scheduler: only with --executor dask")
    given = click.get_current_context().get_parameter_source("workers")
    if scheduler is not None and given is ParameterSource.COMMANDLINE:
        raise ConfigError("--workers: with --scheduler, the cluster's own workers run the sweep")
    if retries < 0:
        raise ConfigError(f"--retries: must be an integer >= 0 (got {retries})")
    from tinygrok.lab.aggregate import summarize as summarize_sweep

    def finish(swept, out: Path) -> str:
        return (
            f"{summarize_sweep(out)}\nsweep folder: {out} (runs.csv, summary.md, sweep.png, runs/)"
        )

    run_grid(
        tasks,
        options,
        grid,
        seeds,
        out,
        finish,
        executor=executor,
        extend=extend,
        workers=workers,
        retries=retries,
        scheduler=scheduler,
        quiet=quiet,
    )


@click.command()
@click.argument("sweep_dir", type=click.Path(path_type=Path, file_okay=False), metavar="DIR")
def summarize(sweep_dir) -> None:
    """Rebuild runs.csv, summary.md and sweep.png of the sweep in DIR, and print the table.

    Reads only DIR/sweep.json and each run's config.json and summary.json, so it also works on a
    sweep that is still running or was copied from a cluster.
    """
    from tinygrok.lab.aggregate import summarize as summarize_sweep

    click.echo(summarize_sweep(sweep_dir))


@click.command()
@click.argument("tasks", nargs=-1, metavar="TASK [TASK ...]")
@config_options
@grid_options(
    "a run option and its values; give one or two (the diagram's x and y axes)",
    "seeds per cell",
    "phase folder: runs/, sweep.json, phase.json, phase.png",
)
@click.option(
    "--grok-ratio",
    type=float,
    default=1.0,
    show_default=True,
    help="grokking: generalized_step - memorized_step >= this times memorized_step",
)
@click.option("--quiet", "-q", is_flag=True, help="no status line")
def phase(tasks, grid, seeds, out, extend, workers, grok_ratio, quiet, **options) -> None:
    """Train a grid of one or two run options and draw its phase diagram.

    Each cell is classified as comprehension, grokking, memorization or confusion (the rules are
    in tinygrok/lab/phase.py and docs/ANALYSIS.md). The grid is a sweep: runs go to OUT/runs/, and
    running the same command again skips finished runs and redraws OUT/phase.png.

    \b
    Example:
      tinygrok phase --preset tiny --grid weight_decay=0,0.3,1,3 \\
          --grid train_frac=0.3,0.45,0.6,0.75,0.9 --out runs/phase-tiny
    """
    if not 1 <= len(grid) <= 2:
        raise ConfigError(f"--grid: give one or two keys, the diagram's axes (got {len(grid)})")
    if not grok_ratio >= 0:
        raise ConfigError(f"--grok-ratio: must be a number >= 0 (got {grok_ratio})")
    from tinygrok.lab.phase import format_table, write_phase

    def finish(swept, out: Path) -> str:
        title = (
            f"{describe_tasks(swept.base.tasks, swept.base.p)}: regimes within "
            f"{swept.base.step_budget:,} steps"
        )
        rows, png = write_phase(swept, out, title, grok_ratio)
        return f"{format_table(rows)}\nphase folder: {out} ({png.name}, phase.json, runs/)"

    run_grid(tasks, options, grid, seeds, out, finish, extend=extend, workers=workers, quiet=quiet)
