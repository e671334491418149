"""Hypothesis drives the command line with random option combinations, valid and invalid, on tiny
models, then resumes some of the runs (with a random --steps, some after damaging a file). Every
call must either train (exit 0), stop a diverging run with one line (exit 3), or refuse with one
line on stderr and exit 2; never a traceback, never a warning."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from clirun import fake_plot_curves, run_cli
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st


@pytest.fixture(autouse=True, scope="module")
def no_plots():
    """curves.png takes seconds to draw on a loaded machine; test_resume.py draws short runs."""
    import tinygrok.plots

    real, tinygrok.plots.plot_curves = tinygrok.plots.plot_curves, fake_plot_curves
    yield
    tinygrok.plots.plot_curves = real


# Every option of `tinygrok run`: values that may run (some only with some other options), and
# values that never may (out of range, NaN, inf, not a number, not a choice).
OPTION_VALUES = {
    "--p": (["2", "3", "4", "5", "7", "9", "11", "13"], ["1", "0", "-7", "2001", "seven", "7.5"]),
    "--train-frac": (["0.3", "0.5", "0.9", "0.05"], ["0", "1", "-0.1", "nan", "inf"]),
    "--batch-size": (["1", "8", "64", "100000"], ["0", "-1"]),
    "--steps": (["1", "7", "20"], ["0", "-3"]),
    "--patience": (["0", "5"], ["-1"]),
    "--eval-every": (["1", "5", "50"], ["0"]),
    "--checkpoint-every": (["1", "3", "1000"], ["0", "-2"]),
    "--layers": (["1", "2"], ["0"]),
    "--d-model": (["8", "12", "16"], ["0", "-8", "1000000"]),
    "--heads": (["1", "2", "3", "4"], ["0"]),
    "--d-mlp": (["8", "16"], ["0"]),
    "--activation": (["gelu", "relu"], ["tanh"]),
    "--optimizer": (["adamw", "sgd"], ["adam"]),
    "--lr": (["1e-3", "0.1", "10", "1e39"], ["0", "-1", "nan", "inf"]),
    "--weight-decay": (["0", "1"], ["-1", "nan"]),
    "--beta1": (["0.9", "0"], ["1"]),
    "--beta2": (["0.98"], ["1.5"]),
    "--eps": (["1e-8", "1e-300"], ["0"]),
    "--momentum": (["0.9", "0"], ["1", "nan"]),
    "--warmup-steps": (["0", "3"], ["-1"]),
    "--grokfast": (["none", "ema", "ma"], ["fast"]),
    "--grokfast-alpha": (["0.98", "0"], ["1"]),
    "--grokfast-lamb": (["2", "0"], ["-1", "inf"]),
    "--grokfast-window": (["1", "4"], ["0"]),
    "--sparse": (["0", "0.5", "0.99"], ["1", "nan"]),
    "--init-scale": (["1", "0.01", "1e30"], ["0", "-inf"]),
    "--memorized-threshold": (["0.99", "0.1"], ["0", "2"]),
    "--generalized-threshold": (["0.95", "0.05"], ["nan"]),
    "--seed": (["0", "7", "123456789012345678901234567890"], ["-1"]),
    "--dtype": (["float32", "float64"], ["float16"]),
    "--engine": (["numpy"], ["cuda"]),
    "--threads": (["1", "2"], ["0"]),
    "--preset": (["power", "nanda"], ["nope"]),
}
FLAGS = ["--layer-norm", "--no-layer-norm", "--keep-mask", "--no-keep-mask", "--force"]
TASKS = ["div", "add", "sub", "mul", "division", "x^2+y^2", "div-if-odd", "ADD"]
# Small by default; the drawn options override these (click keeps an option's last value).
BASE = [
    "--p", "7", "--layers", "1", "--d-model", "8", "--heads", "2", "--d-mlp", "16",
    "--steps", "10", "--batch-size", "16", "--eval-every", "5", "--engine", "numpy", "-q",
]  # fmt: skip


def options(valid: bool, min_size: int, max_size: int) -> st.SearchStrategy[dict[str, str]]:
    """Some options, each with a value from its may-run (valid) or never-runs list."""
    names = st.dictionaries(
        st.sampled_from(sorted(OPTION_VALUES)), st.none(), min_size=min_size, max_size=max_size
    )
    pick = 0 if valid else 1
    return names.flatmap(
        lambda d: st.fixed_dictionaries({k: st.sampled_from(OPTION_VALUES[k][pick]) for k in d})
    )


damage = st.one_of(
    st.none(),
    st.none(),
    st.tuples(
        st.sampled_from(["truncate", "flip"]),
        st.sampled_from(["checkpoint.npz", "config.json"]),
        st.floats(0, 1),
    ),
)


def check(r, allowed: tuple[int, ...]) -> None:
    """The exit code is allowed and stderr is clean for it."""
    assert r.code in allowed, (r.code, r.err)
    assert "Traceback" not in r.err and "Warning" not in r.err, r.err
    lines = r.err_lines
    if r.code == 2:
        assert len(lines) == 1 and lines[0].startswith("tinygrok: error: "), r.err
    elif r.code == 3:
        assert len(lines) == 2 and lines[1].startswith("tinygrok: diverged at step "), r.err
    else:  # quiet: only the line that says what is being trained
        assert len(lines) == 1 and lines[0].startswith(("tinygrok: training", "tinygrok: resum"))


def spoil(path: Path, how: str, where: float) -> None:
    """Truncate `path` at a fraction of its length, or flip the byte there."""
    raw = bytearray(path.read_bytes())
    i = min(int(where * len(raw)), len(raw) - 1)
    if how == "truncate":
        del raw[i:]
    else:
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tasks=st.lists(st.sampled_from(TASKS), min_size=1, max_size=3, unique=True),
    opts=options(valid=True, min_size=0, max_size=5),
    # a third of the command lines get something that can never run
    bad=st.sampled_from(["", "", "", "", "options", "task"]),
    bad_opts=options(valid=False, min_size=1, max_size=2),
    flags=st.lists(st.sampled_from(FLAGS), max_size=2, unique=True),
    resume_steps=st.sampled_from([None, "", "30", "60", "60", "3", "x"]),
    damaged=damage,
)
@pytest.mark.slow
def test_random_command_lines_run_or_fail_cleanly(
    tasks, opts, bad, bad_opts, flags, resume_steps, damaged
):
    if bad == "options":
        opts = opts | bad_opts
    elif bad == "task":
        tasks = [*tasks, "foo"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        given_opts = [a for kv in opts.items() for a in kv]
        args = [*tasks, *BASE, *given_opts, *flags, "--out", out]
        r = run_cli("run", *args)
        event(f"run: exit {r.code}")  # --hypothesis-show-statistics shows the mix
        check(r, (0, 2, 3))
        if r.code == 2:
            assert not (out / "config.json").exists()
        if r.code != 0 or resume_steps is None:
            return
        if damaged:
            spoil(out / damaged[1], damaged[0], damaged[2])
        extra = ["--steps", resume_steps] if resume_steps else []
        r = run_cli("resume", out, *extra, "-q")
        event(f"resume{' of a damaged run' if damaged else ''}: exit {r.code}")
        check(r, (0, 2, 3))
