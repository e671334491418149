"""A toy linear model that memorizes at once and generalizes much later (NumPy only).

The toy linear model of the explainer "Grokking & Delayed Generalization" (How I Study AI):
logistic regression on two kinds of features:

    x_i = [s_i, alpha e_i]       s_i ~ N(0, I_d): signal features, shared by train and test
                                 e_i: example i's own one-hot memorization feature; a test
                                 example has zeros there
    y_i = sign(w* . s_i)         the rule, w* a random unit vector
    z_i = w . s_i + alpha m_i    w (d,) signal weights, m (n,) memorization weights
    loss = mean_i log(1 + exp(-y_i z_i))

trained by minibatch SGD with decoupled weight decay, as the toy updates it:

    (w, m) <- (1 - lr wd) (w, m) - lr grad

Test examples have no memorization feature, so test accuracy depends only on the direction of w:
for Gaussian s it is 1 - angle(w, w*) / pi.

The toy's recipe starts from w = 0. Then the very first gradient, sum_i y_i s_i, already points
roughly along w*, and test accuracy follows it at once. In our sweeps of that recipe (n_train 256
and 512, d_sig 5 to 50, alpha 1 to 30, lr 0.001 to 0.05, wd 0.001 and 0.01, one example per step)
the model either generalized in the epoch it memorized or its test accuracy stayed where the first
epochs left it. For a linear model the features SGD fits fastest are the ones L2 weight decay
finds cheapest (both are measured in the same Euclidean norm), so there is no slow second phase
to wait for. What does produce the delay:

1. memorization is fast: alpha = 30, so a few visits fit every training label through m; the
   training loss, and with it the gradient on w, all but vanish;
2. w starts as a large random vector, w ~ N(0, init^2 / d_sig I) with init = 30 (tinygrok's
   --init-scale, and the large-start mechanism of Liu et al. 2022, "Omnigrok"), so its direction,
   and test accuracy, start near chance.

From then on weight decay does the work: it shrinks the random part of w by (1 - lr wd) every
step, while the small gradient keeps rebuilding the part every example agrees on, along w*. Test
accuracy climbs once the random part has shrunk below that, after about
ln(|w_random| / |w_rule|) / (lr wd steps_per_epoch) epochs: the delay scales like 1 / (lr wd).
The script runs that recipe and four controls, asserts what each shows, and plots the curves.

    python examples/05_toy_linear_grokking.py [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

RECIPE = {"alpha": 30.0, "init": 30.0, "lr": 0.2, "wd": 1e-2}
N_TRAIN, N_TEST, D_SIG, BATCH = 1024, 4000, 10, 64
MEMORIZED, GENERALIZED = 0.99, 0.95  # the thresholds tinygrok uses for its runs


def make_data(seed: int) -> tuple[np.ndarray, ...]:
    """Signal features and labels of the training and test sets, and the rule:
    s (N_TRAIN, D_SIG), y (N_TRAIN,), s_test (N_TEST, D_SIG), y_test (N_TEST,), w_star (D_SIG,)."""
    rng = np.random.default_rng(seed)
    w_star = rng.standard_normal(D_SIG)
    w_star /= np.linalg.norm(w_star)
    s, s_test = rng.standard_normal((N_TRAIN, D_SIG)), rng.standard_normal((N_TEST, D_SIG))
    y, y_test = np.where(s @ w_star >= 0, 1.0, -1.0), np.where(s_test @ w_star >= 0, 1.0, -1.0)
    return s, y, s_test, y_test, w_star


def train(
    data: tuple[np.ndarray, ...],
    alpha: float,
    init: float,
    lr: float,
    wd: float,
    epochs: int,
    seed: int = 1,
) -> dict[str, np.ndarray]:
    """SGD with decoupled weight decay; returns per-epoch curves (epochs + 1,) from epoch 0:
    train and test accuracy, |w| along w*, |w| across w* (the random part), |m|."""
    s, y, s_test, y_test, w_star = data
    rng = np.random.default_rng(seed)
    w = init * rng.standard_normal(D_SIG) / np.sqrt(D_SIG)  # (d,) N(0, init^2 / d I)
    m = np.zeros(N_TRAIN)  # (n,) weight of each example's one-hot feature
    log: dict[str, list[float]] = {k: [] for k in ("train", "test", "along", "across", "mem")}

    def record() -> None:
        along = w @ w_star
        log["train"].append(np.mean(np.where(s @ w + alpha * m >= 0, 1, -1) == y))
        log["test"].append(np.mean(np.where(s_test @ w >= 0, 1, -1) == y_test))
        log["along"].append(abs(along))
        log["across"].append(np.linalg.norm(w - along * w_star))
        log["mem"].append(np.linalg.norm(m))

    record()  # epoch 0, the start
    for _ in range(epochs):
        for idx in np.array_split(rng.permutation(N_TRAIN), N_TRAIN // BATCH):
            z = s[idx] @ w + alpha * m[idx]  # (B,)
            # d loss / d z = -y sigmoid(-y z), in a form that cannot overflow; mean over B
            dz = -y[idx] * 0.5 * (1 - np.tanh(0.5 * y[idx] * z)) / len(idx)  # (B,)
            w *= 1 - lr * wd
            m *= 1 - lr * wd
            w -= lr * s[idx].T @ dz  # z depends on w through s
            m[idx] -= lr * alpha * dz  # and on m_i through alpha e_i
        record()
    return {k: np.array(v) for k, v in log.items()}


def first_epoch(acc: np.ndarray, threshold: float) -> int | None:
    """The first epoch whose accuracy reaches the threshold, or None."""
    hits = np.flatnonzero(acc >= threshold)
    return int(hits[0]) if hits.size else None


def plot(runs: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    """Accuracy (top) and weight norms (bottom) of the recipe, with two controls' test accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_norm) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    r = runs["recipe"]
    epochs = np.arange(len(r["train"]))
    ax_acc.plot(epochs, 100 * r["train"], "--", color="C0", label="train")
    ax_acc.plot(epochs, 100 * r["test"], color="C0", label="test")
    for name, color in (("no weight decay", "C3"), ("zero init (the toy's)", "C2")):
        ax_acc.plot(epochs, 100 * runs[name]["test"], color=color, lw=0.9, label=f"test, {name}")
    for key, threshold, color in (
        ("memorized", MEMORIZED, "0.4"),
        ("generalized", GENERALIZED, "k"),
    ):
        e = first_epoch(r["train" if key == "memorized" else "test"], threshold)
        for ax in (ax_acc, ax_norm):
            ax.axvline(e, color=color, lw=0.8, ls=":")
        ax_acc.text(e, 70, f" {key}\n epoch {e}", fontsize=8, color=color)
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.legend(fontsize=8, loc="lower right")
    ax_acc.set_title("logistic regression with memorization features: grokking by weight decay")
    ax_norm.plot(epochs, r["across"], color="C1", label="|w| across w* (random part)")
    ax_norm.plot(epochs, r["along"], color="C0", label="|w . w*| (the rule)")
    ax_norm.plot(epochs, r["mem"], color="0.5", label="|m| (memorization)")
    ax_norm.set_yscale("log")
    ax_norm.set_xscale("symlog", linthresh=1)  # linear from epoch 0 to 1, then logarithmic
    ax_norm.set_xlim(0, epochs[-1])
    ax_norm.set_xlabel("epoch")
    ax_norm.set_ylabel("norm")
    ax_norm.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/examples"), help="figure folder")
    parser.add_argument("--quick", action="store_true", help="300 epochs instead of 600")
    args = parser.parse_args()
    epochs = 300 if args.quick else 600
    data = make_data(seed=0)
    controls = {
        "recipe": {},
        "no weight decay": {"wd": 0.0},
        "weight decay halved": {"wd": RECIPE["wd"] / 2},
        "zero init (the toy's)": {"init": 0.0},
        "no memorization (alpha 0)": {"alpha": 0.0},
    }
    print(f"n_train {N_TRAIN}, d_sig {D_SIG}, batch {BATCH}, {epochs} epochs; recipe {RECIPE}\n")
    print(f"{'run':27s} {'memorized':>9s} {'generalized':>11s} {'delay':>6s}", end="")
    print(f" {'test acc when memorized':>24s} {'final test':>10s}")
    runs, events = {}, {}
    for name, change in controls.items():
        r = runs[name] = train(data, **(RECIPE | change), epochs=epochs)
        mem, gen = first_epoch(r["train"], MEMORIZED), first_epoch(r["test"], GENERALIZED)
        events[name] = mem, gen
        cells = [
            "-" if v is None else str(v)
            for v in (mem, gen, None if gen is None or mem is None else gen - mem)
        ]
        at_mem = "-" if mem is None else f"{r['test'][mem]:.1%}"
        print(f"{name:27s} {cells[0]:>9s} {cells[1]:>11s} {cells[2]:>6s}", end="")
        print(f" {at_mem:>24s} {r['test'][-1]:10.1%}")

    mem, gen = events["recipe"]
    r = runs["recipe"]
    assert mem is not None and gen is not None, "the recipe memorizes and generalizes"
    assert gen >= 5 * mem and r["test"][mem] < 0.7, "memorized long before generalizing"
    assert events["no weight decay"][1] is None, "without weight decay the random part stays"
    ratio = events["weight decay halved"][1] / gen
    assert 1.5 < ratio < 2.5, f"half the weight decay, about twice the delay (got {ratio:.2f}x)"
    z_mem, z_gen = events["zero init (the toy's)"]
    assert z_gen is not None and z_gen - z_mem <= 5, "from zero, it generalizes as it memorizes"
    a_mem, a_gen = events["no memorization (alpha 0)"]
    assert a_gen is not None and (a_mem is None or a_gen <= a_mem), "no memorization phase"
    across, along = r["across"], r["along"]
    print(
        f"\nrandom part of w: {across[0]:.1f} at the start, {across[mem]:.1f} when memorized, ",
        end="",
    )
    print(f"{across[gen]:.2f} when generalized (the rule's part then: {along[gen]:.2f})")
    print(f"half the weight decay: generalized {ratio:.2f}x later (delay ~ 1 / (lr wd))")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "05_toy_linear_grokking.png"
    plot(runs, path)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
