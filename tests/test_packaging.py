"""Packaging: setup.cfg declares the dependencies with lower bounds, the test extra and the
console script, finds every subpackage, and the installed distribution has the `tinygrok` console
script. (That `pip install .` and `pip install -e .` work in a fresh venv is what `.ci/run`
checks: it installs as the README says.)
"""

from __future__ import annotations

import configparser
import re
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def requirements(text: str) -> dict[str, str]:
    """'numpy>=1.24' lines -> {'numpy': 'numpy>=1.24'}."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return {re.split(r"[<>=!~\[; ]", line)[0].lower(): line for line in lines}


def test_install_requires_have_lower_bounds():
    required = requirements(setup_cfg()["options"]["install_requires"])
    for package in ("numpy", "numba", "click", "matplotlib"):
        assert package in required, f"{package} is not in install_requires"
        assert re.search(r">=\s*\d", required[package]), f"{package} has no lower bound"


def test_test_extra_has_pytest_and_hypothesis():
    extra = requirements(setup_cfg()["options.extras_require"]["test"])
    assert {"pytest", "hypothesis"} <= set(extra)


def test_pyproject_names_the_build_backend():
    text = (ROOT / "pyproject.toml").read_text()  # no tomllib before Python 3.11
    system = text.split("[build-system]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^build-backend\s*=\s*"setuptools\.build_meta"', system, re.M)
    assert re.search(r'^requires\s*=\s*\[.*"setuptools', system, re.M)


def test_every_subpackage_is_found():
    """`packages = find:` only finds folders with an __init__.py: a kernel folder without one
    would be missing from `pip install .` (not from an editable install)."""
    options = setup_cfg()["options"]
    assert options["packages"].strip() == "find:"
    for folder in {p.parent for p in (ROOT / "tinygrok").rglob("*.py")}:
        assert (folder / "__init__.py").is_file(), f"{folder} has no __init__.py"


def test_console_script_is_declared_and_installed():
    scripts = setup_cfg()["options.entry_points"]["console_scripts"]
    assert re.search(r"^tinygrok\s*=\s*tinygrok\.__main__:main$", scripts.strip(), re.M)
    installed = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    assert installed.get("tinygrok") == "tinygrok.__main__:main"


def imported(path: Path) -> set[str]:
    """The tinygrok modules a source file imports, at its top or inside its functions."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n == "tinygrok" or n.startswith("tinygrok.")}


def room(module: str) -> int:
    """0 for the engine (tinygrok's top level and kernels/), 1 for tinygrok.lab, 2 for the CLI,
    3 for the console script's entry (`tinygrok.__main__`, which loads the CLI)."""
    parts = module.split(".")
    return {"lab": 1, "cli": 2, "__main__": 3}.get(parts[1], 0) if len(parts) > 1 else 0


def test_imports_only_go_down_from_cli_to_lab_to_engine():
    upward = []
    for path in sorted((ROOT / "tinygrok").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        upward += [f"{module} imports {n}" for n in imported(path) if room(n) > room(module)]
    assert not upward
    assert room("tinygrok.lab.sweep") == 1 and room("tinygrok.cli.runs") == 2  # the rooms exist
    assert room("tinygrok.train") == 0 and room("tinygrok.kernels.attention") == 0
