"""Modular-arithmetic tasks: the operation table, datasets, the train/validation split, batches.

An example is the token sequence `[a, op, b, =]` with `a, b` in `0..p-1`; the model predicts
`c = a op b (mod p)` from the output at the last position, over `p` answer classes.

Tokens of a run with `k` tasks: `0..p-1` are the numbers, `p + i` is the operation token of the
run's i-th task, `p + k` is `=`. So the vocabulary has `p + k + 1` tokens.

The split of one task is a seeded permutation of all its pairs: the first `train_frac` go to
training, the rest to validation. The seed stream is keyed by the task's fixed id in the table, so
division's split is the same whether it is trained alone or beside other tasks.

Batches are a pure function of (seed, step): each task walks through its training set in epochs,
each epoch a fresh seeded permutation. Resuming a run at step t needs no sampler state.

Besides the four core operations the table holds the rest of Power et al. (2022)'s tasks: five
polynomials mod p, "x / y if y is odd, else x - y", and three operations on the symmetric group
S5. An S5 task has 120 elements, a token per permutation: its examples are `[x, op, y, =]` with
x, y in 0..119 indexing `S5_PERMS`, so for S5 the run's `p` is the number of elements, 120
(`fixed_elements`).
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from tinygrok.errors import ConfigError


class Operation(NamedTuple):
    """One row of the operation table."""

    label: Callable[[int, int, int], int]  # (a, b, p) -> the answer; read as the definition
    needs_prime: bool  # only defined mod a prime p (an inverse is taken)
    b_nonzero: bool  # pairs with b = 0 are left out
    description: str


# The operation table: name -> Operation. Each label function takes Python ints.
OPERATIONS: dict[str, Operation] = {
    "addition": Operation(lambda a, b, p: (a + b) % p, False, False, "a + b mod p"),
    "subtraction": Operation(lambda a, b, p: (a - b) % p, False, False, "a - b mod p"),
    "multiplication": Operation(lambda a, b, p: (a * b) % p, False, False, "a * b mod p"),
    "division": Operation(
        lambda a, b, p: a * pow(b, p - 2, p) % p, True, True, "a / b mod p, b != 0"
    ),
}

# S5: the 120 permutations of (0, 1, 2, 3, 4) in lexicographic order; token i is S5_PERMS[i]. A
# permutation x maps i -> x[i], and (x o y)[i] = x[y[i]] (apply y first), as in Power et al.'s code.
S5_PERMS: tuple[tuple[int, ...], ...] = tuple(itertools.permutations(range(5)))
S5_INDEX: dict[tuple[int, ...], int] = {perm: i for i, perm in enumerate(S5_PERMS)}


def compose(x: tuple[int, ...], y: tuple[int, ...]) -> tuple[int, ...]:
    """x o y: the permutation i -> x[y[i]]."""
    return tuple(x[i] for i in y)


def inverse(x: tuple[int, ...]) -> tuple[int, ...]:
    """x^-1: the permutation with x o x^-1 = identity."""
    inv = [0] * len(x)
    for i, xi in enumerate(x):
        inv[xi] = i
    return tuple(inv)


def _s5(*factors: str) -> Callable[[int, int, int], int]:
    """Label function of the S5 word `factors` over "x", "y", "x^-1" (p is 120 and unused)."""

    def label(a: int, b: int, p: int) -> int:
        x, y = S5_PERMS[a], S5_PERMS[b]
        elements = {"x": x, "y": y, "x^-1": inverse(x)}
        out = tuple(range(5))
        for f in factors:
            out = compose(out, elements[f])
        return S5_INDEX[out]

    return label


# Power et al. (2022), appendix A.1: the other operations, on x = a and y = b.
OPERATIONS |= {
    "x2+y2": Operation(lambda a, b, p: (a * a + b * b) % p, False, False, "x^2 + y^2 mod p"),
    "x2+xy+y2": Operation(
        lambda a, b, p: (a * a + a * b + b * b) % p,
        False,
        False,
        "x^2 + x*y + y^2 mod p",
    ),
    "x2+xy+y2+x": Operation(
        lambda a, b, p: (a * a + a * b + b * b + a) % p,
        False,
        False,
        "x^2 + x*y + y^2 + x mod p",
    ),
    "x3+xy": Operation(lambda a, b, p: (a**3 + a * b) % p, False, False, "x^3 + x*y mod p"),
    "x3+xy2+y": Operation(
        lambda a, b, p: (a**3 + a * b * b + b) % p, False, False, "x^3 + x*y^2 + y mod p"
    ),
    "div-if-odd": Operation(
        lambda a, b, p: a * pow(b, p - 2, p) % p if b % 2 else (a - b) % p,
        True,
        True,
        "x / y mod p if y is odd, else x - y mod p; y != 0",
    ),
    "s5": Operation(_s5("x", "y"), False, False, "x o y in S5, permutations of 5 items"),
    "s5-conj": Operation(_s5("x", "y", "x^-1"), False, False, "x o y o x^-1 in S5 (conjugation)"),
    "s5-xyx": Operation(_s5("x", "y", "x"), False, False, "x o y o x in S5"),
}
# Tasks whose elements do not depend on p: task -> number of elements (the run's p).
FIXED_ELEMENTS = {"s5": len(S5_PERMS), "s5-conj": len(S5_PERMS), "s5-xyx": len(S5_PERMS)}
ALIASES = {"add": "addition", "sub": "subtraction", "mul": "multiplication", "div": "division"}
ALIASES |= {
    "x^2+y^2": "x2+y2",
    "x^2+xy+y^2": "x2+xy+y2",
    "x^2+xy+y^2+x": "x2+xy+y2+x",
    "x^3+xy": "x3+xy",
    "x^3+xy^2+y": "x3+xy2+y",
    "s5-compose": "s5",
    "s5-conjugate": "s5-conj",
}
SEQ_LEN = 4  # [a, op, b, =]

# Streams of the run seed, so that split, initialization and batches never share random numbers.
SPLIT_STREAM, INIT_STREAM, BATCH_STREAM = 0, 1, 2


def task_names() -> list[str]:
    """Every task name a user may type (aliases after the full names)."""
    return list(OPERATIONS) + list(ALIASES)


def did_you_mean(word: str, choices: Iterable[str] | Mapping[str, str]) -> str:
    """'did you mean division?' when `word` is close to some of `choices`, else ''. The closest
    matches by difflib's ratio are named, with those nearly as close (within 0.1). With a mapping
    the keys are matched and their values named, so an alias close to the word names its task."""
    table = choices if isinstance(choices, Mapping) else {c: c for c in choices}
    close = difflib.get_close_matches(word, list(table), n=3)
    ratio = {c: difflib.SequenceMatcher(None, word, c).ratio() for c in close}
    close = [c for c in close if ratio[c] >= ratio[close[0]] - 0.1]
    names = list(dict.fromkeys(table[c] for c in close))
    return f"did you mean {' or '.join(names)}?" if names else ""


def canonical_task(name: str) -> str:
    """The table name of a task or alias; ConfigError with the allowed names (and the closest
    ones) otherwise."""
    name = name.strip().lower()
    name = ALIASES.get(name, name)
    if name not in OPERATIONS:
        hint = did_you_mean(name, {n: n for n in OPERATIONS} | ALIASES)
        allowed = f"choose from {', '.join(task_names())}"
        raise ConfigError(
            f"TASK: unknown task {name!r}; " + (f"{hint} ({allowed})" if hint else allowed)
        )
    return name


def fixed_elements(tasks: tuple[str, ...]) -> int | None:
    """The number of elements the (canonical) tasks impose on p, or None if p is free."""
    counts = {FIXED_ELEMENTS[t] for t in tasks if t in FIXED_ELEMENTS}
    return counts.pop() if len(counts) == 1 else None


def describe_tasks(tasks: tuple[str, ...] | list[str], p: int) -> str:
    """A title for a run's tasks: "division mod 97", "division + addition mod 97", or for the
    permutation tasks, whose p is their number of elements, "s5 (120 elements)"."""
    names = " + ".join(tasks)
    return f"{names} ({p} elements)" if fixed_elements(tuple(tasks)) else f"{names} mod {p}"


def is_prime(n: int) -> bool:
    """Trial division; p is small."""
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


@dataclass(frozen=True)
class TaskData:
    """One task of a run: all its examples, split into train and validation."""

    name: str
    train_x: np.ndarray  # (N_train, 4) int64 tokens
    train_y: np.ndarray  # (N_train,) int64 answers in 0..p-1
    val_x: np.ndarray  # (N_val, 4)
    val_y: np.ndarray  # (N_val,)


def all_examples(task: str, p: int, op_token: int, eq_token: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of one task, in order of (a, b): tokens (N, 4) and labels (N,)."""
    op = OPERATIONS[task]
    fn, b_nonzero = op.label, op.b_nonzero
    pairs = [(a, b) for a in range(p) for b in range(p) if not (b_nonzero and b == 0)]
    x = np.array([(a, op_token, b, eq_token) for a, b in pairs], dtype=np.int64)  # (N, 4)
    y = np.array([fn(a, b, p) for a, b in pairs], dtype=np.int64)  # (N,)
    return x, y


