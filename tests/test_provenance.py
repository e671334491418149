"""config.json's record of where a run came from names the commit only when the package runs from
a checkout that tracks it, and a CPU by its family and model numbers where Linux gives them."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

import tinygrok
from tinygrok.provenance import cpu_model, git_commit

PACKAGE = Path(tinygrok.__file__).parent


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_commit_only_of_a_checkout_that_tracks_the_package(tmp_path):
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    copy = repo / ".venv" / "site-packages" / "tinygrok"  # installed inside some repository
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert git_commit(copy) is None
    tracked = repo / "tinygrok"
    shutil.copytree(PACKAGE, tracked, ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "tinygrok"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert git_commit(tracked) == head.strip()
    (tracked / "errors.py").write_text("# changed\n")
    assert git_commit(tracked) == head.strip() + "-dirty"


def test_cpu_named_with_its_family_and_model_numbers(tmp_path):
    """Two Xeon generations that a virtual machine names alike are told apart by their numbers;
    a cpuinfo without them (ARM's) or without a model name falls back."""
    x86 = tmp_path / "x86"
    x86.write_text(
        "processor\t: 0\ncpu family\t: 6\nmodel\t\t: 167\n"
        "model name\t: Intel(R) Xeon(R) Processor\n\nprocessor\t: 1\ncpu family\t: 6\n"
    )
    assert cpu_model(x86) == "Intel(R) Xeon(R) Processor (family 6, model 167)"
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\nCPU part\t: 0xd0c\n")
    assert cpu_model(arm) == "ARMv8 Processor rev 1 (v8l)"
    assert cpu_model(tmp_path / "none") == (platform.processor() or platform.machine())
