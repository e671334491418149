"""The command line: `tinygrok run TASK [TASK ...] [options]` and friends.

The CLI only maps options onto `Config` fields (one option per field, `--weight-decay` is
`weight_decay`) and onto the lab's and the engine's functions, and prints; the work lives below
it. Bad input is one line on stderr naming the option and what it allows, with exit code 2. Heavy
modules are imported inside the commands, so `tinygrok --help` and option errors stay fast.

    options.py      the run options and the vocabulary every command shares; exit codes
    runs.py         run, resume                   (the engine: train.py)
    sweeps.py       sweep, phase, summarize       (the lab: sweeps, phase diagrams, aggregates)
    experiment.py   experiment                    (the lab: experiments and their comparison)
    analyze.py      analyze                       (the lab: progress measures)
    checks.py       tasks, gradcheck              (the engine: task table, gradient check)
"""

from __future__ import annotations

import sys

import click

from tinygrok import __version__
from tinygrok.cli.analyze import analyze
from tinygrok.cli.checks import gradcheck, tasks
from tinygrok.cli.experiment import experiment
from tinygrok.cli.options import EXIT_INTERRUPTED, EXIT_USAGE
from tinygrok.cli.runs import resume, run
from tinygrok.cli.sweeps import phase, summarize, sweep
from tinygrok.errors import ConfigError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tinygrok")
def cli() -> None:
    """tinygrok: watch a hand-written transformer memorize modular arithmetic, then grok it."""


for command in (run, resume, sweep, summarize, phase, experiment, analyze, tasks, gradcheck):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: click's parsing, with every user error as one line and exit code 2."""
    from tinygrok.provenance import set_command

    set_command(["tinygrok", *(sys.argv[1:] if argv is None else argv)])
    try:
        code = cli.main(args=argv, prog_name="tinygrok", standalone_mode=False)
    except (click.UsageError, click.BadParameter) as e:
        click.echo(f"tinygrok: error: {e.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except ConfigError as e:
        click.echo(f"tinygrok: error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort as e:  # click's form of Ctrl-C (a second one: StopNow)
        click.echo(f"tinygrok: {str(e.__cause__ or '') or 'interrupted'}", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code or 0)
