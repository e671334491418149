"""The data: a few equations of every task, as the model sees them (tokens) and as arithmetic.

An example is the four tokens [a, op, b, =]; the answer c is a class in 0..p-1 that the model
reads off its output at the last position. Numbers are tokens 0..p-1, the run's i-th task has the
operation token p + i, and `=` comes last, so a run with k tasks has p + k + 1 tokens.

Each task's pairs are split by a seeded permutation: the first train_frac go to training, the rest
to validation. The four core tasks are checked here with arithmetic written independently of the
task table (c - b = a for addition, c * b = a for division...).

    python examples/01_data.py [--p 7] [--quick]
"""

from __future__ import annotations

import argparse

import numpy as np

from tinygrok.tasks import FIXED_ELEMENTS, OPERATIONS, S5_PERMS, make_dataset, vocab_size

SYMBOLS = {"addition": "+", "subtraction": "-", "multiplication": "*", "division": "/"}

# An independent check of c = a op b for each core task: the inverse operation gives a back.
INVERSES = {
    "addition": lambda a, b, c, p: (c - b) % p == a,
    "subtraction": lambda a, b, c, p: (c + b) % p == a,
    "multiplication": lambda a, b, c, p: c == sum(a for _ in range(b)) % p,
    "division": lambda a, b, c, p: (c * b) % p == a,
}


def as_arithmetic(task: str, a: int, b: int, c: int, p: int) -> str:
    """One example written the way a person reads it."""
    if task in SYMBOLS:
        return f"{a} {SYMBOLS[task]} {b} = {c}  (mod {p})"
    if task in FIXED_ELEMENTS:
        return f"x = {S5_PERMS[a]}, y = {S5_PERMS[b]}: {S5_PERMS[c]}"
    return f"x = {a}, y = {b}: {c}  (mod {p})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--p", type=int, default=7, help="a prime modulus (S5 tasks use 120)")
    parser.add_argument("--quick", action="store_true", help="two equations per task, not four")
    args = parser.parse_args()
    shown = 2 if args.quick else 4
    checked = 0
    for task, (_, _, _, description) in OPERATIONS.items():
        p = FIXED_ELEMENTS.get(task, args.p)
        (data,) = make_dataset((task,), p, train_frac=0.5, seed=0)
        n_train, n_val = len(data.train_y), len(data.val_y)
        print(f"\n{task}: {description}   (p = {p}, {n_train + n_val} pairs: ", end="")
        print(f"{n_train} train, {n_val} validation; {vocab_size(p, 1)} tokens)")
        rows = np.linspace(0, n_train - 1, shown).astype(int)  # spread over the training set
        for tokens, c in zip(data.train_x[rows], data.train_y[rows], strict=True):
            a, op, b, eq = (int(t) for t in tokens)
            assert (op, eq) == (p, p + 1), "op and = tokens follow the numbers"
            equation = as_arithmetic(task, a, b, int(c), p)
            print(f"  tokens {[a, op, b, eq]!s:22s} -> {int(c):3d}    {equation}")
        if task in INVERSES:
            for tokens, c in zip(data.train_x, data.train_y, strict=True):
                a, _, b, _ = (int(t) for t in tokens)
                assert INVERSES[task](a, b, int(c), p), (task, a, b, c)
            checked += n_train
    two = make_dataset(("addition", "division"), args.p, 0.5, seed=0)
    print(
        f"\nTwo tasks in one run share the numbers; their op tokens are {args.p} and {args.p + 1}"
    )
    print(f"and `=` is {args.p + 2}: addition {two[0].train_x[0].tolist()}, ", end="")
    print(f"division {two[1].train_x[0].tolist()}")
    assert two[0].train_x[0][1] == args.p and two[1].train_x[0][1] == args.p + 1
    print(f"\nchecked {checked} training labels of the four core tasks by their inverse operation")


if __name__ == "__main__":
    main()
