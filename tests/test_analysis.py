"""Progress measures (Fourier spectrum, key frequencies, Gini, restricted and excluded loss),
regime rules, and the `analyze` and `phase` commands on tiny runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from clirun import TINY, run_cli

from tinygrok.config import Config, validate
from tinygrok.lab.phase import cell_regime, classify
from tinygrok.measures import (
    fourier_basis,
    frequency_norms,
    gini,
    key_frequencies,
    logit_frequency_norms,
    mean_loss,
    pair_directions,
    pair_grid,
    primitive_root,
    restricted_excluded,
    task_basis,
)


@pytest.mark.parametrize("p", [7, 12, 23, 113])
def test_fourier_basis_is_orthonormal(p):
    basis, freqs = fourier_basis(p)
    assert basis.shape == (p, p)
    np.testing.assert_allclose(basis @ basis.T, np.eye(p), atol=1e-10)
    assert freqs.max() == p // 2 and np.bincount(freqs)[0] == 1


@pytest.mark.parametrize("p, planted", [(23, [7]), (113, [14, 35, 41]), (30, [4, 15])])
def test_planted_frequencies_are_recovered(p, planted):
    rng = np.random.default_rng(0)
    x = np.arange(p)[:, None]
    w = 0.01 * rng.standard_normal((p, 16))  # noise on every frequency
    for k in planted:
        phase = 2 * np.pi * k * x / p
        w += np.cos(phase) * rng.standard_normal(16) + np.sin(phase) * rng.standard_normal(16)
    norms = frequency_norms(w)
    assert norms.shape == (p // 2 + 1,)
    assert key_frequencies(norms) == planted
    assert set(np.argsort(norms)[-len(planted) :]) == set(planted)


def test_flat_spectrum_has_no_key_frequencies():
    w = np.random.default_rng(1).standard_normal((97, 128))  # a fresh embedding: flat spectrum
    assert key_frequencies(frequency_norms(w)) == []


def test_gini_of_one_hot_and_flat_spectra():
    one_hot = np.zeros(57)
    one_hot[14] = 3.0
    assert gini(one_hot) == pytest.approx(56 / 57) and gini(one_hot) > 0.95
    assert gini(np.full(57, 2.5)) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(2)
    assert gini(1 + 0.05 * rng.random(57)) < 0.05
    assert 0.3 < gini(rng.exponential(size=1000)) < 0.7  # exponential: Gini 1/2


def fourier_logits(p: int, freqs: list[int], s: int, scale: float) -> np.ndarray:
    """Logits (p*p, p) of the Fourier circuit: sum over k of cos(w_k (a + s b - c))."""
    a, b = np.divmod(np.arange(p * p), p)
    c = np.arange(p)
    w = 2 * np.pi * np.array(freqs)[:, None, None] / p
    return scale * np.cos(w * ((a + s * b)[None, :, None] - c[None, None, :])).sum(axis=0)


@pytest.mark.parametrize("task, s", [("addition", 1), ("subtraction", -1)])
def test_restricted_loss_of_a_fourier_model_is_low(task, s):
    p, key = 31, [3, 8, 11]
    a, b = np.divmod(np.arange(p * p), p)
    labels = (a + s * b) % p
    rows = np.random.default_rng(3).permutation(p * p)
    train, val = rows[: p * p // 2], rows[p * p // 2 :]
    logits = fourier_logits(p, key, s, scale=10.0)
    assert mean_loss(logits, labels) < 1e-2  # the circuit computes the task
    restricted, excluded = restricted_excluded(logits, labels, train, val, key, s)
    assert restricted < 1e-2  # everything is in the key frequencies' directions
    assert excluded == pytest.approx(np.log(p), rel=1e-6)  # nothing left without them
    # keeping the wrong frequencies leaves nothing either
    wrong, _ = restricted_excluded(logits, labels, train, val, [1, 2], s)
    assert wrong == pytest.approx(np.log(p), rel=1e-6)


def lookup_table(p: int) -> tuple[np.ndarray, ...]:
    """Logits (p*p, p) that memorize half the pairs of a + b mod p (+10 on their answer, random
    elsewhere), the labels, and the train and validation rows."""
    a, b = np.divmod(np.arange(p * p), p)
    labels = (a + b) % p
    rows = np.random.default_rng(4).permutation(p * p)
    train, val = rows[: p * p // 2], rows[p * p // 2 :]
    logits = np.random.default_rng(5).standard_normal((p * p, p))
    logits[train, labels[train]] += 10.0
    return logits, labels, train, val


@pytest.mark.parametrize("s", [1, -1])
def test_key_frequencies_of_the_logits(s):
    p, key = 31, [3, 8, 11]
    noise = 0.3 * np.random.default_rng(6).standard_normal((p * p, p))
    norms = logit_frequency_norms(fourier_logits(p, key, s, scale=1.0) + noise, s)
    assert norms.shape == (p // 2 + 1,)
    assert key_frequencies(norms) == key
    assert key_frequencies(logit_frequency_norms(lookup_table(p)[0], 1)) == []


def test_restricted_loss_of_a_lookup_table_is_high():
    p = 31
    logits, labels, train, val = lookup_table(p)
    restricted, excluded = restricted_excluded(logits, labels, train, val, [3, 8], 1)
    # A table of the true answers is (1/p) sum_k cos(w_k (a + b - c)) over all p frequencies, so
    # two frequencies keep about 2 * 2/p of it on half the pairs: a logit of ~0.6, not ~10.
    assert restricted > 0.75 * np.log(p)
    assert excluded < 0.1  # removing two frequencies barely touches a lookup table


def test_pair_directions_are_orthonormal():
    d = pair_directions(12, [1, 5, 6], 1)  # k = 6 = p/2 has no sine
    assert d.shape == (5, 144)
    np.testing.assert_allclose(d @ d.T, np.eye(5), atol=1e-10)


def summary(mem, gen, status="finished"):
    return {"memorized_step": mem, "generalized_step": gen, "status": status}


@pytest.mark.parametrize(
    "mem, gen, status, regime",
    [
        (100, 150, "finished", "comprehension"),  # delay 50 < 1 x 100
        (100, 200, "finished", "grokking"),  # delay 100 >= 1 x 100
        (1400, 9400, "finished", "grokking"),  # Nanda et al.'s 30% run
        (300, 200, "finished", "comprehension"),  # generalized before memorizing
        (None, 500, "finished", "comprehension"),
        (100, None, "finished", "memorization"),
        (None, None, "finished", "confusion"),
        (100, 5000, "diverged", "confusion"),
        (10, 30, "finished", "comprehension"),  # delay 20 is within 2 evaluations (eval 10)
    ],
)
def test_regime_rules(mem, gen, status, regime):
    assert classify(summary(mem, gen, status), eval_every=10) == regime


def test_grok_ratio_and_cells():
    assert classify(summary(100, 250), grok_ratio=2.0) == "comprehension"
    assert classify(summary(100, 300), grok_ratio=2.0) == "grokking"
    assert cell_regime(["grokking", "memorization", "grokking"]) == "grokking"
    assert cell_regime(["memorization", "grokking"]) == "grokking"  # a tie: earlier in REGIMES


SMALL = [*TINY, "--steps", "40", "--patience", "0"]


def test_snapshot_every_must_follow_evaluations(tmp_path):
    r = run_cli("run", "addition", *SMALL, "--snapshot-every", "15", "--out", tmp_path / "r")
    assert r.code == 2 and len(r.err_lines) == 1 and "--snapshot-every" in r.err


@pytest.mark.slow
def test_analyze_a_tiny_run(tmp_path):
    run = tmp_path / "run"
    r = run_cli("run", "addition", *SMALL, "--snapshot-every", "20", "--out", run)
    assert r.code == 0, r.err
    steps = sorted(int(f.stem[5:]) for f in (run / "snapshots").glob("step_*.npz"))
    assert steps == [0, 20, 40]
    r = run_cli("analyze", run, "--threads", "1")
    assert r.code == 0, r.err
    a = json.loads((run / "analysis.json").read_text())
    assert a["steps"] == steps
    for key in ("restricted_loss", "excluded_loss", "gini_embedding", "gini_unembedding"):
        assert len(a[key]) == 3 and all(np.isfinite(a[key]))
    assert len(a["embedding_spectrum"][0]) == 11 // 2 + 1
    assert set(a["weight_norms"]) == {"embedding", "blocks.0", "unembedding", "total"}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    by_step = {rec["step"]: rec for rec in records}
    for i, step in enumerate(steps):  # the snapshots are the parameters the run evaluated
        assert a["train_loss"][i] == pytest.approx(by_step[step]["train_loss"], rel=1e-4)
        assert a["weight_norms"]["total"][i] == pytest.approx(
            by_step[step]["weight_norm"], rel=1e-5
        )
    for name in a["figures"]:
        assert (run / name).stat().st_size > 10_000
    assert "snapshots, steps 0 to 40" in r.out


def test_analyze_errors(tmp_path):
    run = tmp_path / "run"
    assert run_cli("run", "addition", *SMALL, "--out", run).code == 0
    r = run_cli("analyze", run)
    assert r.code == 2 and r.err_lines == [
        f"tinygrok: error: RUN_DIR: {run} has no parameter snapshots; train it with "
        "--snapshot-every N"
    ]
    r = run_cli("analyze", tmp_path / "nothing")
    assert r.code == 2 and "holds no run" in r.err


@pytest.mark.slow
def test_phase_draws_a_grid(tmp_path):
    out = tmp_path / "phase"
    r = run_cli(
        "phase", "addition", *SMALL, "--grid", "weight_decay=0,1", "--grid", "train_frac=0.5",
        "--out", out,
    )  # fmt: skip
    assert r.code == 0, r.err
    doc = json.loads((out / "phase.json").read_text())
    assert [c["values"] for c in doc["cells"]] == [
        {"weight_decay": 0.0, "train_frac": 0.5},
        {"weight_decay": 1.0, "train_frac": 0.5},
    ]
    for cell in doc["cells"]:
        run = cell["runs"][0]
        assert cell["regime"] == classify(run, eval_every=10)
    assert (out / "phase.png").stat().st_size > 10_000


@pytest.mark.parametrize("p, g", [(7, 3), (11, 2), (23, 5), (97, 5), (113, 3)])
def test_primitive_root_generates_every_nonzero_number(p, g):
    assert primitive_root(p) == g
    basis = task_basis("division", p)
    assert basis.generator == g and basis.n == p - 1 and basis.s == -1
    assert sorted(basis.elements.tolist()) == list(range(1, p))
    assert basis.elements[1] == g and basis.elements[0] == 1


def test_only_group_laws_have_a_basis():
    assert task_basis("addition", 12).kind == "additive"
    assert task_basis("multiplication", 12) is None  # the nonzero numbers mod 12 are no group
    assert task_basis("multiplication", 13).s == 1
    assert task_basis("x2+y2", 97) is None and task_basis("s5", 120) is None


def multiplicative_logits(p: int, freqs: list[int], s: int, scale: float):
    """The Fourier circuit in discrete-log coordinates: logits (n*n, p) of every pair of nonzero
    numbers (row i*n + j for the numbers g^i, g^j), the number g^m's column
    scale * sum_k cos(w_k (i + s j - m)), the number 0's column far below; and the labels."""
    basis = task_basis("multiplication" if s == 1 else "division", p)
    n = basis.n
    i, j = np.divmod(np.arange(n * n), n)
    w = 2 * np.pi * np.array(freqs)[:, None, None] / n
    m = np.arange(n)
    logits = np.full((n * n, p), -10.0)
    circuit = scale * np.cos(w * ((i + s * j)[None, :, None] - m[None, None, :])).sum(axis=0)
    logits[:, basis.elements] = circuit
    labels = basis.elements[(i + s * j) % n]
    return logits, labels


