"""The command line: `tinygrok run TASK [TASK ...] [options]` and friends.

The CLI only maps options onto `Config` fields (one option per field, `--weight-decay` is
`weight_decay`) and prints; everything else lives in the engine. Bad input is one line on stderr
naming the option and what it allows, with exit code 2. Heavy modules are imported inside the
commands, so `tinygrok --help` and option errors stay fast.
"""

from __future__ import annotations

import math
import os
import shlex
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import click

from tinygrok import __version__
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
from tinygrok.tasks import describe_tasks, did_you_mean

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
    "engine": "compute path",
}
CHOICES = {
    "activation": ACTIVATIONS,
    "norm": NORMS,
    "head": HEADS,
    "init": INITS,
    "optimizer": OPTIMIZERS,
    "dtype": DTYPES,
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
@click.argument("tasks", nargs=-1, metavar="TASK [TASK ...]")
@config_options
@click.option(
    "--out", type=FolderPath(path_type=Path), help="run folder  [default: runs/<time>-...]"
)
@click.option("--force", is_flag=True, help="overwrite the run already in --out")
@click.option(
    "--threads",
    type=int,
    default=1,
    show_default=True,
    help="BLAS and numba threads (2 is faster on an idle machine only: docs/PERFORMANCE.md)",
)
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
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads: must be an integer >= 1 (got {threads})")
    out = out or default_out(cfg)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out: cannot make the folder {out} ({e.strerror})") from None
    from tinygrok.model import n_params
    from tinygrok.runlock import RunLock
    from tinygrok.train import set_threads, train

    with RunLock(out):  # checked under the lock: no other process can start a run here meanwhile
        if (out / "config.json").exists() and not force:
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
        summary = with_stop_flag(lambda stop: train(cfg, out, progress=not quiet, stop=stop))
    report(summary, out, cfg)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path), metavar="RUN_DIR")
@click.option(
    "--steps", type=int, help="step budget per task; raise it to train a finished run longer"
)
@click.option("--threads", type=int, help="BLAS and numba threads  [default: all cores]")
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
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads: must be an integer >= 1 (got {threads})")
    if not (run_dir / "config.json").is_file():  # checked first: no .lock in a folder of no run
        raise ConfigError(
            f"RUN_DIR: {run_dir} holds no run (no config.json); start one with "
            f"`tinygrok run TASK --out {shlex.quote(str(run_dir))}`"
        )
    from tinygrok.checkpoint import read_run
    from tinygrok.runlock import RunLock
    from tinygrok.train import complete_run, set_threads
    from tinygrok.train import resume as resume_run

    with RunLock(run_dir):
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
        set_threads(threads or saved.config_doc.get("threads", {}).get("blas"))
        click.echo(
            f"tinygrok: resuming {run_dir} at step {saved.checkpoint.step:,} of "
            f"{saved.cfg.step_budget:,}",
            err=True,
        )
        summary = with_stop_flag(lambda stop: resume_run(saved, progress=not quiet, stop=stop))
    report(summary, run_dir, saved.cfg)


def workers_option(f):
    """--workers, the one name for runs at a time in sweep, phase and experiment."""
    return click.option(
        "--workers", type=int, help="runs at a time, one thread each  [default: one per core]"
    )(f)


def worker_count(workers: int | None) -> int:
    """The --workers value, checked; None means one per core."""
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers: must be an integer >= 1 (got {workers})")
    return workers or os.cpu_count() or 1


def with_stop_flag(start: Callable):
    """Call `start(stop)` with SIGINT and SIGTERM routed to a StopFlag: a run finishes its step,
    saves, and returns with status "interrupted"; a sweep lets its runs do the same."""
    from tinygrok.train import StopFlag

    stop = StopFlag()
    stop.install()
    try:
        return start(stop)
    finally:
        stop.uninstall()


