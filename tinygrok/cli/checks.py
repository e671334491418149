"""`tinygrok tasks` and `tinygrok gradcheck`: the engine's task table, and its backward pass
checked against finite differences (tinygrok.gradcheck)."""

from __future__ import annotations

import sys

import click

from tinygrok.cli.options import CHOICES
from tinygrok.config import SMALL_MODEL, Config
from tinygrok.errors import ConfigError
from tinygrok.tasks import describe_tasks


@click.command()
def tasks() -> None:
    """List every task a run can train, with its other names and what it computes."""
    from tinygrok.tasks import ALIASES, FIXED_ELEMENTS, OPERATIONS

    other = {name: [a for a, t in ALIASES.items() if t == name] for name in OPERATIONS}
    width = max(len(n) for n in OPERATIONS) + 2
    also = max(len(", ".join(a)) for a in other.values()) + 2
    click.echo(f"{'TASK':{width}}{'ALSO':{also}}ANSWER TO [a, op, b, =], WITH x = a, y = b")
    for name, op in OPERATIONS.items():
        notes = ["p prime"] if op.needs_prime else []
        if name in FIXED_ELEMENTS:
            notes.append(f"p = {FIXED_ELEMENTS[name]}")
        note = f"  ({'; '.join(notes)})" if notes else ""
        click.echo(f"{name:{width}}{', '.join(other[name]):{also}}{op.description}{note}")


# The model options of `tinygrok gradcheck`, their defaults SMALL_MODEL's (then Config's).
GRADCHECK_OPTIONS = {
    "p": "modulus",
    "layers": "transformer blocks",
    "d_model": "residual stream width",
    "heads": "attention heads",
    "d_mlp": "MLP hidden width  [default: 4 * d-model]",
    "layer_norm": "LayerNorms",
    "norm": "placement",
    "final_norm": "before the head",
    "activation": "MLP activation",
    "head": "what the unembedding predicts",
    "engine": "compute path",
    "seed": "parameters, batch, sample",
    "batch_size": "examples in the loss",
}


def small_model_options(f):
    """One click option per GRADCHECK_OPTIONS field, with the small model's default shown."""
    for name in reversed(GRADCHECK_OPTIONS):
        flag = "--" + name.replace("_", "-")
        default = SMALL_MODEL.get(name, getattr(Config, name))
        shown = {"default": default, "show_default": default is not None}
        if isinstance(default, bool):
            f = click.option(
                f"{flag}/--no-{flag[2:]}", name, help=GRADCHECK_OPTIONS[name], **shown
            )(f)
        elif name in CHOICES:
            kind = click.Choice(CHOICES[name])
            f = click.option(flag, name, type=kind, help=GRADCHECK_OPTIONS[name], **shown)(f)
        else:
            f = click.option(flag, name, type=int, help=GRADCHECK_OPTIONS[name], **shown)(f)
    return f


@click.command()
@click.argument("tasks", nargs=-1, metavar="[TASK ...]")
@small_model_options
@click.option("--coords", type=int, default=32, show_default=True, help="coordinates per tensor")
@click.option("--tol", type=float, default=1e-5, show_default=True, help="max relative error")
def gradcheck(tasks, coords, tol, **options) -> None:
    """Check the fast model's hand-written gradients against finite differences.

    Builds a small float64 model (TASK defaults to addition) and prints, per parameter tensor, the
    largest relative error between the backward pass and centered finite differences; exit code 1
    if any tensor exceeds --tol. Tensors with more than --coords elements are sampled.

    \b
    Example, the report's block layout:
      tinygrok gradcheck div --norm post --no-final-norm --activation relu \\
        --head vocab
    """
    if coords < 1:
        raise ConfigError(f"--coords: must be an integer >= 1 (got {coords})")
    if not tol > 0:
        raise ConfigError(f"--tol: must be a positive number (got {tol})")
    from tinygrok.gradcheck import check_gradients, checked_setup, format_report, small_config

    cfg = small_config(**options, **({"tasks": tasks} if tasks else {}))
    params, tokens, targets = checked_setup(cfg)
    checks = check_gradients(cfg, params, tokens, targets, max_coords=coords, tol=tol)
    click.echo(
        f"gradcheck: {describe_tasks(cfg.tasks, cfg.p)}, {cfg.layers} layers, d_model "
        f"{cfg.d_model}, {cfg.heads} heads, d_mlp {cfg.d_mlp}, float64, {len(tokens)} examples"
    )
    click.echo(format_report(checks))
    failed = [c.name for c in checks if not c.ok]
    if failed:
        click.echo(f"gradcheck: FAIL in {len(failed)} tensor(s): {', '.join(failed)}", err=True)
        sys.exit(1)
    click.echo(f"gradcheck: all {len(checks)} tensors within tol {tol:g}")
