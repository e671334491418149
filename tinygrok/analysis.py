"""Progress measures of a run, from its parameter snapshots (Nanda et al., 2023, "Progress
measures for grokking via mechanistic interpretability").

Fourier basis. Over the p numbers x = 0..p-1 the real DFT basis has p orthonormal vectors

    1 / sqrt(p),   sqrt(2/p) cos(w_k x),   sqrt(2/p) sin(w_k x),     w_k = 2 pi k / p

for k = 1..(p-1)//2, plus, for even p, cos(pi x) / sqrt(p) at k = p/2. Frequency k owns its cos
and sin vectors.

Spectrum. The embedding of the p number tokens W_E = wte[:p] (p, C) in that basis is F @ W_E
(p, C); the norm of frequency k is the norm of its (one or two) rows. The unembedding head.w
(C, p) gives the p answer logits; its spectrum is that of head.w.T (p, C).

Key frequencies. Take a norm per frequency k = 1..p//2 of the last snapshot, sort them in
decreasing order; the key frequencies are those before the largest ratio between neighbours, if
that ratio is at least KEY_GAP (a generalizing model uses a few frequencies, a memorizing one has
a flat spectrum and no key frequencies). For addition and subtraction the norm of frequency k is
that of the logits' components along the answer's directions u_k, v_k (below): the frequencies
the model answers with. They are read from the function, so the initial embedding, which weight
decay takes thousands of steps to erase, cannot hide them. Other tasks mod p use the embedding's
norms.

Gini coefficient of n norms x sorted ascending (x_1 <= ... <= x_n):

    G = sum_i (2 i - n - 1) x_i / (n sum_i x_i)       0 for a flat spectrum, (n-1)/n for one spike

taken over the p//2 + 1 frequency norms (k = 0 included).

Restricted and excluded loss, for a run of one task c = a + s b mod p (addition s = 1,
subtraction s = -1). L (p*p, p) are the logits of every pair (a, b), row a*p + b. For frequency k
the unit vectors over pairs u_k ~ cos(w_k (a + s b)) and v_k ~ sin(w_k (a + s b)) are the
directions along which a Fourier circuit writes its answer; L_key = sum_k (u_k u_k^T + v_k v_k^T) L
projects every class's logits onto the key frequencies' directions.

    restricted logits = mean over pairs of L  +  L_key     loss on the validation pairs
    excluded logits   = L - L_key                          loss on the training pairs

Nanda et al. project the MLP activations of their 1-layer model the same way; projecting the
logits needs no knowledge of the architecture, and for their model differs only in that the
residual path's share of the logits is projected too.

Also per snapshot: the weight norm of the embedding (wte, wpe), of each block, and of the
unembedding (ln_f, head), and the total.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tinygrok.config import EVAL_CHUNK, Config
from tinygrok.errors import ConfigError
from tinygrok.metrics import grokking_metrics
from tinygrok.model import Params, forward, param_shapes
from tinygrok.snapshots import list_snapshots, load_snapshot
from tinygrok.tasks import FIXED_ELEMENTS, all_examples, describe_tasks, make_dataset

KEY_GAP = 2.0
# The tasks whose answer is a + s*b mod p: restricted and excluded loss apply to them.
LINEAR_TASKS = {"addition": 1, "subtraction": -1}
FIGURES = ("analysis-spectrum.png", "analysis-measures.png", "analysis-weight-norm.png")


def fourier_basis(p: int) -> tuple[np.ndarray, np.ndarray]:
    """The real DFT basis over 0..p-1: basis (p, p), one orthonormal vector per row, and the
    frequency of each row (p,) ints (0, 1, 1, 2, 2, ...)."""
    x = np.arange(p)
    rows, freqs = [np.full(p, 1.0 / np.sqrt(p))], [0]
    for k in range(1, (p - 1) // 2 + 1):
        w = 2 * np.pi * k / p
        rows += [np.sqrt(2.0 / p) * np.cos(w * x), np.sqrt(2.0 / p) * np.sin(w * x)]
        freqs += [k, k]
    if p % 2 == 0:
        rows.append(np.cos(np.pi * x) / np.sqrt(p))
        freqs.append(p // 2)
    return np.stack(rows), np.array(freqs)


def frequency_norms(w: np.ndarray) -> np.ndarray:
    """w (p, C), one row per number -> norm of each frequency k = 0..p//2, shape (p//2 + 1,)."""
    basis, freqs = fourier_basis(w.shape[0])
    sq = ((basis @ w.astype(np.float64)) ** 2).sum(axis=1)  # (p,) squared norm of each row
    return np.sqrt(np.bincount(freqs, weights=sq))