@pytest.mark.parametrize("s", [1, -1])
def test_planted_multiplicative_frequencies_are_found_and_restrict(s):
    p, key = 31, [2, 7, 11]
    logits, labels = multiplicative_logits(p, key, s, scale=10.0)
    assert mean_loss(logits, labels) < 1e-2  # it computes a * b (or a / b)
    noise = 0.3 * np.random.default_rng(7).standard_normal(logits.shape)
    assert (
        key_frequencies(logit_frequency_norms(multiplicative_logits(p, key, s, 1.0)[0] + noise, s))
        == key
    )
    rows = np.random.default_rng(8).permutation(len(labels))
    train, val = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    restricted, excluded = restricted_excluded(logits, labels, train, val, key, s)
    assert restricted < 1e-2
    assert excluded > 0.9 * np.log(p - 1)  # without its frequencies it knows nothing
    wrong, _ = restricted_excluded(logits, labels, train, val, [1, 3], s)
    assert wrong > 0.9 * np.log(p - 1)


def test_an_embedding_sparse_in_discrete_log_is_flat_in_the_additive_basis():
    """Number g^i embedded as cos and sin of w_k i (k in 3, 9): the multiplicative spectrum has
    those two frequencies, the additive one spreads over all of them."""
    p = 97
    basis = task_basis("division", p)
    n = basis.n
    i = np.arange(n)
    cols = [f(2 * np.pi * k * i / n) for k in (3, 9) for f in (np.cos, np.sin)]
    w = np.zeros((p, 16))
    w[basis.elements, :4] = np.stack(cols, axis=1)
    w[0] = 0.1  # the number 0 stands apart
    mult = frequency_norms(w[basis.elements])
    add = frequency_norms(w[:p])
    assert key_frequencies(mult) == [3, 9]
    assert gini(mult) > 0.9 and gini(add) < 0.5
    assert key_frequencies(add) == []


