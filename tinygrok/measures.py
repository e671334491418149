"""Progress measures of a model (Nanda et al., 2023, "Progress measures for grokking via
mechanistic interpretability"), from its parameters: for `tinygrok analyze` over a run's
snapshots (lab/analysis.py) and live during training (`--measures-every`).

The group of a task. A Fourier circuit computes a task that is addition in some cyclic group of
order n, on coordinates i(x) of the numbers x:

    additive        addition a + b, subtraction a - b mod p:  n = p, i(x) = x
    multiplicative  multiplication a * b, division a / b mod a prime p: the nonzero numbers form
                    a cyclic group of order n = p - 1 with a generator g (the smallest primitive
                    root: 5 for p = 97, 3 for p = 113), x = g^i(x), and a * b = g^(i(a) + i(b)),
                    a / b = g^(i(a) - i(b)): in discrete-log coordinates, addition and
                    subtraction mod p - 1. The number 0 is outside the group (0 * b = 0 / b = 0):
                    the measures leave out every pair with a 0, and the number 0 itself.

so the answer's coordinate is i(a) + s i(b) mod n (s = 1 for + and *, -1 for - and /). The other
tasks (Power et al.'s polynomials, "x / y if y is odd, else x - y", and the S5 compositions) are
no such group law: for the polynomials and the mixed task only the embedding's spectrum in the
additive basis is shown, for S5 (permutations, not numbers) only weight norms. Runs of several
tasks share one embedding: their spectrum is shown in the additive basis, without the
logit measures.

Fourier basis. Over the coordinates x = 0..n-1 the real DFT basis has n orthonormal vectors

    1 / sqrt(n),   sqrt(2/n) cos(w_k x),   sqrt(2/n) sin(w_k x),     w_k = 2 pi k / n

for k = 1..(n-1)//2, plus, for even n, cos(pi x) / sqrt(n) at k = n/2. Frequency k owns its cos
and sin vectors.

Spectrum. The embedding of the number tokens in coordinate order, W_E = wte[elements] (n, C), in
that basis is F @ W_E (n, C); the norm of frequency k is the norm of its (one or two) rows. The
unembedding's columns of the numbers give the answer logits; its spectrum is that of
head.w[:, elements].T (n, C). For multiplication and division the additive spectrum is computed
too, so that "sparse in the multiplicative basis, flat in the additive one" is measured.

Key frequencies. Take a norm per frequency k = 1..n//2 of the last snapshot, sort them in
decreasing order; the key frequencies are those before the largest ratio between neighbours, if
that ratio is at least KEY_GAP (a generalizing model uses a few frequencies, a memorizing one has
a flat spectrum and no key frequencies). For the four group tasks the norm of frequency k is that
of the logits' components along the answer's directions u_k, v_k (below): the frequencies the
model answers with. They are read from the function, so the initial embedding, which weight decay
takes thousands of steps to erase, cannot hide them. Other tasks mod p use the embedding's norms.

Gini coefficient of n norms x sorted ascending (x_1 <= ... <= x_n):

    G = sum_i (2 i - n - 1) x_i / (n sum_i x_i)       0 for a flat spectrum, (n-1)/n for one spike

taken over the n//2 + 1 frequency norms (k = 0 included).

Restricted and excluded loss, for a run of one group task. L (n*n, P) are the logits of every pair
of group elements, row i(a)*n + i(b). For frequency k the unit vectors over pairs
u_k ~ cos(w_k (i(a) + s i(b))) and v_k ~ sin(w_k (i(a) + s i(b))) are the directions along which
a Fourier circuit writes its answer; L_key = sum_k (u_k u_k^T + v_k v_k^T) L projects every
class's logits onto the key frequencies' directions.

    restricted logits = mean over pairs of L  +  L_key     loss on the validation pairs
    excluded logits   = L - L_key                          loss on the training pairs

Nanda et al. project the MLP activations of their 1-layer model the same way; projecting the
logits needs no knowledge of the architecture, and for their model differs only in that the
residual path's share of the logits is projected too.

Live (`--measures-every N`), the run computes the same measures at every N-th step from the
logits of every pair, with the key frequencies of that step's logits (a model that has not found
its frequencies yet has none, and its restricted loss is that of the mean logits); `tinygrok
analyze` afterwards uses the final key frequencies throughout, as Nanda et al. do.

Also per snapshot: the weight norm of the embedding (wte, wpe), of each block, and of the
unembedding (ln_f, head), and the total.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinygrok import fast
from tinygrok.config import EVAL_CHUNK, Config
from tinygrok.kernels.crossentropy import cross_entropy_forward_ref
from tinygrok.params import Params
from tinygrok.tasks import FIXED_ELEMENTS, OPERATIONS, is_prime, make_dataset

KEY_GAP = 2.0
# The tasks that are a group law: task -> (group, s), the answer's coordinate i(a) + s i(b).
GROUP_TASKS = {
    "addition": ("additive", 1),
    "subtraction": ("additive", -1),
    "multiplication": ("multiplicative", 1),
    "division": ("multiplicative", -1),
}


@dataclass(frozen=True)
class Basis:
    """A task's numbers as a cyclic group of order n: elements[i] is the number of coordinate i."""

    kind: str  # "additive" or "multiplicative"
    elements: np.ndarray  # (n,) ints
    s: int  # the answer's coordinate is i(a) + s i(b) mod n
    generator: int | None = None  # of the multiplicative group

    @property
    def n(self) -> int:
        """The order of the group."""
        return len(self.elements)

    def describe(self) -> str:
        """'additive mod 97' or 'discrete log base 5 (96 nonzero elements)'."""
        if self.kind == "additive":
            return f"additive mod {self.n}"
        return f"discrete log base {self.generator} ({self.n} nonzero elements)"


