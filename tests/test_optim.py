"""AdamW and SGD against PyTorch's update rules written out independently here, against their
closed forms for a constant gradient, and (when torch is installed) against torch.optim; the
warmup schedule."""

from __future__ import annotations

import numpy as np
import pytest

from tinygrok.config import ENGINES, Config
from tinygrok.optim import SGD, AdamW, learning_rate, make_optimizer

pytestmark = pytest.mark.usefixtures("single_thread")
engines = pytest.mark.parametrize("engine", ENGINES)
N = 11
RTOL = 1e-12  # float64; the numba kernels may reassociate, so not bit-exact


def gradients(steps: int, seed: int = 0) -> list[np.ndarray]:
    """A different random gradient for every step, some entries large, some tiny."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(N) * 10.0 ** rng.integers(-4, 2, N) for _ in range(steps)]


def torch_adamw(p, grads, lrs, beta1, beta2, eps, wd):
    """torch.optim.AdamW's single-tensor step (torch/optim/adamw.py), in NumPy."""
    p, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs, strict=True), start=1):
        p = p * (1 - lr * wd)
        m = m + (g - m) * (1 - beta1)  # exp_avg.lerp_(grad, 1 - beta1)
        v = v * beta2 + (1 - beta2) * g * g
        bias_correction1, bias_correction2 = 1 - beta1**t, 1 - beta2**t
        denom = np.sqrt(v) / np.sqrt(bias_correction2) + eps
        p = p - (lr / bias_correction1) * m / denom
    return p


def torch_sgd(p, grads, lrs, momentum, wd):
    """torch.optim.SGD's step with momentum, no dampening, no Nesterov, in NumPy."""
    p, buf = p.copy(), None
    for g, lr in zip(grads, lrs, strict=True):
        d = g + wd * p
        buf = d.copy() if buf is None else momentum * buf + d
        p = p - lr * buf
    return p


def run(opt, p0, grads, lrs) -> np.ndarray:
    p = p0.copy()
    for g, lr in zip(grads, lrs, strict=True):
        opt.step(p, g.copy(), lr)
    return p


@engines
@pytest.mark.parametrize("wd", [0.0, 1.0])
def test_adamw_follows_pytorch_step_by_step(engine, wd):
    cfg = Config(beta1=0.9, beta2=0.98, eps=1e-8, weight_decay=wd)
    p0, grads = np.random.default_rng(1).standard_normal(N), gradients(7)
    lrs = [1e-3 * min(1, t / 3) for t in range(1, 8)]  # a warmup, then constant
    p = run(AdamW(cfg.replace(dtype="float64", engine=engine), N), p0, grads, lrs)
    np.testing.assert_allclose(p, torch_adamw(p0, grads, lrs, 0.9, 0.98, 1e-8, wd), rtol=RTOL)


@engines
@pytest.mark.parametrize("momentum, wd", [(0.9, 0.0), (0.9, 0.5), (0.0, 0.5)])
def test_sgd_follows_pytorch_step_by_step(engine, momentum, wd):
    cfg = Config(optimizer="sgd", momentum=momentum, weight_decay=wd)
    p0, grads = np.random.default_rng(2).standard_normal(N), gradients(6, seed=3)
    lrs = [0.1, 0.05, 0.1, 0.2, 0.1, 0.1]
    p = run(SGD(cfg.replace(dtype="float64", engine=engine), N), p0, grads, lrs)
    np.testing.assert_allclose(p, torch_sgd(p0, grads, lrs, momentum, wd), rtol=RTOL)


@engines
@pytest.mark.parametrize("wd", [0.0, 0.5])
def test_adamw_closed_form_for_a_constant_gradient(engine, wd):
    """With g fixed, the bias-corrected moments are exactly g and g^2, so every step moves by
    lr g / (|g| + eps), and decoupled decay shrinks by a = 1 - lr wd first:

        p_t = a^t p_0 - lr s (1 + a + ... + a^(t-1)),   s = g / (|g| + eps)
    """
    lr, eps, t = 0.01, 1e-3, 25
    cfg = Config(beta1=0.9, beta2=0.98, eps=eps, weight_decay=wd)
    p0, g = np.linspace(-1, 1, N), np.linspace(-0.02, 0.03, N)
    p = run(AdamW(cfg.replace(dtype="float64", engine=engine), N), p0, [g] * t, [lr] * t)
    a = 1 - lr * wd
    s = g / (np.abs(g) + eps)
    np.testing.assert_allclose(p, a**t * p0 - lr * s * sum(a**k for k in range(t)), rtol=1e-9)


