"""The command line: `tinygrok run TASK [TASK ...] [options]` and friends.

The CLI only maps options onto `Config` fields (one option per field, `--weight-decay` is
`weight_decay`) and prints; everything else lives in the engine. Bad input is one line on stderr
naming the option and what it allows, with exit code 2. Heavy modules are imported inside the
commands, so `tinygrok --help` and option errors stay fast.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click

from tinygrok import __version__
from tinygrok.config import ACTIVATIONS, DTYPES, ENGINES, OPTIMIZERS, Config, validate
from tinygrok.errors import ConfigError

EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130

# Config field -> help text, in the order `tinygrok run --help` lists them.
RUN_OPTIONS: dict[str, str] = {
    "p": "modulus; numbers are 0..p-1 (division needs a prime)",
    "train_frac": "fraction of all pairs used for training, in (0, 1)",
    "batch_size": "examples per step, shared equally between the tasks",
    "steps": "step budget per task (the run's budget is this times the number of tasks)",
    "patience": "stop once validation accuracy has stayed >= the threshold this many steps "
    "(0: always run the whole budget)",
    "eval_every": "evaluate on the full train and validation sets every N steps",
    "layers": "transformer blocks",
    "d_model": "residual stream width (divisible by --heads)",
    "heads": "attention heads",
    "d_mlp": "MLP hidden width",
    "layer_norm": "pre-LayerNorm in every block and before the unembedding",
    "activation": "MLP activation",
    "optimizer": "AdamW (decoupled weight decay) or SGD with momentum",
    "lr": "peak learning rate",
    "weight_decay": "weight decay on all parameters (decoupled for AdamW, L2 for SGD)",
    "beta1": "AdamW first-moment decay",
    "beta2": "AdamW second-moment decay",
    "eps": "AdamW epsilon",
    "momentum": "SGD momentum",
    "warmup_steps": "linear learning-rate warmup from 0",
    "sparse": "zero this random fraction of every weight matrix at initialization, in [0, 1)",
    "init_scale": "multiply every initial weight matrix by this factor (> 0)",
    "memorized_threshold": "training accuracy that counts as memorized",
    "generalized_threshold": "validation accuracy that counts as generalized",
    "seed": "seed of the split, the initialization and the batches",
    "dtype": "floating-point type of parameters and activations",
    "engine": "compute path",
}
CHOICES = {"activation": ACTIVATIONS, "optimizer": OPTIMIZERS, "dtype": DTYPES, "engine": ENGINES}


def config_options(f):
    """Add one click option per `RUN_OPTIONS` field, typed by the field's default."""
    defaults = Config()
    for name in reversed(RUN_OPTIONS):
        flag, default = "--" + name.replace("_", "-"), getattr(defaults, name)
        help_text = f"{RUN_OPTIONS[name]}  [default: {default}]"
        if isinstance(default, bool):
            decl = [f"{flag}/--no-{name.replace('_', '-')}", name]
            f = click.option(*decl, default=None, help=help_text)(f)
        elif name in CHOICES:
            f = click.option(flag, name, type=click.Choice(CHOICES[name]), help=help_text)(f)
        else:
            f = click.option(flag, name, type=type(default), help=help_text)(f)
    return f


def build_config(tasks: tuple[str, ...], options: dict) -> Config:
    """Config from the task arguments and the options the user gave (None = default)."""
    given = {k: v for k, v in options.items() if v is not None and k in RUN_OPTIONS}
    return validate(Config(tasks=tuple(tasks), **given))


def default_out(cfg: Config) -> Path:
    """runs/<date>-<time>-<tasks>-s<seed>, unique."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{stamp}-{'+'.join(cfg.tasks)}-s{cfg.seed}"
    out, i = base, 1
    while out.exists():
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out


def describe(summary: dict) -> str:
    """The closing lines of a run."""
    mem, gen = summary["memorized_step"], summary["generalized_step"]
    lines = [
        f"memorized (train >= 99%):     {'step ' + format(mem, ',') if mem else 'not reached'}",
        f"generalized (val >= 95%):     {'step ' + format(gen, ',') if gen else 'not reached'}",
    ]
    if summary["delay_steps"] is not None:
        lines.append(f"grokking delay:               {summary['delay_steps']:,} steps")
    lines.append(
        f"final accuracy:               train {100 * summary['final_train_acc']:.2f}%, "
        f"validation {100 * summary['final_val_acc']:.2f}%"
    )
    if len(summary["tasks"]) > 1:
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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tinygrok")
def cli() -> None:
    """tinygrok: watch a hand-written transformer memorize modular arithmetic, then grok it."""


@cli.command()
@click.argument("tasks", nargs=-1, required=True, metavar="TASK [TASK ...]")
@config_options
@click.option(
    "--out", type=click.Path(path_type=Path), help="run folder  [default: runs/<time>-...]"
)
@click.option("--force", is_flag=True, help="overwrite the run already in --out")
@click.option("--threads", type=int, help="BLAS threads  [default: all cores]")
@click.option("--quiet", "-q", is_flag=True, help="no progress line")
def run(tasks, out, force, threads, quiet, **options) -> None:
    """Train one model on one or more TASKs and write a run folder.

    TASK is addition, subtraction, multiplication or division (or add, sub, mul, div).
    Several tasks train one model on all of them, an equal share of each in every batch.

    \b
    Examples:
      tinygrok run division
      tinygrok run division --sparse 0.9
      tinygrok run division multiplication --seed 3 --out runs/divmul
    """
    cfg = build_config(tasks, options)
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads: must be an integer >= 1 (got {threads})")
    out = out or default_out(cfg)
    if (out / "config.json").exists() and not force:
        raise ConfigError(f"--out: {out} already holds a run; pass --force to overwrite it")
    from tinygrok.model import n_params
    from tinygrok.train import StopFlag, set_threads, train

    set_threads(threads)
    click.echo(
        f"tinygrok: training {' + '.join(cfg.tasks)} mod {cfg.p} "
        f"({n_params(cfg):,} parameters, {cfg.step_budget:,} step budget) -> {out}",
        err=True,
    )
    stop = StopFlag()
    stop.install()
    try:
        summary = train(cfg, out, progress=not quiet, stop=stop)
    finally:
        stop.uninstall()
    click.echo(describe(summary))
    click.echo(f"run folder: {out} (curves.png, metrics.jsonl, summary.json)")
    if summary["status"] == "interrupted":
        click.echo(
            f"tinygrok: interrupted at step {summary['steps_run']:,}; checkpoint saved.", err=True
        )
        sys.exit(EXIT_INTERRUPTED)
    if summary["status"] == "diverged":
        click.echo(
            f"tinygrok: diverged (NaN/inf loss) at step {summary['diverged_step']:,}; "
            "try a smaller --lr",
            err=True,
        )
        sys.exit(EXIT_DIVERGED)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: click's parsing, with every user error as one line and exit code 2."""
    try:
        code = cli.main(args=argv, prog_name="tinygrok", standalone_mode=False)
    except (click.UsageError, click.BadParameter) as e:
        click.echo(f"tinygrok: error: {e.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except ConfigError as e:
        click.echo(f"tinygrok: error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code or 0)
