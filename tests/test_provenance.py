"""config.json's record of where a run came from names the commit only when the package runs from
a checkout that tracks it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import tinygrok
from tinygrok.provenance import git_commit

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
