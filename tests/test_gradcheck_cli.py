"""`tinygrok gradcheck` and the checker behind it: it passes on the real backward pass, names every
parameter, and fails when a gradient is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from tinygrok.cli import main
from tinygrok.gradcheck import (
    analytic_grads,
    check_gradients,
    checked_setup,
    relative_error,
    small_config,
)
from tinygrok.params import param_shapes


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.mark.parametrize(
    "argv, model",
    [
        (["gradcheck", "--coords", "12"], {}),
        (
            [
                "gradcheck",
                "add",
                "div",
                "--layers",
                "1",
                "--no-layer-norm",
                "--activation",
                "relu",
                "--heads",
                "4",
                "--seed",
                "3",
                "--coords",
                "12",
            ],
            {"tasks": ("addition", "division"), "layers": 1, "layer_norm": False, "heads": 4},
        ),
        (
            ["gradcheck", "division", "--norm", "post", "--no-final-norm", "--head", "vocab"],
            {"tasks": ("division",), "norm": "post", "final_norm": False, "head": "vocab"},
        ),
    ],
)
def test_cli_passes_and_names_every_parameter(argv, model, capsys):
    code, out, _ = run_cli(argv, capsys)
    assert code == 0, out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:-1]}
    assert set(rows) == set(param_shapes(small_config(**model)))
    for name, cols in rows.items():
        assert cols[-1] == "OK" and float(cols[-3]) <= 1e-5, name


def test_cli_exits_1_when_a_tensor_exceeds_tol(capsys):
    # 1e-12 is below float64 round-off of the differences: some tensor must fail.
    code, out, err = run_cli(
        ["gradcheck", "--layers", "1", "--coords", "4", "--tol", "1e-12"], capsys
    )
    assert code == 1
    assert "FAIL" in out and "FAIL" in err


@pytest.mark.parametrize(
    "argv, option",
    [
        (["gradcheck", "--d-model", "8", "--heads", "3"], "--d-model"),
        (["gradcheck", "--coords", "0"], "--coords"),
        (["gradcheck", "mod"], "TASK"),
        (["gradcheck", "div", "--p", "12"], "--p"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(argv, option, capsys):
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"tinygrok: error: {option}")


@pytest.mark.parametrize(
    "name, wrong",
    [
        ("blocks.0.ln1.w", lambda g: g * 1.001),  # 0.1% too large
        ("blocks.0.attn.w_qkv", lambda g: -g),  # sign flipped
        ("head.b", lambda g: g + 1e-6),  # a tiny offset, below the floor of 1e-4
        ("wpe", lambda g: np.zeros_like(g)),  # forgotten
    ],
)
def test_checker_detects_a_wrong_gradient(name, wrong):
    cfg = small_config(layers=1, seed=1)
    params, tokens, targets = checked_setup(cfg)
    grads = analytic_grads(params, tokens, targets, cfg)
    grads[name][...] = wrong(grads[name].copy())
    checks = {c.name: c for c in check_gradients(cfg, params, tokens, targets, grads, 16)}
    assert not checks[name].ok
    assert all(c.ok for n, c in checks.items() if n != name)


def test_relative_error_uses_the_floor_near_zero():
    analytic = np.array([1.0, 1e-9, 0.0])
    numeric = np.array([1.0 + 1e-6, 0.0, 1e-8])
    np.testing.assert_allclose(
        relative_error(analytic, numeric, floor=1e-4), [1e-6, 1e-5, 1e-4], rtol=1e-5
    )
