"""What the commands share: the run options (one click option per Config field), the option
vocabulary of every command (--seeds, --workers, --threads, --out), and the way a command ends
(its exit code, the Ctrl-C handling).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import click

from tinygrok.config import (
    ACTIVATIONS,
    DTYPES,
    ENGINES,
    GROKFAST_FILTERS,
    HEADS,
    INITS,
    NORMS,
    OPTIMIZERS,
    PRESETS,
    Config,
    from_preset,
)
from tinygrok.errors import ConfigError

EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130

# Config field -> help text, in the order `tinygrok run --help` lists them.
RUN_OPTIONS: dict[str, str] = {
    "p": "modulus; numbers are 0..p-1 (division needs a prime; S5 tasks fix it at 120)",
    "train_frac": "fraction of all pairs used for training, in (0, 1)",
    "batch_size": "examples per step, shared equally between the tasks",
    "epoch_batches": "deal each epoch in batches, its last batch the remainder (PyTorch's "
    "DataLoader); default: an endless stream of full batches",
    "steps": "step budget per task (the run's budget is this times the number of tasks)",
    "patience": "stop once validation accuracy has stayed >= the threshold this many steps "
    "(0: always run the whole budget)",
    "eval_every": "evaluate on the full train and validation sets every N steps",
    "checkpoint_every": "save checkpoint.npz every N steps (and at the end), for `tinygrok resume`",
    "snapshot_every": "save the parameters every N steps to snapshots/, for `tinygrok analyze` "
    "(0: never)",
    "measures_every": "log the progress measures (Gini of the Fourier spectra; for one task of "
    "+, -, *, /: key frequencies, restricted and excluded loss) into metrics.jsonl every N steps "
    "(0: never)",
    "layers": "transformer blocks",
    "d_model": "residual stream width (divisible by --heads)",
    "heads": "attention heads",
    "d_mlp": "MLP hidden width",
    "layer_norm": "LayerNorm in every block and before the unembedding (--no-layer-norm: none)",
    "norm": "where a block's LayerNorms sit: pre, x + f(ln(x)) (GPT-2), or post, ln(x + f(x)) "
    "(PyTorch's nn.TransformerEncoderLayer)",
    "final_norm": "a LayerNorm before the unembedding",
    "activation": "MLP activation",
    "head": "what the unembedding predicts: answers (the p numbers) or vocab (every token)",
    "optimizer": "AdamW (decoupled weight decay) or SGD with momentum",
    "lr": "peak learning rate",
    "weight_decay": "weight decay on all parameters (decoupled for AdamW, L2 for SGD)",
    "beta1": "AdamW first-moment decay",
    "beta2": "AdamW second-moment decay",
    "eps": "AdamW epsilon",
    "momentum": "SGD momentum",
    "warmup_steps": "linear learning-rate warmup from 0",
    "grokfast": "gradient filter before the optimizer (Lee et al. 2024): ema (Grokfast) or ma "
    "(Grokfast-MA)",
    "grokfast_alpha": "Grokfast EMA decay",
    "grokfast_lamb": "Grokfast amplification of the slow gradient  [default: 2.0 for ema, 5.0 "
    "for ma]",
    "grokfast_window": "Grokfast-MA window in steps (keeps this many gradients in memory)",
    "init": "initial weights: pytorch (PyTorch's layer defaults: embeddings N(0, 1), linear "
    "layers U(+-1/sqrt(fan_in))); nanda (Nanda et al.: every matrix N(0, 1/d_model), the "
    "unembedding N(0, 1/p), biases 0); report (pytorch, every block a copy of the first, as "
    "nn.TransformerEncoder starts); report-xavier (the report's sparse and small starts: report, "
    "then the attention output, MLP and head weights Xavier-normal with zero biases); "
    "report-norm (report, those weights rescaled to Xavier-normal's norm)",
    "sparse": "zero this random fraction of every weight matrix at initialization, in [0, 1) "
    "(with --init report-xavier, the report's way: each of its weights dropped with this "
    "probability, the survivors scaled by 1/sqrt(1 - s))",
    "init_scale": "multiply every initial weight matrix by this factor (> 0; with --init "
    "report-xavier, its weights only)",
    "keep_mask": "keep the entries --sparse zeroed at exactly zero for the whole run (their "
    "gradients are masked: a fixed sparse network)",
    "memorized_threshold": "training accuracy that counts as memorized",
    "generalized_threshold": "validation accuracy that counts as generalized",
    "seed": "seed of the split, the initialization and the batches",
    "dtype": "floating-point type of parameters and activations",
    "loss_dtype": "floating-point type the softmax cross-entropy is computed in: float64 (exact "
    "whatever --dtype) or float32 (as PyTorch computes a float32 model's loss: once the training "
    "set is fit beyond float32's resolution, the targets' gradients round to zero)",
    "engine": "compute path",
}
CHOICES = {
    "activation": ACTIVATIONS,
    "norm": NORMS,
    "head": HEADS,
    "init": INITS,
    "optimizer": OPTIMIZERS,
    "dtype": DTYPES,
    "loss_dtype": DTYPES,
    "engine": ENGINES,
    "grokfast": tuple(GROKFAST_FILTERS),
}
# Fields whose default (None) does not give the option's type
OPTION_TYPES = {"grokfast_lamb": float}


class FolderPath(click.Path):
    """A folder option as a pathlib.Path; an empty name is refused (it would be the current
    folder, which `.` says on purpose)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            flag = param.opts[0] if param is not None else "PATH"
            raise ConfigError(f"{flag}: the folder name is empty (give . for the current folder)")
        return super().convert(value, param, ctx)


