"""Where a run came from: the command, the date, the code and the machine.

config.json records this at the start of a run and again at every resume, so that a result can be
traced to the command that made it, and runs made by different code or on different CPUs (whose
float32 rounding differs) are never mistaken for one another.
"""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from tinygrok import __version__

# The command that started this process, as the user typed it (set by the command line's entry
# point; a Python script is its own sys.argv)
_command: list[str] | None = None


def set_command(argv: list[str]) -> None:
    """Record the command line of this process, for `provenance`."""
    global _command
    _command = list(argv)


def git_commit(path: Path = Path(__file__).parent) -> str | None:
    """The commit of the checkout the package runs from, with "-dirty" if it has uncommitted
    changes; None when the package is not a tracked folder of a git checkout (an installed copy,
    even one inside some repository's virtual environment)."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, timeout=5
        )

    try:
        if git("ls-files", "--error-unmatch", "__init__.py").returncode != 0:
            return None
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name and, where Linux gives them (/proc/cpuinfo, x86), its family and model
    numbers: a virtual machine's name can be the same for CPUs of different generations ("Intel(R)
    Xeon(R) Processor"), which round differently. Elsewhere what the platform says."""
    try:
        info: dict[str, str] = {}
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        info = {}
    if "model name" not in info:
        return platform.processor() or platform.machine()
    if "cpu family" in info and "model" in info:
        return f"{info['model name']} (family {info['cpu family']}, model {info['model']})"
    return info["model name"]


def provenance() -> dict:
    """The command line, date (UTC), tinygrok version and commit, library versions, BLAS and CPU."""
    import numba
    import numpy as np
    from threadpoolctl import threadpool_info

    blas = [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
        for i in threadpool_info()
        if i["user_api"] == "blas"
    ]
    return {
        "command": shlex.join(sys.argv if _command is None else _command),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tinygrok_version": __version__,
        "commit": git_commit(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "blas": blas,
        "cpu": cpu_model(),
    }