def key_frequencies(norms: np.ndarray, gap: float = KEY_GAP) -> list[int]:
    """Frequencies (k >= 1) above the largest ratio between neighbouring sorted norms, if that
    ratio is >= gap; [] otherwise. norms (K+1,) indexed by frequency."""
    order = np.argsort(norms[1:])[::-1] + 1  # frequencies by decreasing norm
    sorted_norms = np.maximum(norms[order], 1e-300)
    if len(order) < 2:
        return []
    ratios = sorted_norms[:-1] / sorted_norms[1:]  # (K-1,)
    cut = int(np.argmax(ratios))
    if ratios[cut] < gap:
        return []
    return sorted(int(k) for k in order[: cut + 1])


def gini(x: np.ndarray) -> float:
    """Gini coefficient of non-negative values x (n,): 0 if all equal, (n-1)/n if one holds all."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    n, total = len(x), x.sum()
    if total <= 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * x).sum() / (n * total))


def pair_directions(p: int, freqs: list[int], s: int) -> np.ndarray:
    """Unit vectors over the p*p pairs (row a*p + b): cos and sin of w_k (a + s b) for each k in
    freqs -> (D, p*p), orthonormal; D = 2 len(freqs) (one for k = p/2, where sin vanishes)."""
    a, b = np.divmod(np.arange(p * p), p)
    dirs = []
    for k in freqs:
        phase = 2 * np.pi * k * (a + s * b) / p  # (p*p,)
        for v in (np.cos(phase), np.sin(phase)):
            norm = np.linalg.norm(v)
            if norm > 1e-9 * p:
                dirs.append(v / norm)
    return np.array(dirs).reshape(len(dirs), p * p)


def logit_frequency_norms(logits: np.ndarray, s: int) -> np.ndarray:
    """Logits of all pairs (p*p, p) -> norm of their components along cos and sin of
    w_k (a + s b), for each frequency k = 0..p//2, shape (p//2 + 1,)."""
    p = logits.shape[1]
    z = logits.astype(np.float64)
    return np.array([np.linalg.norm(pair_directions(p, [k], s) @ z) for k in range(p // 2 + 1)])


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy in float64: logits (N, P), y (N,)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def restricted_excluded(
    logits: np.ndarray,
    labels: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    key_freqs: list[int],
    s: int,
) -> tuple[float, float]:
    """Restricted loss (validation pairs) and excluded loss (training pairs) of the logits of all
    pairs (p*p, p) with labels (p*p,), keeping or removing the key frequencies' directions."""
    p = logits.shape[1]
    z = logits.astype(np.float64)
    d = pair_directions(p, key_freqs, s)  # (D, p*p)
    z_key = d.T @ (d @ z)  # (p*p, p) the logits' components along the key directions
    restricted = z.mean(axis=0, keepdims=True) + z_key
    excluded = z - z_key
    return (
        cross_entropy(restricted[val_rows], labels[val_rows]),
        cross_entropy(excluded[train_rows], labels[train_rows]),
    )


def layer_norms(params: Params) -> dict[str, float]:
    """Weight norm of the embedding, each block, the unembedding, and the total."""
    groups: dict[str, float] = {}
    for name in params.shapes:
        if name.startswith("blocks."):
            group = ".".join(name.split(".")[:2])
        else:
            group = "embedding" if name in ("wte", "wpe") else "unembedding"
        groups[group] = groups.get(group, 0.0) + float(np.sum(params[name].astype(np.float64) ** 2))
    groups["total"] = sum(groups.values())
    return {k: float(np.sqrt(v)) for k, v in groups.items()}


def all_logits(
    params: Params, tokens: np.ndarray, cfg: Config, chunk: int = EVAL_CHUNK
) -> np.ndarray:
    """Logits (N, p) of tokens (N, 4), in chunks so memory stays flat."""
    return np.concatenate(
        [forward(params, tokens[s : s + chunk], cfg)[0] for s in range(0, len(tokens), chunk)]
    )


def read_run(run_dir: Path) -> tuple[Config, list[dict]]:
    """The config and the evaluation records of a run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ConfigError(f"RUN_DIR: {run_dir} holds no run (no config.json)")
    cfg = Config.from_dict(json.loads((run_dir / "config.json").read_text())["config"])
    path = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in path.open() if line.strip()] if path.exists() else []
    return cfg, records


def analyze(run_dir: Path, key_freqs: list[int] | None = None, figures: bool = True) -> dict:
    """Compute every measure over a run's snapshots; write RUN_DIR/analysis.json and figures.

    key_freqs: the key frequencies to use (default: found in the last snapshot, see above).
    """
    run_dir = Path(run_dir)
    cfg, records = read_run(run_dir)
    snaps = list_snapshots(run_dir)
    if not snaps:
        raise ConfigError(
            f"RUN_DIR: {run_dir} has no parameter snapshots; train it with --snapshot-every N"
        )
    p, shapes = cfg.p, param_shapes(cfg)
    steps = [r["step"] for r in records]
    marks = grokking_metrics(
        steps,
        [r["train_acc"] for r in records],
        [r["val_acc"] for r in records],
        cfg.step_budget,
        cfg.memorized_threshold,
        cfg.generalized_threshold,
    )
    fourier = not any(t in FIXED_ELEMENTS for t in cfg.tasks)
    linear = len(cfg.tasks) == 1 and cfg.tasks[0] in LINEAR_TASKS
    out: dict = {
        "run_dir": str(run_dir),
        "tasks": list(cfg.tasks),
        "p": p,
        "memorized_step": marks["memorized_step"],
        "generalized_step": marks["generalized_step"],
        "steps": [s for s, _ in snaps],
        "weight_norms": {},
    }
    last = Params(shapes, load_snapshot(snaps[-1][1])[1])
    if key_freqs is not None and not fourier:
        raise ConfigError("--key-freqs: S5 runs have no Fourier measures")
    if linear:
        s = LINEAR_TASKS[cfg.tasks[0]]
        x, labels = all_examples(cfg.tasks[0], p, p, p + 1)  # (p*p, 4), (p*p,) rows a*p + b
        split = make_dataset(cfg.tasks, p, cfg.train_frac, cfg.seed)[0]
        train_rows = split.train_x[:, 0] * p + split.train_x[:, 2]
        val_rows = split.val_x[:, 0] * p + split.val_x[:, 2]
        out |= {"restricted_loss": [], "excluded_loss": [], "train_loss": [], "val_loss": []}
    if fourier:
        if linear:
            out["key_frequencies_from"] = "logits"
            final_norms = logit_frequency_norms(all_logits(last, x, cfg), s)
        else:
            out["key_frequencies_from"] = "embedding"
            final_norms = frequency_norms(last["wte"][:p])
        found = key_frequencies(final_norms)
        if key_freqs is not None:
            bad = [k for k in key_freqs if not 1 <= k <= p // 2]
            if bad:
                raise ConfigError(f"--key-freqs: frequencies must be in 1..{p // 2} (got {bad})")
        out["key_frequencies"] = sorted(set(key_freqs)) if key_freqs is not None else found
        out["key_frequencies_found"] = found
        out |= {"embedding_spectrum": [], "unembedding_spectrum": []}
        out |= {"gini_embedding": [], "gini_unembedding": []}
    for _, path in snaps:
        params = Params(shapes, load_snapshot(path)[1])
        for group, norm in layer_norms(params).items():
            out["weight_norms"].setdefault(group, []).append(norm)
        if fourier:
            emb = frequency_norms(params["wte"][:p])
            unemb = frequency_norms(params["head.w"].T)
            out["embedding_spectrum"].append(emb.tolist())
            out["unembedding_spectrum"].append(unemb.tolist())
            out["gini_embedding"].append(gini(emb))
            out["gini_unembedding"].append(gini(unemb))
        if linear:
            z = all_logits(params, x, cfg)
            r, e = restricted_excluded(z, labels, train_rows, val_rows, out["key_frequencies"], s)
            out["restricted_loss"].append(r)
            out["excluded_loss"].append(e)
            out["train_loss"].append(cross_entropy(z[train_rows], labels[train_rows]))
            out["val_loss"].append(cross_entropy(z[val_rows], labels[val_rows]))
    if figures:
        out["figures"] = [str(f.name) for f in plot_analysis(run_dir, out, records)]
    (run_dir / "analysis.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def nearest(steps: list[int], step: int | None) -> int:
    """Index of the snapshot step nearest `step` (the last one if step is None)."""
    if step is None:
        return len(steps) - 1
    return int(np.argmin([abs(s - step) for s in steps]))


def plot_analysis(run_dir: Path, a: dict, records: list[dict]) -> list[Path]:
    """The analysis figures of a run (see FIGURES); returns their paths."""
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
        fig, axes = plt.subplots(2, 3, figsize=(12, 5.5), sharex=True)
        for col, (label, i) in enumerate(chosen.items()):
            for row, key in enumerate(("embedding_spectrum", "unembedding_spectrum")):
                ax = axes[row, col]
                norms = np.array(a[key][i])
                colors = ["C3" if k in a["key_frequencies"] else "C0" for k in range(len(norms))]
                ax.bar(np.arange(len(norms)), norms, color=colors, width=0.8)
                ax.set_title(f"{key.split('_')[0]} at {label} (step {steps[i]:,})", fontsize=9)
                if col == 0:
                    ax.set_ylabel("norm per frequency")
                if row == 1:
                    ax.set_xlabel("frequency k")
        keys = ", ".join(map(str, a["key_frequencies"])) or "none"
        fig.suptitle(f"{title}: Fourier spectrum (key frequencies in red: {keys})")
        fig.tight_layout()
        paths.append(run_dir / FIGURES[0])
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
    paths.append(run_dir / FIGURES[1])
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
    out = Path(run_dir) / FIGURES[2]
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