@engines
def test_sgd_closed_form_for_a_constant_gradient(engine):
    """With g fixed and no decay, buf_t = g (1 - mu^t) / (1 - mu), so

    p_t = p_0 - lr g / (1 - mu) (t - mu (1 - mu^t) / (1 - mu))
    """
    lr, mu, t = 0.1, 0.9, 20
    cfg = Config(optimizer="sgd", momentum=mu, weight_decay=0.0)
    p0, g = np.linspace(-1, 1, N), np.linspace(-2, 3, N)
    p = run(SGD(cfg.replace(dtype="float64", engine=engine), N), p0, [g] * t, [lr] * t)
    expected = p0 - lr * g / (1 - mu) * (t - mu * (1 - mu**t) / (1 - mu))
    np.testing.assert_allclose(p, expected, rtol=1e-10)


@engines
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_state_round_trip_continues_the_same_trajectory(engine, optimizer):
    """What a checkpoint saves (`state`) and restores (`load_state`) is the whole optimizer."""
    cfg = Config(optimizer=optimizer, weight_decay=0.3)
    p0, grads = np.random.default_rng(4).standard_normal(N), gradients(6, seed=5)
    lrs = [1e-2] * 6
    straight = run(make_optimizer(cfg.replace(dtype="float64", engine=engine), N), p0, grads, lrs)
    first = make_optimizer(cfg.replace(dtype="float64", engine=engine), N)
    p = run(first, p0, grads[:3], lrs[:3])
    saved = {k: np.array(v, copy=True) for k, v in first.state().items()}
    second = make_optimizer(cfg.replace(dtype="float64", engine=engine), N)
    second.load_state(saved)
    np.testing.assert_array_equal(run(second, p, grads[3:], lrs[3:]), straight)


@pytest.mark.parity
@pytest.mark.parametrize("optimizer, momentum", [("adamw", 0.9), ("sgd", 0.9), ("sgd", 0.0)])
def test_against_torch_optim(optimizer, momentum):
    torch = pytest.importorskip("torch")
    cfg = Config(optimizer=optimizer, weight_decay=0.5, beta2=0.98, momentum=momentum)
    p0, grads = np.random.default_rng(6).standard_normal(N), gradients(5, seed=7)
    lrs = [1e-2, 2e-2, 3e-2, 3e-2, 3e-2]
    ours = run(make_optimizer(cfg.replace(dtype="float64"), N), p0, grads, lrs)
    w = torch.nn.Parameter(torch.tensor(p0))
    if optimizer == "adamw":
        opt = torch.optim.AdamW([w], lr=lrs[0], betas=(0.9, 0.98), eps=1e-8, weight_decay=0.5)
    else:
        opt = torch.optim.SGD([w], lr=lrs[0], momentum=momentum, weight_decay=0.5)
    for g, lr in zip(grads, lrs, strict=True):
        opt.param_groups[0]["lr"] = lr
        w.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(ours, w.detach().numpy(), rtol=1e-10)


def test_warmup_is_linear_from_zero_then_constant():
    cfg = Config(lr=1e-3, warmup_steps=10)
    lrs = [learning_rate(cfg, t) for t in range(1, 31)]
    np.testing.assert_allclose(lrs[:10], 1e-3 * np.arange(1, 11) / 10, rtol=1e-12)
    assert lrs[9:] == [1e-3] * 21  # reached at step 10 and held
    no_warmup = Config(lr=3e-3, warmup_steps=0)
    assert [learning_rate(no_warmup, t) for t in (1, 2, 100)] == [3e-3] * 3
