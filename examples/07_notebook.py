"""A notebook on the Python API: train (or load) a tiny run, plot its curves, the Fourier spectrum
of its number embedding and one attention pattern, and ask the model a sum.

The `# %%` lines are cells (the "percent" format of jupytext): VS Code and Jupyter with jupytext
open this file as a notebook, and `python examples/07_notebook.py` runs it as a script, without a
display, writing the figures to files.

    python examples/07_notebook.py [--out DIR] [--run RUN_DIR] [--quick]

--out is the folder for the figures (default: a new temporary folder) and for the run it trains
(DIR/run, replaced on every run of the notebook). --run, or the environment variable
TINYGROK_RUN, loads that run folder instead of training one. --quick trains 150 steps, too few to
grok: it checks the pipeline, so the grokking claims are only asserted without it.
"""

# %%
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # a script: figures go to files only
import matplotlib.pyplot as plt
import numpy as np

import tinygrok
from tinygrok.measures import frequency_norms, key_frequencies
from tinygrok.tasks import OPERATIONS

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--out", type=Path, help="folder for the figures  [default: a temporary one]")
parser.add_argument("--run", type=Path, default=os.environ.get("TINYGROK_RUN"), help="load a run")
parser.add_argument("--quick", action="store_true", help="150 steps: a run that cannot grok")
args, _ = parser.parse_known_args()  # a notebook's kernel passes arguments of its own
out = args.out or Path(tempfile.mkdtemp(prefix="tinygrok-notebook-"))
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## A run
#
# The preset `tiny` (1 block, d_model 32, addition mod 23 on 60% of the pairs, full batch) groks
# in seconds. `tinygrok.run` writes the same run folder as `tinygrok run --preset tiny --out
# DIR`; `tinygrok.load` reads any run folder back.

# %%
trained = args.run is None
if trained:
    cfg = tinygrok.config_from("tiny", steps=150 if args.quick else 2000)
    run = tinygrok.run(cfg, out / "run", progress=False, force=True, threads=1)
else:
    run = tinygrok.load(args.run)
task, p = run.config.tasks[0], run.config.p
print(run)
if run.summary:
    print({k: run.summary[k] for k in ("memorized_step", "generalized_step", "delay_steps")})

# %% [markdown]
# ## Its curves
#
# One record per evaluation in `run.metrics` (`run.metrics_frame()` gives them as a pandas
# DataFrame, if pandas is installed).

# %%
steps = np.array([r["step"] for r in run.metrics])
later = steps > 0  # step 0 has no place on a log axis
fig, ax = plt.subplots(figsize=(7, 3.5))
for split, style in (("train", "--"), ("val", "-")):
    acc = np.array([r[f"{split}_acc"] for r in run.metrics])
    ax.plot(steps[later], 100 * acc[later], style, label=f"{split} accuracy")
for key, color in (("memorized_step", "0.5"), ("generalized_step", "k")):
    if run.summary and run.summary[key]:
        ax.axvline(run.summary[key], color=color, ls=":", label=f"{key} {run.summary[key]:,}")
ax.set(xscale="log", xlabel="step", ylabel="accuracy (%)", title=f"{task} mod {p}")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(out / "07_curves.png", dpi=100)

# %% [markdown]
# ## The Fourier spectrum of the numbers
#
# The p number tokens' rows of the embedding `wte[:p]` (p, C), and the unembedding's columns
# `head.w.T` (p, C), in the real Fourier basis over 0..p-1: one norm per frequency k (measures.py
# states the math). A model that grokked addition answers with a few frequencies: the
# unembedding's spectrum has a few tall bars (its key frequencies, red), and the embedding's
# largest bars are at the same ones.

# %%
spectra = {
    "embedding wte[:p]": frequency_norms(run.params["wte"][:p]),
    "unembedding head.w[:, :p].T": frequency_norms(run.params["head.w"][:, :p].T),
}
keys = key_frequencies(spectra["unembedding head.w[:, :p].T"])
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for ax, (name, norms) in zip(axes, spectra.items(), strict=True):
    colors = ["C3" if k in keys else "C0" for k in range(len(norms))]
    ax.bar(np.arange(len(norms)), norms, color=colors)
    ax.set(title=name, xlabel="frequency k", ylabel="norm")
fig.tight_layout()
fig.savefig(out / "07_spectrum.png", dpi=100)
top = sorted(int(k) + 1 for k in np.argsort(spectra["embedding wte[:p]"][1:])[::-1][:3])
print(f"key frequencies of the unembedding: {keys}; the embedding's largest three: {top}")

# %% [markdown]
# ## One attention pattern
#
# `run.attention(a, b)` (N, heads, 4, 4): how each position of `[a, op, b, =]` spreads its
# attention over itself and the positions before it (rows sum to 1, zero above the diagonal).
# The last row is the one the answer is read from.

# %%
symbol = {"addition": "+", "subtraction": "-", "multiplication": "*", "division": "/"}
op = symbol.get(task, task)
a, b = 6 % p, 3 % p
att = run.attention(a, b, task=task)[0]  # (heads, 4, 4)
labels = [str(a), op, str(b), "="]
fig, axes = plt.subplots(1, len(att), figsize=(2.6 * len(att), 3.2))
for h, ax in enumerate(np.atleast_1d(axes)):
    ax.imshow(att[h], vmin=0, vmax=1, cmap="viridis")
    ax.set(title=f"head {h}", xlabel="key", xticks=range(4), yticks=range(4))
    ax.set_xticklabels(labels)
    ax.set_yticklabels(labels)
np.atleast_1d(axes)[0].set_ylabel("query")
fig.suptitle(f"block 0 attention on [{a}, {op}, {b}, =]")
fig.tight_layout()
fig.savefig(out / "07_attention.png", dpi=100)
print(f"attention of '=' in each head: {np.round(att[:, 3].astype(float), 2).tolist()}")

# %% [markdown]
# ## Ask the model

# %%
answer, truth = run.predict(a, b, task=task), OPERATIONS[task].label(a, b, p)
print(f"{a} {op} {b} mod {p} = {answer} (the model; the true answer: {truth})")
every_a = run.predict(np.arange(p), b, task=task)
print(f"a {op} {b} for a = 0..{p - 1}: {every_a.tolist()}")
val = run.evaluate("val", task=task)
print(f"validation: accuracy {val['acc']:.1%}, loss {val['loss']:.3f}; figures in {out}")

# %%
np.testing.assert_allclose(att.sum(axis=-1), 1.0, rtol=1e-5)
assert (np.triu(att, k=1) == 0).all(), "attention looks at no later position"
if trained and not args.quick:
    assert run.summary["generalized_step"] is not None, "the tiny preset groks"
    assert answer == truth == 9 and val["acc"] >= 0.95
    assert keys, "a grokked model answers with a few frequencies"
