"""`tinygrok analyze`: the progress measures of a run's snapshots (tinygrok.lab.analysis)."""

from __future__ import annotations

from pathlib import Path

import click

from tinygrok.cli.options import threads_option
from tinygrok.errors import ConfigError


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False), metavar="RUN_DIR")
@click.option(
    "--key-freqs",
    metavar="K1,K2,...",
    help="key frequencies to restrict to  [default: found in the last snapshot]",
)
@threads_option(default=1, shown="1")
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
    from tinygrok.lab.analysis import analyze as analyze_run
    from tinygrok.threads import set_threads

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
