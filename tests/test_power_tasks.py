"""Power et al.'s other operations against direct computation, the S5 tasks against
itertools.permutations, the presets, and `tinygrok tasks`."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from clirun import TINY, run_cli

from tinygrok.config import PRESETS, Config, from_preset
from tinygrok.errors import ConfigError
from tinygrok.tasks import OPERATIONS, S5_PERMS, all_examples, canonical_task, make_dataset

POLYNOMIALS = {
    "x2+y2": lambda x, y: x**2 + y**2,
    "x2+xy+y2": lambda x, y: x**2 + x * y + y**2,
    "x2+xy+y2+x": lambda x, y: x**2 + x * y + y**2 + x,
    "x3+xy": lambda x, y: x**3 + x * y,
    "x3+xy2+y": lambda x, y: x**3 + x * y**2 + y,
}


@pytest.mark.parametrize("p", [7, 23])
@pytest.mark.parametrize("task", list(POLYNOMIALS))
def test_polynomials_match_direct_computation(task, p):
    x, y = all_examples(task, p, p, p + 1)
    assert len(y) == p * p
    for (a, _, b, _), c in zip(x, y, strict=True):
        assert c == POLYNOMIALS[task](int(a), int(b)) % p


@pytest.mark.parametrize("p", [7, 13])
def test_div_if_odd_matches_direct_computation(p):
    x, y = all_examples("div-if-odd", p, p, p + 1)
    assert len(y) == p * (p - 1)  # y = 0 is left out, as in division
    for (a, _, b, _), c in zip(x, y, strict=True):
        a, b = int(a), int(b)
        assert b != 0
        if b % 2:
            # x / y is the z with z * y = x mod p, found by search
            assert c == next(z for z in range(p) if z * b % p == a)
        else:
            assert c == (a - b) % p


def s5_direct(task: str, x: tuple, y: tuple) -> tuple:
    """The S5 answer with numpy fancy indexing: (u o v)[i] = u[v[i]] is u[v]."""
    x, y = np.array(x), np.array(y)
    x_inv = np.argsort(x)
    return tuple({"s5": x[y], "s5-conj": x[y][x_inv], "s5-xyx": x[y][x]}[task])


@pytest.mark.parametrize("task", ["s5", "s5-conj", "s5-xyx"])
def test_s5_tasks_match_itertools_permutations(task):
    perms = list(itertools.permutations(range(5)))
    assert list(S5_PERMS) == perms
    x, y = all_examples(task, 120, 120, 121)
    assert x.shape == (14_400, 4) and y.shape == (14_400,)
    for (a, _, b, _), c in zip(x, y, strict=True):
        assert perms[c] == s5_direct(task, perms[a], perms[b])


def test_s5_group_facts():
    _, y = all_examples("s5", 120, 120, 121)
    table = y.reshape(120, 120)  # table[a, b] = a o b
    identity = S5_PERMS.index(tuple(range(5)))
    assert (table[identity] == np.arange(120)).all() and (
        table[:, identity] == np.arange(120)
    ).all()
    for row in table:  # a Latin square: every product appears once in each row and column
        assert sorted(row) == list(range(120))
    assert (table != table.T).any()  # S5 is not commutative
    _, conj = all_examples("s5-conj", 120, 120, 121)
    assert (conj.reshape(120, 120)[:, identity] == identity).all()  # x e x^-1 = e


def test_core_tasks_keep_their_table_ids_and_splits():
    assert list(OPERATIONS)[:4] == ["addition", "subtraction", "multiplication", "division"]
    alone = make_dataset(("division",), 13, 0.5, 3)[0]
    beside = make_dataset(("division", "x2+y2"), 13, 0.5, 3)[0]
    assert (alone.train_y == beside.train_y).all()


@pytest.mark.parametrize(
    "typed, name",
    [("x^2+y^2", "x2+y2"), ("X3+XY", "x3+xy"), ("s5-compose", "s5"), ("S5-Conj", "s5-conj")],
)
def test_names_users_type(typed, name):
    assert canonical_task(typed) == name


def test_s5_fixes_p_and_checks_it():
    assert from_preset("power", ("s5",)).p == 120
    assert from_preset("nanda", ("s5-xyx",)).p == 120  # over the preset's p 113
    with pytest.raises(ConfigError, match="--p: S5 tasks have 120 elements"):
        from_preset("power", ("s5",), p=97)
    with pytest.raises(ConfigError, match="--p: div-if-odd needs a prime"):
        from_preset("power", ("div-if-odd",), p=21)


def test_presets():
    nanda = from_preset("nanda")
    assert (nanda.tasks, nanda.p, nanda.train_frac, nanda.layers) == (("addition",), 113, 0.3, 1)
    assert (nanda.layer_norm, nanda.activation, nanda.weight_decay) == (False, "relu", 1.0)
    assert (nanda.d_model, nanda.heads, nanda.d_mlp, nanda.lr) == (128, 4, 512, 1e-3)
    for frac in (0.3, 0.95):  # full batch at any train fraction
        n_train = len(make_dataset(nanda.tasks, nanda.p, frac, 0)[0].train_y)
        assert nanda.batch_size >= n_train
    assert from_preset("power") == from_preset("power", ("division",)) == Config()
    tiny = from_preset("tiny", train_frac=0.5)  # what the user gives wins over the preset
    assert tiny.train_frac == 0.5 and tiny.p == PRESETS["tiny"]["p"]
    with pytest.raises(ConfigError, match="--preset"):
        from_preset("huge")


def test_cli_preset_and_explicit_options(tmp_path):
    args = ["--steps", "20", "--eval-every", "10", "--p", "11", "--engine", "numpy", "-q"]
    r = run_cli("run", "--preset", "tiny", *args, "--out", tmp_path / "r")
    assert r.code == 0, r.err
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert (cfg["p"], cfg["steps"], cfg["d_model"], cfg["tasks"]) == (11, 20, 32, ["addition"])
    r = run_cli("run", *TINY, "--steps", "5", "--out", tmp_path / "none")
    assert r.code == 2
    assert r.err_lines == ["tinygrok: error: TASK: give at least one task (see `tinygrok tasks`)"]


def test_tasks_command_lists_every_task():
    r = run_cli("tasks")
    assert r.code == 0
    lines = r.out.splitlines()[1:]
    assert len(lines) == len(OPERATIONS)
    for line, (name, (_, _, _, description)) in zip(lines, OPERATIONS.items(), strict=True):
        assert line.split()[0] == name and description in line