# Options that do something only with another setting: field -> (it has an effect, the rule).
NEEDS: dict[str, tuple[Callable[[Config], bool], str]] = {
    "grokfast_lamb": (lambda c: c.grokfast != "none", "--grokfast ema or ma"),
    "grokfast_alpha": (lambda c: c.grokfast == "ema", "--grokfast ema (the EMA's decay)"),
    "grokfast_window": (
        lambda c: c.grokfast == "ma",
        "--grokfast ma (the moving average's window)",
    ),
    "momentum": (lambda c: c.optimizer == "sgd", "--optimizer sgd"),
    "keep_mask": (
        lambda c: not c.keep_mask or c.sparse > 0,
        "--sparse above 0 (the mask it zeros)",
    ),
}


def refuse_unused(given: set[str], configs: list[Config]) -> None:
    """ConfigError naming the first option the user gave that does nothing in every one of
    `configs` (the run, or every run of a sweep or experiment): --momentum with AdamW, ..."""
    for name, (has_effect, rule) in NEEDS.items():
        if name in given and configs and not any(has_effect(c) for c in configs):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag}: does nothing here; it works only with {rule}")


def config_options(f):
    """Add one click option per `RUN_OPTIONS` field, typed by the field's default."""
    defaults = Config()
    for name in reversed(RUN_OPTIONS):
        flag, default = "--" + name.replace("_", "-"), getattr(defaults, name)
        help_text = RUN_OPTIONS[name]
        if default is not None:
            help_text += f"  [default: {default}]"
        if isinstance(default, bool):
            decl = [f"{flag}/--no-{name.replace('_', '-')}", name]
            f = click.option(*decl, default=None, help=help_text)(f)
        elif name in CHOICES:
            f = click.option(flag, name, type=click.Choice(CHOICES[name]), help=help_text)(f)
        else:
            kind = OPTION_TYPES.get(name, type(default))
            f = click.option(flag, name, type=kind, help=help_text)(f)
    preset_help = (
        "start from a named setup; options you give override it: power (the defaults), nanda "
        "(Nanda et al.: 1 layer, addition mod 113), report (the report 'Grokking: Shortening the "
        "Delay': post-norm nn.TransformerEncoder, weight decay 1e-3, 400,000 steps), tiny (groks "
        "in seconds)  [default: power]"
    )
    return click.option("--preset", type=click.Choice(list(PRESETS)), help=preset_help)(f)


def build_config(tasks: tuple[str, ...], options: dict) -> Config:
    """Config from the task arguments, the preset and the options the user gave (None = default)."""
    given = given_options(options)
    preset = options.get("preset") or "power"
    if not tasks and "tasks" not in PRESETS[preset]:
        raise ConfigError("TASK: give at least one task (see `tinygrok tasks`)")
    return from_preset(preset, tuple(tasks), **given)


def given_options(options: dict) -> dict:
    """The run options the user gave on the command line (click leaves the others None)."""
    return {k: v for k, v in options.items() if v is not None and k in RUN_OPTIONS}


def workers_option(f):
    """--workers, the one name for runs at a time in sweep, phase and experiment; the command
    gets the count, checked (None: one per core)."""

    def count(ctx, param, workers: int | None) -> int:
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers: must be an integer >= 1 (got {workers})")
        return workers or os.cpu_count() or 1

    return click.option(
        "--workers",
        type=int,
        callback=count,
        help="runs at a time, one thread each  [default: one per core]",
    )(f)


def threads_option(
    what: str = "BLAS threads", default: int | None = None, shown: str = "all cores"
):
    """--threads, the threads of this process (`what` they are), checked; `default` (None: all
    cores) is `shown` in the help."""

    def check(ctx, param, threads: int | None) -> int | None:
        if threads is not None and threads < 1:
            raise ConfigError(f"--threads: must be an integer >= 1 (got {threads})")
        return threads

    return click.option(
        "--threads", type=int, default=default, callback=check, help=f"{what}  [default: {shown}]"
    )


def seeds_option(what: str, default: str):
    """--seeds, a list or range of seeds in every command that trains several: `what` they seed,
    and `default`, what no --seeds means there."""
    return click.option(
        "--seeds",
        metavar="SEEDS",
        help=f"{what}: a list or range, 0-9, 0,3,7 or 0-4,10  [default: {default}]",
    )


def with_stop_flag(start: Callable):
    """Call `start(stop)` with SIGINT and SIGTERM routed to a StopFlag: a run finishes its step,
    saves, and returns with status "interrupted"; a sweep lets its runs do the same."""
    from tinygrok.interrupt import StopFlag

    with StopFlag() as stop:
        return start(stop)


def end_of_runs(failures: dict[str, str], interrupted: bool) -> None:
    """How a sweep, a phase diagram or an experiment ends: exit 130 if it was interrupted, 1 if
    runs failed (each was reported once, as it failed), else 0."""
    if failures:
        n = len(failures)
        click.echo(
            f"tinygrok: {n} {'run' if n == 1 else 'runs'} failed (reported above); the same "
            "command tries again",
            err=True,
        )
    if interrupted:
        click.echo("tinygrok: interrupted; run the same command again to continue", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if failures:
        sys.exit(1)