def primitive_root(p: int) -> int:
    """The smallest generator of the multiplicative group mod a prime p: the g whose powers
    g^((p-1)/q) differ from 1 for every prime q dividing p - 1."""
    n = p - 1
    factors = [q for q in range(2, n + 1) if n % q == 0 and is_prime(q)]
    return next(g for g in range(1, p) if all(pow(g, n // q, p) != 1 for q in factors))


def task_basis(task: str, p: int) -> Basis | None:
    """The group of `task` mod p, or None where the task is no group law (polynomials, S5, or
    multiplication mod a composite p, whose nonzero numbers are no group)."""
    if task not in GROUP_TASKS:
        return None
    kind, s = GROUP_TASKS[task]
    if kind == "additive":
        return Basis(kind, np.arange(p), s)
    if not is_prime(p):
        return None
    g = primitive_root(p)
    return Basis(kind, np.array([pow(g, i, p) for i in range(p - 1)]), s, g)


def fourier_basis(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The real DFT basis over 0..n-1: basis (n, n), one orthonormal vector per row, and the
    frequency of each row (n,) ints (0, 1, 1, 2, 2, ...)."""
    x = np.arange(n)
    rows, freqs = [np.full(n, 1.0 / np.sqrt(n))], [0]
    for k in range(1, (n - 1) // 2 + 1):
        w = 2 * np.pi * k / n
        rows += [np.sqrt(2.0 / n) * np.cos(w * x), np.sqrt(2.0 / n) * np.sin(w * x)]
        freqs += [k, k]
    if n % 2 == 0:
        rows.append(np.cos(np.pi * x) / np.sqrt(n))
        freqs.append(n // 2)
    return np.stack(rows), np.array(freqs)


def frequency_norms(w: np.ndarray) -> np.ndarray:
    """w (n, C), one row per coordinate -> norm of each frequency k = 0..n//2, shape (n//2 + 1,)."""
    basis, freqs = fourier_basis(w.shape[0])
    sq = ((basis @ w.astype(np.float64)) ** 2).sum(axis=1)  # (n,) squared norm of each row
    return np.sqrt(np.bincount(freqs, weights=sq))


def spectra(params: Params, basis: Basis) -> tuple[np.ndarray, np.ndarray]:
    """Frequency norms (n//2 + 1,) of the number embedding and of the unembedding's number
    columns, both in the coordinate order of `basis`."""
    e = basis.elements
    return frequency_norms(params["wte"][e]), frequency_norms(params["head.w"][:, e].T)


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


def pair_directions(n: int, freqs: list[int], s: int) -> np.ndarray:
    """Unit vectors over the n*n pairs of coordinates (row i*n + j): cos and sin of w_k (i + s j)
    for each k in freqs -> (D, n*n), orthonormal; D = 2 len(freqs) (one for k = n/2, where sin
    vanishes)."""
    i, j = np.divmod(np.arange(n * n), n)
    dirs = []
    for k in freqs:
        phase = 2 * np.pi * k * (i + s * j) / n  # (n*n,)
        for v in (np.cos(phase), np.sin(phase)):
            norm = np.linalg.norm(v)
            if norm > 1e-9 * n:
                dirs.append(v / norm)
    return np.array(dirs).reshape(len(dirs), n * n)


def grid_order(logits: np.ndarray) -> int:
    """n of logits (n*n, P) over every pair of a group of order n."""
    n = int(round(np.sqrt(logits.shape[0])))
    assert n * n == logits.shape[0], "the logits must cover every pair of the group"
    return n


def logit_frequency_norms(logits: np.ndarray, s: int) -> np.ndarray:
    """Logits of all pairs (n*n, P), row i*n + j -> norm of their components along cos and sin
    of w_k (i + s j), for each frequency k = 0..n//2, shape (n//2 + 1,)."""
    n = grid_order(logits)
    z = logits.astype(np.float64)
    return np.array([np.linalg.norm(pair_directions(n, [k], s) @ z) for k in range(n // 2 + 1)])


def mean_loss(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy in float64 (the loss of training, kernels.crossentropy): logits (N, P),
    y (N,)."""
    return float(cross_entropy_forward_ref(logits, y)[0].mean())


def restricted_excluded(
    logits: np.ndarray,
    labels: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    key_freqs: list[int],
    s: int,
) -> tuple[float, float]:
    """Restricted loss (validation pairs) and excluded loss (training pairs) of the logits of all
    pairs (n*n, P) with labels (n*n,), keeping or removing the key frequencies' directions."""
    z = logits.astype(np.float64)
    d = pair_directions(grid_order(logits), key_freqs, s)  # (D, n*n)
    z_key = d.T @ (d @ z)  # (n*n, P) the logits' components along the key directions
    restricted = z.mean(axis=0, keepdims=True) + z_key
    excluded = z - z_key
    return (
        mean_loss(restricted[val_rows], labels[val_rows]),
        mean_loss(excluded[train_rows], labels[train_rows]),
    )


@dataclass(frozen=True)
class PairGrid:
    """Every pair of a one-task run's group elements, row i(a)*n + i(b), with the run's split."""

    basis: Basis
    tokens: np.ndarray  # (n*n, 4)
    labels: np.ndarray  # (n*n,)
    train_rows: np.ndarray  # rows of the training pairs (pairs with a 0 left out)
    val_rows: np.ndarray


def pair_grid(cfg: Config) -> PairGrid | None:
    """The pair grid of a run of one group task; None for several tasks or a task with no group."""
    if len(cfg.tasks) != 1:
        return None
    task, p = cfg.tasks[0], cfg.p
    basis = task_basis(task, p)
    if basis is None:
        return None
    e, n = basis.elements, basis.n
    a, b = np.repeat(e, n), np.tile(e, n)  # (n*n,) row i*n + j: (elements[i], elements[j])
    label = OPERATIONS[task].label
    labels = np.array([label(int(x), int(y), p) for x, y in zip(a, b, strict=True)])
    tokens = np.stack([a, np.full(n * n, p), b, np.full(n * n, p + 1)], axis=1)  # [a, op, b, =]
    coord = np.full(p, -1)
    coord[e] = np.arange(n)
    (split,) = make_dataset(cfg.tasks, p, cfg.train_frac, cfg.seed)

    def rows(x: np.ndarray) -> np.ndarray:
        ia, ib = coord[x[:, 0]], coord[x[:, 2]]
        keep = (ia >= 0) & (ib >= 0)
        return ia[keep] * n + ib[keep]

    return PairGrid(basis, tokens, labels, rows(split.train_x), rows(split.val_x))


def all_logits(
    params: Params, tokens: np.ndarray, cfg: Config, chunk: int = EVAL_CHUNK
) -> np.ndarray:
    """Logits (N, P) of tokens (N, 4) on the run's engine, in chunks so memory stays flat."""
    return np.concatenate(
        [fast.logits(params, tokens[s : s + chunk], cfg) for s in range(0, len(tokens), chunk)]
    )


def logit_measures(params: Params, cfg: Config, grid: PairGrid, keys: list[int] | None) -> dict:
    """From the logits of every pair of the grid: the key frequencies they show, restricted and
    excluded loss with `keys` (None: those shown), and the loss on the grid's train and
    validation pairs."""
    z = all_logits(params, grid.tokens, cfg)
    found = key_frequencies(logit_frequency_norms(z, grid.basis.s))
    tr, va, y = grid.train_rows, grid.val_rows, grid.labels
    restricted, excluded = restricted_excluded(
        z, y, tr, va, found if keys is None else keys, grid.basis.s
    )
    return {
        "key_frequencies": found,
        "restricted_loss": restricted,
        "excluded_loss": excluded,
        "train_loss": mean_loss(z[tr], y[tr]),
        "val_loss": mean_loss(z[va], y[va]),
    }


def spectrum_measures(params: Params, basis: Basis) -> dict:
    """The spectra in `basis` and their Gini coefficients, and for a multiplicative basis the
    same in the additive one (keys with the suffix "_additive")."""
    out = {}
    bases = {"": basis}
    if basis.kind == "multiplicative":
        p = int(basis.elements.max()) + 1
        bases["_additive"] = Basis("additive", np.arange(p), 1)
    for suffix, b in bases.items():
        emb, unemb = spectra(params, b)
        out |= {
            f"embedding_spectrum{suffix}": emb.tolist(),
            f"unembedding_spectrum{suffix}": unemb.tolist(),
        }
        out |= {f"gini_embedding{suffix}": gini(emb), f"gini_unembedding{suffix}": gini(unemb)}
    return out


def run_basis(cfg: Config, grid: PairGrid | None) -> Basis | None:
    """The basis a run's spectra are shown in: its task's group, the additive basis for tasks
    mod p without one (and runs of several tasks), none for S5."""
    if grid is not None:
        return grid.basis
    if any(t in FIXED_ELEMENTS for t in cfg.tasks):
        return None
    return Basis("additive", np.arange(cfg.p), 1)


def live_measures(params: Params, cfg: Config, grid: PairGrid | None) -> dict:
    """The progress measures of the current parameters, for metrics.jsonl (`--measures-every`):
    Gini coefficients of the spectra and, for a one-task group run, the key frequencies and the
    restricted and excluded loss with them."""
    basis = run_basis(cfg, grid)
    out: dict = {}
    if basis is not None:
        m = spectrum_measures(params, basis)
        out = {k: v for k, v in m.items() if k.startswith("gini")}
    if grid is not None:
        m = logit_measures(params, cfg, grid, None)
        out |= {k: m[k] for k in ("key_frequencies", "restricted_loss", "excluded_loss")}
    return out


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
