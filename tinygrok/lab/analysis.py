"""`tinygrok analyze`: the progress measures of measures.py over a run's parameter snapshots, in
analysis.json and three figures (the spectra at the start, at memorization and at the end; the
measures against the step; loss against weight norm).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinygrok.errors import ConfigError
from tinygrok.folders import (
    ANALYSIS,
    ANALYSIS_FIGURES,
    CONFIG,
    read_config,
    read_metrics,
    write_json,
)
from tinygrok.measures import (
    key_frequencies,
    layer_norms,
    logit_measures,
    pair_grid,
    run_basis,
    spectra,
    spectrum_measures,
)
from tinygrok.metrics import grokking_metrics
from tinygrok.params import Params, n_params, param_shapes
from tinygrok.snapshots import list_snapshots, load_snapshot
from tinygrok.tasks import describe_tasks


def analyze(run_dir: Path, key_freqs: list[int] | None = None, figures: bool = True) -> dict:
    """Compute every measure over a run's snapshots; write RUN_DIR/analysis.json and figures.

    key_freqs: the key frequencies to use (default: found in the last snapshot, see above).
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise ConfigError(f"RUN_DIR: {run_dir} holds no run (no {CONFIG})")
    cfg, _ = read_config(run_dir)
    records = read_metrics(run_dir)
    snaps = list_snapshots(run_dir)
    if not snaps:
        raise ConfigError(
            f"RUN_DIR: {run_dir} has no parameter snapshots; train it with --snapshot-every N"
        )
    if not records:
        raise ConfigError(f"RUN_DIR: {run_dir} has no evaluations in its metrics.jsonl")
    p, shapes = cfg.p, param_shapes(cfg)
    size = n_params(cfg)
    steps = [r["step"] for r in records]
    marks = grokking_metrics(
        steps,
        [r["train_acc"] for r in records],
        [r["val_acc"] for r in records],
        cfg.step_budget,
        cfg.memorized_threshold,
        cfg.generalized_threshold,
    )
    grid = pair_grid(cfg)
    basis = run_basis(cfg, grid)
    out: dict = {
        "run_dir": str(run_dir),
        "tasks": list(cfg.tasks),
        "p": p,
        "memorized_step": marks["memorized_step"],
        "generalized_step": marks["generalized_step"],
        "steps": [s for s, _ in snaps],
        "weight_norms": {},
    }
    last = Params(shapes, load_snapshot(snaps[-1][1], size)[1])
    if key_freqs is not None and basis is None:
        raise ConfigError("--key-freqs: S5 runs have no Fourier measures")
    if basis is not None:
        out["basis"] = basis.describe()
        if grid is not None:
            out["key_frequencies_from"] = "logits"
            found = logit_measures(last, cfg, grid, [])["key_frequencies"]
        else:
            out["key_frequencies_from"] = "embedding"
            found = key_frequencies(spectra(last, basis)[0])
        if key_freqs is not None:
            bad = [k for k in key_freqs if not 1 <= k <= basis.n // 2]
            if bad:
                raise ConfigError(
                    f"--key-freqs: frequencies must be in 1..{basis.n // 2} (got {bad})"
                )
        out["key_frequencies"] = sorted(set(key_freqs)) if key_freqs is not None else found
        out["key_frequencies_found"] = found
    for _, path in snaps:
        params = Params(shapes, load_snapshot(path, size)[1])
        for group, norm in layer_norms(params).items():
            out["weight_norms"].setdefault(group, []).append(norm)
        per_snapshot = {}
        if basis is not None:
            per_snapshot |= spectrum_measures(params, basis)
        if grid is not None:
            m = logit_measures(params, cfg, grid, out["key_frequencies"])
            per_snapshot |= {k: v for k, v in m.items() if k != "key_frequencies"}
        for key, value in per_snapshot.items():
            out.setdefault(key, []).append(value)
    if figures:
        out["figures"] = [str(f.name) for f in plot_analysis(run_dir, out, records)]
    write_json(run_dir / ANALYSIS, out)
    return out


def nearest(steps: list[int], step: int | None) -> int:
    """Index of the snapshot step nearest `step` (the last one if step is None)."""
    if step is None:
        return len(steps) - 1
    return int(np.argmin([abs(s - step) for s in steps]))


def plot_analysis(run_dir: Path, a: dict, records: list[dict]) -> list[Path]:
    """The analysis figures of a run (see folders.ANALYSIS_FIGURES); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    title = describe_tasks(a["tasks"], a["p"])
    paths = []
    steps, mem, gen = a["steps"], a["memorized_step"], a["generalized_step"]

    def mark(ax) -> None:
        for step, name, color in ((mem, "memorized", "0.45"), (gen, "generalized", "k")):
            if step is not None:
                ax.axvline(step, color=color, ls=":", lw=1, label=f"{name} ({step:,})")

    if "embedding_spectrum" in a:
        chosen = {"start": 0, "memorization": nearest(steps, mem), "end": len(steps) - 1}
        keys = ["embedding_spectrum", "unembedding_spectrum"]
        if "embedding_spectrum_additive" in a:  # the additive basis beside the task's own
            keys += ["embedding_spectrum_additive", "unembedding_spectrum_additive"]
        fig, axes = plt.subplots(len(keys), 3, figsize=(12, 2.75 * len(keys)), squeeze=False)
        for col, (label, i) in enumerate(chosen.items()):
            for row, key in enumerate(keys):
                ax = axes[row, col]
                norms = np.array(a[key][i])
                own = not key.endswith("_additive")
                key_freqs = a["key_frequencies"] if own else []
                colors = ["C3" if k in key_freqs else "C0" for k in range(len(norms))]
                ax.bar(np.arange(len(norms)), norms, color=colors, width=0.8)
                basis = "additive" if not own else a["basis"].split(" (")[0]
                layer = key.split("_")[0]
                ax.set_title(f"{layer}, {basis}: {label} (step {steps[i]:,})", fontsize=8)
                if col == 0:
                    ax.set_ylabel("norm per frequency", fontsize=8)
                if row == len(keys) - 1:
                    ax.set_xlabel("frequency k")
        keys_text = ", ".join(map(str, a["key_frequencies"])) or "none"
        fig.suptitle(
            f"{title}: Fourier spectrum, {a['basis']} (key frequencies in red: {keys_text})",
            fontsize=10,
        )
        fig.tight_layout()
        paths.append(run_dir / ANALYSIS_FIGURES[0])
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)

    panels = ["loss"] if "restricted_loss" in a else []
    panels += ["Gini of Fourier norms"] if "gini_embedding" in a else []
    panels += ["weight norm"]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.8 * len(panels)), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, panels, strict=True):
        if name == "loss":
            for key, style in (
                ("train_loss", "C0--"),
                ("val_loss", "C0-"),
                ("restricted_loss", "C3-"),
                ("excluded_loss", "C2-"),
            ):
                ax.plot(steps, a[key], style, label=key.replace("_", " "))
            ax.set_yscale("log")
        elif name.startswith("Gini"):
            ax.plot(steps, a["gini_embedding"], "C0-", label="embedding")
            ax.plot(steps, a["gini_unembedding"], "C1-", label="unembedding")
            if "gini_embedding_additive" in a:
                ax.plot(steps, a["gini_embedding_additive"], "C0:", label="embedding, additive")
                ax.plot(steps, a["gini_unembedding_additive"], "C1:", label="unembedding, additive")
            ax.set_ylim(0, 1)
        else:
            for i, (group, norms) in enumerate(a["weight_norms"].items()):
                ax.plot(steps, norms, "k-" if group == "total" else f"C{i}-", label=group)
        mark(ax)
        ax.set_ylabel(name)
        ax.grid(alpha=0.25)
        ax.legend(fontsize=7, loc="best")
    axes[-1].set_xlabel("step")
    axes[0].set_title(f"{title}: progress measures over {len(steps)} snapshots")
    fig.tight_layout()
    paths.append(run_dir / ANALYSIS_FIGURES[1])
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    paths.append(plot_weight_norm(run_dir, records, title))
    return paths


def plot_weight_norm(run_dir: Path, records: list[dict], title: str) -> Path:
    """Omnigrok's LU picture: train and validation loss against total weight norm along the run,
    one point per evaluation, coloured by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norm = [r["weight_norm"] for r in records]
    step = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, marker, label in (("train_loss", "o", "train"), ("val_loss", "s", "validation")):
        ax.plot(norm, [r[key] for r in records], "-", color="0.8", lw=0.8, zorder=1)
        sc = ax.scatter(norm, [r[key] for r in records], c=step, s=12, marker=marker, label=label)
    ax.annotate("start", (norm[0], records[0]["val_loss"]), fontsize=8)
    ax.annotate("end", (norm[-1], records[-1]["val_loss"]), fontsize=8)
    fig.colorbar(sc, ax=ax, label="step")
    ax.set_xlabel("total weight norm")
    ax.set_ylabel("cross-entropy")
    ax.set_yscale("log")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8)
    ax.set_title(f"{title}: loss against weight norm")
    fig.tight_layout()
    out = Path(run_dir) / ANALYSIS_FIGURES[2]
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