def make_dataset(tasks: tuple[str, ...], p: int, train_frac: float, seed: int) -> list[TaskData]:
    """All tasks of a run, each split train/validation by its own seeded permutation."""
    eq_token = p + len(tasks)
    data = []
    for i, task in enumerate(tasks):
        x, y = all_examples(task, p, p + i, eq_token)
        task_id = list(OPERATIONS).index(task)
        perm = np.random.default_rng([seed, SPLIT_STREAM, task_id]).permutation(len(y))
        n_train = int(train_frac * len(y))
        if not 0 < n_train < len(y):
            raise ConfigError(
                f"--train-frac: {train_frac:g} of {len(y)} pairs leaves an empty train or "
                "validation set; choose a fraction nearer 0.5"
            )
        tr, va = perm[:n_train], perm[n_train:]
        data.append(TaskData(task, x[tr], y[tr], x[va], y[va]))
    return data


def vocab_size(p: int, n_tasks: int) -> int:
    """Numbers, one token per task, and `=`."""
    return p + n_tasks + 1


class Batches:
    """Training batches as a function of the step: an equal share of every task in each batch.

    With k tasks each step takes `batch_size // k` examples of each; a task whose training set is
    no larger than its share contributes its whole training set (full-batch training). The shares
    walk an endless stream of epochs, or, with `epochs`, one epoch at a time, its last batch the
    remainder (as PyTorch's DataLoader with shuffle=True deals them: 4,656 pairs in batches of 512
    make nine full batches and one of 48).
    """

    def __init__(self, data: list[TaskData], batch_size: int, seed: int, epochs: bool = False):
        self.data, self.seed, self.epochs = data, seed, epochs
        self.share = batch_size // len(data)
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def _perm(self, task: int, epoch: int) -> np.ndarray:
        key = (task, epoch)
        if key not in self._perms:
            if len(self._perms) > 4 * len(self.data):
                self._perms.clear()
            n = len(self.data[task].train_y)
            rng = np.random.default_rng([self.seed, BATCH_STREAM, task, epoch])
            self._perms[key] = rng.permutation(n)
        return self._perms[key]

    def indices(self, task: int, step: int) -> np.ndarray:
        """Rows of task `task`'s training set used at `step` (1-based)."""
        n = len(self.data[task].train_y)
        if self.share >= n:
            return np.arange(n)
        if self.epochs:
            epoch, k = divmod(step - 1, -(-n // self.share))  # steps per epoch: ceil(n / share)
            return self._perm(task, epoch)[k * self.share : (k + 1) * self.share]
        start = (step - 1) * self.share  # position in the endless stream of epochs
        idx = []
        while len(idx) < self.share:
            epoch, offset = divmod(start, n)
            take = min(self.share - len(idx), n - offset)
            idx.extend(self._perm(task, epoch)[offset : offset + take])
            start += take
        return np.asarray(idx)

    def __call__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens (B, 4) and targets (B,) of `step`."""
        xs, ys = [], []
        for t, d in enumerate(self.data):
            i = self.indices(t, step)
            xs.append(d.train_x[i])
            ys.append(d.train_y[i])
        return np.concatenate(xs), np.concatenate(ys)
