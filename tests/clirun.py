"""Helpers for tests that drive the command line: in-process through `tinygrok.cli.main` (fast,
exceptions surface as test failures), or in a real subprocess (for signals and locks)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinygrok.cli import main

# A model that trains at hundreds of steps per second: every test run uses it.
TINY = [
    "--p", "11", "--layers", "1", "--d-model", "8", "--heads", "2", "--d-mlp", "16",
    "--batch-size", "32", "--eval-every", "10", "--checkpoint-every", "25", "--engine", "numpy",
    "-q",
]  # fmt: skip
WALL_CLOCK = ("elapsed_s", "wall_s", "steps_per_s")
PYTHON_MAIN = [sys.executable, "-c", "from tinygrok.cli import main; main()"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.strip().splitlines()


def fake_plot_curves(run_dir: Path, out: Path | None = None) -> Path:
    """Stands in for `plots.plot_curves` where the figure is not under test (drawing it takes
    seconds on a loaded machine): an empty curves.png, so the run's files are all there."""
    out = out or Path(run_dir) / "curves.png"
    out.write_bytes(b"")
    return out


def run_cli(*args: str | Path) -> Result:
    """`tinygrok ARGS...` in this process; any exception other than SystemExit propagates."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return Result(code, out.getvalue(), err.getvalue())


def spawn(*args: str | Path) -> subprocess.Popen:
    """`tinygrok ARGS...` in a new Python process (stdout and stderr piped, as text)."""
    return subprocess.Popen(
        PYTHON_MAIN + [str(a) for a in args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def metrics_lines(run_dir: Path) -> list[dict]:
    """metrics.jsonl without its wall-clock fields."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(s).items() if k not in WALL_CLOCK} for s in lines]


def summary(run_dir: Path) -> dict:
    """summary.json without its wall-clock fields."""
    s = json.loads((run_dir / "summary.json").read_text())
    return {k: v for k, v in s.items() if k not in WALL_CLOCK}


def file_digests(run_dir: Path) -> dict[str, str]:
    """sha256 of every file of a folder except the lock (whose content is the last holder's pid)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.iterdir())
        if p.is_file() and p.name != ".lock"
    }


def without_clock(value: object) -> object:
    """`value` (a JSON document) without its wall-clock fields, at every depth."""
    if isinstance(value, dict):
        return {k: without_clock(v) for k, v in value.items() if k not in WALL_CLOCK}
    if isinstance(value, list):
        return [without_clock(v) for v in value]
    return value


def assert_same_run(a: Path, b: Path) -> None:
    """Same evaluations, summary, config and final checkpoint (parameters, optimizer state,
    status and records), wall-clock fields (and the record of where and when each part ran)
    aside."""
    assert metrics_lines(a) == metrics_lines(b)
    assert summary(a) == summary(b)

    def config(run: Path) -> dict:
        doc = json.loads((run / "config.json").read_text())
        return {k: v for k, v in doc.items() if k not in ("provenance", "resumes")}

    assert config(a) == config(b)
    with np.load(a / "checkpoint.npz") as za, np.load(b / "checkpoint.npz") as zb:
        assert za.files == zb.files
        for k in za.files:
            if k == "run_json":
                ra, rb = (without_clock(json.loads(str(z[k]))) for z in (za, zb))
                assert ra == rb
            else:
                np.testing.assert_array_equal(za[k], zb[k], err_msg=k)
