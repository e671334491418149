"""Tasks: every label against Python's own arithmetic, the token layout, the seeded split, and the
batches (equal shares per task, a pure function of (seed, step), epochs that visit every example
once, full batch when the share covers the training set)."""

from __future__ import annotations

import numpy as np
import pytest

from tinygrok.tasks import Batches, all_examples, make_dataset, vocab_size

CORE = ("addition", "subtraction", "multiplication", "division")


def python_label(task: str, a: int, b: int, p: int) -> int:
    """The answer by Python's integer arithmetic (division through pow's modular inverse)."""
    if task == "addition":
        return (a + b) % p
    if task == "subtraction":
        return (a - b) % p
    if task == "multiplication":
        return (a * b) % p
    return a * pow(b, -1, p) % p


def pairs_of(x: np.ndarray) -> set[tuple[int, int]]:
    """The (a, b) pairs of token rows [a, op, b, =]."""
    return {(int(a), int(b)) for a, b in x[:, [0, 2]]}


@pytest.mark.parametrize("p", [7, 97])
@pytest.mark.parametrize("task", CORE)
def test_every_label_matches_python(task, p):
    op, eq = p, p + 1
    x, y = all_examples(task, p, op, eq)
    b_values = range(1, p) if task == "division" else range(p)
    expected_pairs = [(a, b) for a in range(p) for b in b_values]
    assert x.shape == (len(expected_pairs), 4)
    assert [(int(a), int(b)) for a, b in x[:, [0, 2]]] == expected_pairs
    assert (x[:, 1] == op).all() and (x[:, 3] == eq).all()
    for (a, b), c in zip(expected_pairs, y.tolist(), strict=True):
        assert 0 <= c < p
        assert c == python_label(task, a, b, p), (task, a, b, c)
        if task == "division":
            assert (c * b) % p == a


def test_token_layout_of_a_multi_task_run():
    p, tasks = 11, ("subtraction", "division")
    data = make_dataset(tasks, p, 0.5, seed=0)
    eq = p + len(tasks)
    assert vocab_size(p, len(tasks)) == eq + 1
    for i, d in enumerate(data):
        x = np.concatenate([d.train_x, d.val_x])
        assert ((x[:, 0] >= 0) & (x[:, 0] < p) & (x[:, 2] >= 0) & (x[:, 2] < p)).all()
        assert (x[:, 1] == p + i).all(), "one operation token per task, in the order given"
        assert (x[:, 3] == eq).all()
    assert (np.concatenate([data[1].train_x, data[1].val_x])[:, 2] != 0).all(), "division: b != 0"


@pytest.mark.parametrize("task", CORE)
@pytest.mark.parametrize("train_frac", [0.3, 0.5])
def test_split_is_disjoint_and_covers_every_pair(task, train_frac):
    p = 13
    (d,) = make_dataset((task,), p, train_frac, seed=4)
    x_all, y_all = all_examples(task, p, p, p + 1)
    train, val = pairs_of(d.train_x), pairs_of(d.val_x)
    assert len(train) == len(d.train_x) == int(train_frac * len(y_all))
    assert len(val) == len(d.val_x) == len(y_all) - len(train)
    assert not train & val
    assert train | val == pairs_of(x_all)
    label = dict(zip(map(tuple, x_all[:, [0, 2]].tolist()), y_all.tolist(), strict=True))
    for x, y in ((d.train_x, d.train_y), (d.val_x, d.val_y)):
        assert [label[(a, b)] for a, b in x[:, [0, 2]].tolist()] == y.tolist()


def test_split_depends_on_the_seed_only():
    tasks, p = ("addition", "division"), 13
    first, again, other = (make_dataset(tasks, p, 0.5, s) for s in (3, 3, 4))
    for d1, d2, d3 in zip(first, again, other, strict=True):
        np.testing.assert_array_equal(d1.train_x, d2.train_x)
        np.testing.assert_array_equal(d1.val_y, d2.val_y)
        assert pairs_of(d1.train_x) != pairs_of(d3.train_x)


