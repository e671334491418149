"""`tinygrok run` and `tinygrok resume`: one run of the engine (train.py) into its run folder."""

from __future__ import annotations

import shlex
import sys
from datetime import datetime
from pathlib import Path

import click

from tinygrok.cli.options import (
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    FolderPath,
    build_config,
    config_options,
    given_options,
    refuse_unused,
    threads_option,
    with_stop_flag,
)
from tinygrok.config import Config
from tinygrok.errors import ConfigError
from tinygrok.folders import CONFIG, make_folder
from tinygrok.tasks import describe_tasks


def default_out(cfg: Config) -> Path:
    """runs/<date>-<time>-<tasks>-s<seed>, unique."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{stamp}-{'+'.join(cfg.tasks)}-s{cfg.seed}"
    out, i = base, 1
    while out.exists():
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out


def describe(summary: dict, cfg: Config) -> str:
    """The closing lines of a run, with the thresholds it was judged by."""
    mem, gen = summary["memorized_step"], summary["generalized_step"]
    lines = [
        f"{f'memorized (train >= {100 * cfg.memorized_threshold:g}%):':30s}"
        f"{'step ' + format(mem, ',') if mem else 'not reached'}",
        f"{f'generalized (val >= {100 * cfg.generalized_threshold:g}%):':30s}"
        f"{'step ' + format(gen, ',') if gen else 'not reached'}",
    ]
    if summary["delay_steps"] is not None:
        lines.append(f"grokking delay:               {summary['delay_steps']:,} steps")
    if summary["final_train_acc"] is not None:  # None: stopped before its first evaluation
        lines.append(
            f"final accuracy:               train {100 * summary['final_train_acc']:.2f}%, "
            f"validation {100 * summary['final_val_acc']:.2f}%"
        )
    if len(summary["tasks"]) > 1 and summary["final_train_acc"] is not None:
        for t, m in summary["per_task"].items():
            g = m["generalized_step"]
            lines.append(
                f"  {t:15s} generalized at {'step ' + format(g, ',') if g else 'never':12s}"
                f" final val {100 * m['final_val_acc']:.2f}%"
            )
    lines.append(
        f"{summary['steps_run']:,} steps in {summary['wall_s']:.1f} s "
        f"({summary['steps_per_s']:.1f} steps/s), status {summary['status']}"
    )
    return "\n".join(lines)


@click.command()
@click.argument("tasks", nargs=-1, metavar="TASK [TASK ...]")
@config_options
@click.option(
    "--out", type=FolderPath(path_type=Path), help="run folder  [default: runs/<time>-...]"
)
@click.option(
    "--force", is_flag=True, help="start over in --out: the run there and its analysis go"
)
@threads_option("BLAS threads (more help on an idle machine only)", default=1, shown="1")
@click.option("--quiet", "-q", is_flag=True, help="no progress line")
def run(tasks, out, force, threads, quiet, **options) -> None:
    """Train one model on one or more TASKs and write a run folder.

    TASK is addition, subtraction, multiplication or division (or add, sub, mul, div), or one
    of Power et al.'s other operations: `tinygrok tasks` lists them all. Several tasks train one
    model on all of them, an equal share of each in every batch. A --preset may supply the task.

    \b
    Examples:
      tinygrok run division
      tinygrok run division --sparse 0.9
      tinygrok run division multiplication --seed 3 --out runs/divmul
      tinygrok run --preset nanda --train-frac 0.5
    """
    cfg = build_config(tasks, options)
    refuse_unused(set(given_options(options)), [cfg])
    out = make_folder(out or default_out(cfg), "--out")
    from tinygrok.params import n_params
    from tinygrok.runlock import RunLock
    from tinygrok.threads import set_threads
    from tinygrok.train import train, writes_reported

    with RunLock(out):  # checked under the lock: no other process can start a run here meanwhile
        if (out / CONFIG).exists() and not force:
            raise ConfigError(
                f"--out: {out} already holds a run; continue it with `tinygrok resume "
                f"{shlex.quote(str(out))}`, or pass --force to start it over"
            )
        set_threads(threads)
        click.echo(
            f"tinygrok: training {describe_tasks(cfg.tasks, cfg.p)} "
            f"({n_params(cfg):,} parameters, {cfg.step_budget:,} step budget) -> {out}",
            err=True,
        )
        with writes_reported(out):
            summary = with_stop_flag(lambda stop: train(cfg, out, progress=not quiet, stop=stop))
    report(summary, out, cfg)


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path), metavar="RUN_DIR")
@click.option(
    "--steps", type=int, help="step budget per task; raise it to train a finished run longer"
)
@threads_option(shown="the run's own")
@click.option("--quiet", "-q", is_flag=True, help="no progress line")
def resume(run_dir, steps, threads, quiet) -> None:
    """Continue the run in RUN_DIR from its checkpoint to the end of its budget.

    The run ends with the same metrics.jsonl and summary.json as if it had never stopped (same
    engine and threads; wall-clock times aside).
    A run killed after its final checkpoint only gets its summary.json and curves.png written.

    \b
    Examples:
      tinygrok resume runs/divmul
      tinygrok resume runs/divmul --steps 50000
    """
    if not (run_dir / CONFIG).is_file():  # checked first: no .lock in a folder of no run
        raise ConfigError(
            f"RUN_DIR: {run_dir} holds no run (no config.json); start one with "
            f"`tinygrok run TASK --out {shlex.quote(str(run_dir))}`"
        )
    from tinygrok.checkpoint import read_run
    from tinygrok.runlock import RunLock
    from tinygrok.summary import complete_run
    from tinygrok.threads import set_threads
    from tinygrok.train import resume as resume_run
    from tinygrok.train import writes_reported

    with RunLock(run_dir), writes_reported(run_dir):
        saved = read_run(run_dir, steps)
        if saved.complete_only:  # killed after its final checkpoint: only its last files are due
            summary = complete_run(saved)
            click.echo(
                f"tinygrok: resume: {run_dir} had finished at step {saved.checkpoint.step:,}; "
                "wrote its summary.json and curves.png from the checkpoint and metrics.jsonl, "
                "trained nothing",
                err=True,
            )
            return
        # the threads the run started with, so that its numbers continue bit for bit
        set_threads(threads or saved.threads)
        click.echo(
            f"tinygrok: resuming {run_dir} at step {saved.checkpoint.step:,} of "
            f"{saved.cfg.step_budget:,}",
            err=True,
        )
        summary = with_stop_flag(lambda stop: resume_run(saved, progress=not quiet, stop=stop))
    report(summary, run_dir, saved.cfg)


def report(summary: dict, out: Path, cfg: Config) -> None:
    """Print the end of a run; exit 130 if it was interrupted, 3 if it diverged."""
    click.echo(describe(summary, cfg))
    click.echo(f"run folder: {out} (curves.png, metrics.jsonl, summary.json)")
    if summary["status"] == "interrupted":
        click.echo(
            f"tinygrok: interrupted at step {summary['steps_run']:,}; checkpoint saved. "
            f"Resume with: tinygrok resume {shlex.quote(str(out))}",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    if summary["status"] == "diverged":
        why = (
            f"the initial parameters overflow {cfg.dtype}; try a smaller --init-scale"
            if summary["diverged_step"] == 0
            else "the loss or the parameters became NaN or infinite; the last good checkpoint is "
            "kept; try a smaller --lr"
        )
        click.echo(f"tinygrok: diverged at step {summary['diverged_step']:,}: {why}", err=True)
        sys.exit(EXIT_DIVERGED)