def run_grid(
    tasks: tuple[str, ...],
    options: dict,
    grid: tuple[str, ...],
    seeds: str | None,
    out: Path,
    finish: Callable,
    *,
    executor: str = "local",
    workers: int = 1,
    retries: int = 2,
    scheduler: str | None = None,
    quiet: bool = False,
) -> None:
    """Run the sweep of --grid and --seeds into `out` (locked, Ctrl-C stops it cleanly), then print
    `finish(plan, out)`, which writes the sweep's own report. Failed runs are listed; exit 130 if
    interrupted, 1 if any run failed."""
    from tinygrok.runlock import RunLock
    from tinygrok.sweep import make_sweep, run_sweep

    given = set(given_options(options))
    plan = make_sweep(lambda values: build_config(tasks, options | values), grid, seeds, given)
    refuse_unused(given, [job.cfg for job in plan.jobs(out)])
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out: cannot make the folder {out} ({e.strerror})") from None
    with RunLock(out):
        outcome = with_stop_flag(
            lambda stop: run_sweep(
                plan, out.resolve(), executor, workers, retries, scheduler, not quiet, stop
            )
        )
        click.echo(finish(plan, out))
    for name, error in outcome.failures.items():
        click.echo(f"tinygrok: run {name} failed: {error}", err=True)
    if outcome.interrupted:
        click.echo("tinygrok: interrupted; run the same command again to continue", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if outcome.failures:
        sys.exit(1)


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
        click.echo(
            f"tinygrok: diverged at step {summary['diverged_step']:,}: the loss or the parameters "
            "became NaN or infinite; the last good checkpoint is kept; try a smaller --lr",
            err=True,
        )
        sys.exit(EXIT_DIVERGED)


@cli.command()
@click.argument("tasks", nargs=-1, metavar="[TASK ...]")
@click.option("--p", type=int, default=11, show_default=True, help="modulus")
@click.option("--layers", type=int, default=2, show_default=True, help="transformer blocks")
@click.option("--d-model", type=int, default=8, show_default=True, help="residual stream width")
@click.option("--heads", type=int, default=2, show_default=True, help="attention heads")
@click.option("--d-mlp", type=int, help="MLP hidden width  [default: 4 * d-model]")
@click.option("--layer-norm/--no-layer-norm", default=True, show_default=True, help="LayerNorms")
@click.option(
    "--norm", type=click.Choice(NORMS), default="pre", show_default=True, help="placement"
)
@click.option(
    "--final-norm/--no-final-norm", default=True, show_default=True, help="before the head"
)
@click.option("--activation", type=click.Choice(ACTIVATIONS), default="gelu", show_default=True)
@click.option("--head", type=click.Choice(HEADS), default="answers", show_default=True)
@click.option("--engine", type=click.Choice(ENGINES), default=Config.engine, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="parameters, batch, sample")
@click.option("--batch-size", type=int, default=8, show_default=True, help="examples in the loss")
@click.option("--coords", type=int, default=32, show_default=True, help="coordinates per tensor")
@click.option("--tol", type=float, default=1e-5, show_default=True, help="max relative error")
def gradcheck(tasks, coords, tol, **options) -> None:
    """Check every parameter's hand-written gradient against finite differences.

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

    cfg = small_config(tasks=tuple(tasks) or ("addition",), **options)
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
            words += [flag, str(v)]
    return shlex.join(words + ["--out", str(out)])


@cli.command()
@click.argument("name", metavar="EXPERIMENT")
@config_options
@click.option(
    "--seeds", help="seeds of every arm: 0-2, 42,0,1 or 0-4,10  [default: --seed and the next two]"
)
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
@click.option("--report-only", is_flag=True, help="write the table and figure, run nothing")
@click.option("--quiet", "-q", is_flag=True, help="no progress line")
def experiment(
    name, seeds, out, workers, sgd_levels, tiny_scale, arms, report_only, quiet, **options
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
      tinygrok experiment report --preset report --seeds 42,0,1 --workers 2
      tinygrok experiment grokfast --weight-decay 0.1 --out runs/grokfast-wd0.1
      tinygrok experiment noise --sgd 0.3:128 --sgd 1:64
    """
    from tinygrok.experiments import EXPERIMENTS, plan, run_all, states, write_plan, write_report

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
    workers = worker_count(workers)
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
    from tinygrok.sweep import parse_seeds

    seeds = seeds or f"{base.seed}-{base.seed + 2}"
    specs = plan(name, base, parse_seeds(seeds), out, only, **arm_options)
    refuse_unused(set(given_options(options)), [s.cfg for s in specs])
    command = experiment_command(name, seeds, out, extras, options)
    from tinygrok.runlock import RunLock

    failures, interrupted = {}, False
    if report_only:  # reads the runs, even while the experiment runs
        if not any((s.dir / "config.json").is_file() for s in specs):
            raise ConfigError(f"--out: {out} holds no run of this experiment yet; run it first")
        states(specs)  # a folder of another experiment is an error
    else:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--out: cannot make the folder {out} ({e.strerror})") from None
        with RunLock(out):
            done = states(specs).count("done")  # first: a folder of another experiment is an error
            write_plan(name, specs, base, out, command)
            click.echo(
                f"tinygrok: experiment {name}, {len(specs)} runs ({done} already done) -> {out}",
                err=True,
            )
            failures, interrupted = run_all(specs, workers, progress=not quiet)
    click.echo(write_report(name, specs, base, out, command))
    click.echo(f"experiment folder: {out} (table.md, comparison.png)")
    for run_name, error in failures.items():
        click.echo(f"tinygrok: run {run_name} failed: {error}", err=True)
    if interrupted:
        click.echo("tinygrok: interrupted; run the same command again to continue", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if failures:
        sys.exit(1)


@cli.command()
@click.argument("tasks", nargs=-1, metavar="TASK [TASK ...]")
@config_options
@click.option("--seeds", help="seeds to run: 0-9, 0,3,7 or 0-4,10  [default: --seed]")
@click.option(
    "--grid",
    multiple=True,
    metavar="KEY=V1,V2,...",
    help="a run option and its values (weight_decay=0.1,1); repeat it for the product of grids",
)
@click.option(
    "--out",
    type=FolderPath(path_type=Path, file_okay=False),
    required=True,
    help="sweep folder: runs/, sweep.json, runs.csv, summary.md, sweep.png",
)
@workers_option
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
def sweep(tasks, seeds, grid, out, workers, executor, scheduler, retries, quiet, **options) -> None:
    """Train every combination of --seeds and --grid values, each as a run folder in --out.

    Every run option sets all runs; each --grid KEY (a run option, as weight_decay or
    --weight-decay) takes every listed value, and the sweep runs the product of grids times the
    seeds, as OUT/runs/KEY=V,...,seed=S. Running the same command again skips finished runs and
    resumes interrupted ones. At the end it writes runs.csv, summary.md (printed) and sweep.png.

    \b
    Examples:
      tinygrok sweep division --seeds 0-9 --grid weight_decay=0.1,0.3,1 --out sweeps/wd
      tinygrok sweep division --seeds 0-4 --grid sparse=0,0.9 --steps 5000 --out sweeps/sparse
      tinygrok sweep division --seeds 0-99 --executor dask --scheduler tcp://head:8786 \\
          --out /shared/sweeps/big
    """
    from tinygrok.sweep import check_executor

    check_executor(executor)
    if scheduler is not None and executor != "dask":
        raise ConfigError("--scheduler: only with --executor dask")
    if scheduler is not None and workers is not None:
        raise ConfigError("--workers: with --scheduler, the cluster's own workers run the sweep")
    if retries < 0:
        raise ConfigError(f"--retries: must be an integer >= 0 (got {retries})")
    from tinygrok.aggregate import summarize as summarize_sweep

    def finish(plan, out: Path) -> str:
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
        workers=worker_count(workers),
        retries=retries,
        scheduler=scheduler,
        quiet=quiet,
    )


@cli.command()
@click.argument("sweep_dir", type=click.Path(path_type=Path, file_okay=False), metavar="DIR")
def summarize(sweep_dir) -> None:
    """Rebuild runs.csv, summary.md and sweep.png of the sweep in DIR, and print the table.

    Reads only DIR/sweep.json and each run's config.json and summary.json, so it also works on a
    sweep that is still running or was copied from a cluster.
    """
    from tinygrok.aggregate import summarize as summarize_sweep

    click.echo(summarize_sweep(sweep_dir))


@cli.command()
def tasks() -> None:
    """List every task a run can train, with its other names and what it computes."""
    from tinygrok.tasks import ALIASES, FIXED_ELEMENTS, OPERATIONS

    other = {name: [a for a, t in ALIASES.items() if t == name] for name in OPERATIONS}
    width = max(len(n) for n in OPERATIONS) + 2
    also = max(len(", ".join(a)) for a in other.values()) + 2
    click.echo(f"{'TASK':{width}}{'ALSO':{also}}ANSWER TO [a, op, b, =], WITH x = a, y = b")
    for name, (_, prime, _, description) in OPERATIONS.items():
        notes = ["p prime"] if prime else []
        if name in FIXED_ELEMENTS:
            notes.append(f"p = {FIXED_ELEMENTS[name]}")
        note = f"  ({'; '.join(notes)})" if notes else ""
        click.echo(f"{name:{width}}{', '.join(other[name]):{also}}{description}{note}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False), metavar="RUN_DIR")
@click.option(
    "--key-freqs",
    metavar="K1,K2,...",
    help="key frequencies to restrict to  [default: found in the last snapshot]",
)
@click.option("--threads", type=int, help="BLAS threads  [default: all cores]")
def analyze(run_dir, key_freqs, threads) -> None:
    """Progress measures of a run trained with --snapshot-every (Nanda et al. 2023).

    Over the snapshots in RUN_DIR/snapshots: the Fourier spectrum of the number embeddings and
    of the unembedding in the task's group (the numbers mod p for + and -, their discrete logs
    for * and /, beside the additive basis), the key frequencies, the Gini coefficient of the
    spectra, restricted and excluded loss (runs of one of those four tasks), and the weight norm
    of each layer. Writes
    RUN_DIR/analysis.json, analysis-spectrum.png, analysis-measures.png and
    analysis-weight-norm.png (loss against weight norm, Omnigrok's LU picture).

    \b
    Example:
      tinygrok run --preset tiny --snapshot-every 25 --out runs/tiny
      tinygrok analyze runs/tiny
    """
    freqs = None
    if key_freqs is not None:
        try:
            freqs = [int(k) for k in key_freqs.split(",")]
        except ValueError:
            raise ConfigError(
                f"--key-freqs: expected integers such as 14,35,41 (got {key_freqs!r})"
            ) from None
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads: must be an integer >= 1 (got {threads})")
    from tinygrok.analysis import analyze as analyze_run
    from tinygrok.train import set_threads

    set_threads(threads)
    a = analyze_run(run_dir, freqs)
    steps = a["steps"]
    click.echo(f"{len(steps)} snapshots, steps {steps[0]:,} to {steps[-1]:,}")
    for key, name in (("memorized_step", "memorized"), ("generalized_step", "generalized")):
        click.echo(f"{name:12s} {'step ' + format(a[key], ',') if a[key] is not None else 'never'}")
    if "key_frequencies" in a:
        click.echo(f"key frequencies: {', '.join(map(str, a['key_frequencies'])) or 'none'}")
        click.echo(
            f"Gini of the Fourier norms, start -> end: embedding {a['gini_embedding'][0]:.2f} "
            f"-> {a['gini_embedding'][-1]:.2f}, unembedding {a['gini_unembedding'][0]:.2f} -> "
            f"{a['gini_unembedding'][-1]:.2f}"
        )
    else:
        click.echo("no Fourier measures: S5 elements are permutations, not numbers mod p")
    if "restricted_loss" in a:
        click.echo(
            f"restricted loss start -> end: {a['restricted_loss'][0]:.3g} -> "
            f"{a['restricted_loss'][-1]:.3g}; excluded loss {a['excluded_loss'][0]:.3g} -> "
            f"{a['excluded_loss'][-1]:.3g}"
        )
    norms = a["weight_norms"]["total"]
    click.echo(f"total weight norm start -> end: {norms[0]:.1f} -> {norms[-1]:.1f}")
    click.echo(f"wrote {run_dir / 'analysis.json'} and {', '.join(a['figures'])}")


@cli.command()
@click.argument("tasks", nargs=-1, metavar="TASK [TASK ...]")
@config_options
@click.option(
    "--grid",
    multiple=True,
    required=True,
    metavar="KEY=V1,V2,...",
    help="a run option and its values; give one or two (the diagram's x and y axes)",
)
@click.option("--seeds", help="seeds per cell: 0-2, 0,3,7  [default: --seed]")
@click.option(
    "--out",
    type=FolderPath(path_type=Path, file_okay=False),
    required=True,
    help="phase folder: runs/, sweep.json, phase.json, phase.png",
)
@workers_option
@click.option(
    "--grok-ratio",
    type=float,
    default=1.0,
    show_default=True,
    help="grokking: generalized_step - memorized_step >= this times memorized_step",
)
@click.option("--quiet", "-q", is_flag=True, help="no status line")
def phase(tasks, grid, seeds, out, workers, grok_ratio, quiet, **options) -> None:
    """Train a grid of one or two run options and draw its phase diagram.

    Each cell is classified as comprehension, grokking, memorization or confusion (the rules are
    in tinygrok/phase.py and docs/ANALYSIS.md). The grid is a sweep: runs go to OUT/runs/, and
    running the same command again skips finished runs and redraws OUT/phase.png.

    \b
    Example:
      tinygrok phase --preset tiny --grid weight_decay=0,0.3,1,3 \\
          --grid train_frac=0.3,0.45,0.6,0.75,0.9 --out runs/phase-tiny
    """
    if not 1 <= len(grid) <= 2:
        raise ConfigError(f"--grid: give one or two keys, the diagram's axes (got {len(grid)})")
    workers = worker_count(workers)
    if not grok_ratio >= 0:
        raise ConfigError(f"--grok-ratio: must be a number >= 0 (got {grok_ratio})")
    from tinygrok.phase import format_table, write_phase

    def finish(plan, out: Path) -> str:
        title = (
            f"{describe_tasks(plan.base.tasks, plan.base.p)}: regimes within "
            f"{plan.base.step_budget:,} steps"
        )
        rows, png = write_phase(plan, out, title, grok_ratio)
        return f"{format_table(rows)}\nphase folder: {out} ({png.name}, phase.json, runs/)"

    run_grid(tasks, options, grid, seeds, out, finish, workers=workers, quiet=quiet)


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
    except click.exceptions.Abort:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code or 0)