def test_pair_grid_of_division_covers_the_nonzero_pairs_once():
    cfg = validate(Config(tasks=("division",), p=11, d_model=8, heads=2, d_mlp=16))
    grid = pair_grid(cfg)
    n = 10
    assert grid.tokens.shape == (n * n, 4) and grid.basis.generator == 2
    a, b = grid.tokens[:, 0], grid.tokens[:, 2]
    assert (a * pow_inverse(b, 11) % 11 == grid.labels).all()
    rows = np.concatenate([grid.train_rows, grid.val_rows])
    np.testing.assert_array_equal(np.sort(rows), np.arange(n * n))  # a = 0 pairs left out


def pow_inverse(b: np.ndarray, p: int) -> np.ndarray:
    return np.array([pow(int(x), p - 2, p) for x in b])


@pytest.mark.slow
def test_analyze_a_division_run_in_both_bases(tmp_path):
    run = tmp_path / "run"
    r = run_cli("run", "division", *SMALL, "--snapshot-every", "20", "--out", run)
    assert r.code == 0, r.err
    assert run_cli("analyze", run, "--threads", "1").code == 0
    a = json.loads((run / "analysis.json").read_text())
    assert a["basis"] == "discrete log base 2 (10 nonzero elements)"
    assert a["key_frequencies_from"] == "logits"
    assert len(a["embedding_spectrum"][0]) == 10 // 2 + 1
    assert len(a["embedding_spectrum_additive"][0]) == 11 // 2 + 1
    for key in ("restricted_loss", "excluded_loss", "gini_embedding_additive"):
        assert len(a[key]) == 3 and all(np.isfinite(a[key]))