def test_split_of_a_task_is_the_same_alone_and_beside_others():
    p = 13
    (alone,) = make_dataset(("division",), p, 0.5, seed=2)
    beside = make_dataset(("addition", "multiplication", "division"), p, 0.5, seed=2)[2]
    # the operation and `=` tokens move with the number of tasks; the pairs and answers must not
    np.testing.assert_array_equal(alone.train_x[:, [0, 2]], beside.train_x[:, [0, 2]])
    np.testing.assert_array_equal(alone.train_y, beside.train_y)
    np.testing.assert_array_equal(alone.val_x[:, [0, 2]], beside.val_x[:, [0, 2]])


def test_multi_task_batches_hold_an_equal_share_of_each_task():
    p, tasks = 11, ("addition", "subtraction", "division")
    data = make_dataset(tasks, p, 0.5, seed=0)
    batches = Batches(data, batch_size=31, seed=0)  # 31 // 3 = 10 of each
    for step in (1, 2, 17):
        x, y = batches(step)
        assert x.shape == (30, 4) and y.shape == (30,)
        counts = [int((x[:, 1] == p + i).sum()) for i in range(len(tasks))]
        assert counts == [10, 10, 10]
        # each row is one of its task's training examples, with its own answer
        for i, d in enumerate(data):
            train = dict(zip(map(tuple, d.train_x.tolist()), d.train_y.tolist(), strict=True))
            rows = x[:, 1] == p + i
            assert [train[tuple(r)] for r in x[rows].tolist()] == y[rows].tolist()


def test_batches_are_a_pure_function_of_seed_and_step():
    data = make_dataset(("addition", "multiplication"), 13, 0.5, seed=0)
    walked = Batches(data, 24, seed=5)
    in_order = {s: walked(s) for s in range(1, 40)}  # crosses several epochs and cache clears
    for s in (39, 1, 20, 7):
        fresh = Batches(data, 24, seed=5)(s)
        np.testing.assert_array_equal(fresh[0], in_order[s][0])
        np.testing.assert_array_equal(fresh[1], in_order[s][1])
    other = Batches(data, 24, seed=6)
    assert any((other(s)[0] != in_order[s][0]).any() for s in range(1, 5))


def test_an_epoch_visits_every_training_example_once():
    (d,) = make_dataset(("subtraction",), 13, 0.5, seed=1)
    n = len(d.train_y)  # 84 examples, a share of 25 does not divide it: batches cross epochs
    batches = Batches([d], batch_size=25, seed=1)
    stream = np.concatenate([batches.indices(0, s) for s in range(1, 3 * n // 25 + 1)])
    epochs = [stream[k * n : (k + 1) * n] for k in range(len(stream) // n)]
    assert len(epochs) >= 2
    for e in epochs:
        np.testing.assert_array_equal(np.sort(e), np.arange(n))
    assert (epochs[0] != epochs[1]).any(), "every epoch is a fresh permutation"


def test_full_batch_when_the_share_covers_the_training_set():
    data = make_dataset(("addition", "division"), 7, 0.5, seed=0)
    sizes = [len(d.train_y) for d in data]  # 24 and 21
    batches = Batches(data, batch_size=2 * max(sizes), seed=0)
    for step in (1, 2, 9):
        x, y = batches(step)
        assert len(y) == sum(sizes)
        np.testing.assert_array_equal(x, np.concatenate([d.train_x for d in data]))
        np.testing.assert_array_equal(y, np.concatenate([d.train_y for d in data]))


def test_epoch_batches_deal_each_epoch_with_a_smaller_last_batch():
    """As PyTorch's DataLoader(shuffle=True): ceil(n / batch) steps an epoch, the last one the
    remainder, every example once an epoch, each epoch a fresh permutation."""
    (d,) = make_dataset(("subtraction",), 13, 0.5, seed=1)
    n = len(d.train_y)  # 84 = 3 * 25 + 9
    batches = Batches([d], batch_size=25, seed=1, epochs=True)
    sizes = [len(batches.indices(0, s)) for s in range(1, 9)]
    assert sizes == [25, 25, 25, 9] * 2
    first = np.concatenate([batches.indices(0, s) for s in range(1, 5)])
    second = np.concatenate([batches.indices(0, s) for s in range(5, 9)])
    for e in (first, second):
        np.testing.assert_array_equal(np.sort(e), np.arange(n))
    assert (first != second).any()
    # the same permutations as the stream, dealt another way
    np.testing.assert_array_equal(first[:25], Batches([d], 25, seed=1).indices(0, 1))
