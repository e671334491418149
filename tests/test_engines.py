"""The two engines train the same model: a few steps of a small config agree between numba and
numpy up to rounding, and the numba engine repeats itself exactly for the same seed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinygrok.config import Config, validate
from tinygrok.fast import evaluate, loss_and_grads
from tinygrok.optim import learning_rate, make_optimizer
from tinygrok.params import Params, init_params
from tinygrok.tasks import Batches, make_dataset
from tinygrok.threads import set_threads

STEPS = 6


def small(**changes) -> Config:
    """Two layers (so both the full and the last-position-only block run), tiny widths."""
    base = Config(p=23, d_model=32, heads=4, d_mlp=64, batch_size=64, lr=3e-3, warmup_steps=2)
    return validate(base.replace(**changes))


def train_steps(cfg: Config, engine: str, steps: int = STEPS) -> tuple[list[float], Params]:
    """The losses of `steps` optimizer steps, and the parameters after them."""
    cfg = cfg.replace(engine=engine)
    data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
    batches = Batches(data, cfg.batch_size, cfg.seed)
    params, _ = init_params(cfg)
    grads = Params.zeros(params.shapes, params.flat.dtype)
    opt = make_optimizer(cfg, params.flat.size)
    losses = []
    for step in range(1, steps + 1):
        tokens, targets = batches(step)
        losses.append(loss_and_grads(params, tokens, targets, cfg, grads))
        opt.step(params.flat, grads.flat, learning_rate(cfg, step))
    return losses, params


CONFIGS = [
    {},
    {"dtype": "float64"},
    {"activation": "relu", "layer_norm": False},
    {"tasks": ("addition", "subtraction")},
]


def rtol_of(cfg: Config) -> float:
    return 1e-10 if cfg.dtype == "float64" else 1e-4


@pytest.mark.parametrize("changes", CONFIGS)
def test_gradients_agree(changes, single_thread):
    cfg = small(**changes)
    data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
    tokens, targets = Batches(data, cfg.batch_size, cfg.seed)(1)
    params, _ = init_params(cfg)
    grads = {e: Params.zeros(params.shapes, params.flat.dtype) for e in ("numba", "numpy")}
    loss = {
        e: loss_and_grads(params, tokens, targets, cfg.replace(engine=e), grads[e]) for e in grads
    }
    rtol = rtol_of(cfg)
    assert loss["numba"] == pytest.approx(loss["numpy"], rel=rtol)
    for name in params.shapes:
        want = grads["numpy"][name]
        scale = np.abs(want).max(initial=1e-3)
        np.testing.assert_allclose(grads["numba"][name], want, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("changes", CONFIGS + [{"optimizer": "sgd", "lr": 0.1}])
def test_training_agrees(changes, single_thread):
    cfg = small(**changes)
    losses_nb, params_nb = train_steps(cfg, "numba")
    losses_np, params_np = train_steps(cfg, "numpy")
    rtol = rtol_of(cfg)
    np.testing.assert_allclose(losses_nb, losses_np, rtol=rtol)
    assert losses_nb[-1] < losses_nb[0]  # the steps did train
    if cfg.optimizer == "adamw" and cfg.dtype == "float32":
        # AdamW divides each gradient coordinate by its own scale: where a gradient is rounding
        # noise (unused embedding rows), float32 rounding flips the step's sign, so parameters
        # are compared in float64 and under SGD only; the losses above still must agree.
        return
    scale = np.abs(params_np.flat).max()
    np.testing.assert_allclose(params_nb.flat, params_np.flat, rtol=rtol, atol=rtol * scale)


def test_evaluation_agrees(single_thread):
    cfg = small()
    params, _ = init_params(cfg)
    data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)[0]
    x, y = data.val_x, data.val_y
    loss_nb, acc_nb = evaluate(params, x, y, cfg.replace(engine="numba"), chunk=100)
    loss_np, acc_np = evaluate(params, x, y, cfg.replace(engine="numpy"), chunk=100)
    assert loss_nb == pytest.approx(loss_np, rel=1e-5)
    assert acc_nb == acc_np


def test_numba_engine_is_deterministic():
    """Same seed, same threads (all cores here): identical losses and parameters."""
    cfg = small()
    losses_a, params_a = train_steps(cfg, "numba")
    losses_b, params_b = train_steps(cfg, "numba")
    assert losses_a == losses_b
    assert np.array_equal(params_a.flat, params_b.flat)


@pytest.mark.slow
@pytest.mark.parity
def test_matches_pytorch_autograd():
    """Both engines' gradients equal PyTorch autograd's on the same model (float64), the model
    that benchmarks/step_speed.py times against."""
    torch = pytest.importorskip("torch")
    path = Path(__file__).parents[1] / "benchmarks" / "torch_reference.py"
    spec = importlib.util.spec_from_file_location("torch_reference", path)
    torch_reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(torch_reference)
    cfg = small(dtype="float64")
    params, _ = init_params(cfg)
    params.flat += 0.1 * np.random.default_rng(1).standard_normal(params.flat.size)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for engine in ("numba", "numpy"):
            assert (
                torch_reference.check_same_model(cfg.replace(engine=engine), params, tol=1e-9)
                < 1e-9
            )
    finally:
        torch.set_default_dtype(before)


@pytest.mark.slow
def test_profile_step_times_every_kind_of_work():
    """benchmarks/profile_step.py's timers reach every function the step calls: no kind of work
    reads 0 ms in either engine (a renamed layer function would), nor moves no bytes."""
    root = Path(__file__).parents[1]
    out = subprocess.run(
        [sys.executable, "benchmarks/profile_step.py", "--steps", "1"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    start = next(i for i, line in enumerate(out) if line.split() == ["numba", "numpy"]) + 1
    rows = out[start : start + 9]  # seven kinds, everything else, step
    assert [r.split()[0] for r in rows[-2:]] == ["everything", "step"]
    for row in rows:
        numba_ms, numpy_ms = map(float, row.split()[-2:])
        assert numba_ms > 0 and numpy_ms > 0, row
    # the floor table: every kind of kernel work moved bytes and made calls
    start = next(i for i, line in enumerate(out) if line.split()[:2] == ["numba", "floor"]) + 1
    floors = out[start : start + 7]  # six kinds of kernel work, all kernels
    assert floors[-1].startswith("all kernels")
    for row in floors:
        _, floor, megabytes, calls = map(float, row.split()[-4:])
        assert floor > 0 and megabytes > 0 and calls >= 1, row


def test_set_threads_sets_blas():
    """--threads N limits BLAS (the kernels are serial), and the counts returned are what
    config.json records."""
    before = set_threads(None)
    try:
        assert set_threads(1) == {"blas": 1, "numba": 1}
        assert set_threads(None) == {"blas": 1, "numba": 1}
        assert set_threads(2)["blas"] == min(2, os.cpu_count())
    finally:
        set_threads(before["blas"])


@pytest.mark.slow
def test_a_run_on_fresh_kernels_is_the_run_on_cached_ones_and_resumes_across(tmp_path):
    """The numba engine's numbers do not depend on whether its kernels were just compiled or
    loaded from numba's on-disk cache: a run in a process that compiles into an empty cache, the
    same run in a process that loads from it, and a run started on fresh kernels and resumed on
    cached ones end with the same files."""
    from clirun import PYTHON_MAIN, TINY, assert_same_run

    run = ["run", "division", *TINY, "--engine", "numba", "--threads", "1", "--patience", "0"]

    def tinygrok(cache: str, *args: str | Path) -> None:
        env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / cache)}
        done = subprocess.run(PYTHON_MAIN + [str(a) for a in args], env=env, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()

    tinygrok("cache", *run, "--steps", "60", "--out", tmp_path / "fresh")
    assert any((tmp_path / "cache").rglob("*.nbc")), "nothing was cached"
    tinygrok("cache", *run, "--steps", "60", "--out", tmp_path / "cached")
    assert_same_run(tmp_path / "fresh", tmp_path / "cached")
    tinygrok("other", *run, "--steps", "30", "--out", tmp_path / "across")
    tinygrok("other", "resume", tmp_path / "across", "--steps", "60")
    assert_same_run(tmp_path / "across", tmp_path / "fresh")
