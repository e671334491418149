"""One writer per run folder: an exclusive lock on `RUN_DIR/.lock`.

`fcntl.flock` locks belong to the open file and the kernel drops them when the process ends, however
it ends (exit, Ctrl-C, kill -9, a crash). So a `.lock` left behind by a dead process never blocks
a later run: only a live process holds the lock. The file holds the holder's pid, for the message
a second process shows.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from tinygrok.errors import ConfigError


class RunLock:
    """`with RunLock(run_dir):` holds the folder's lock, or raises ConfigError at once if another
    live process holds it. The folder must exist."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            fd = os.open(self.run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(
                f"{self.run_dir}: cannot write in this folder ({e.strerror}); choose another one"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"{self.run_dir}: another tinygrok process (pid {holder}) is writing this run; "
                "wait for it to end or stop it, or choose another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # closing the file releases the lock
        self.fd = None
