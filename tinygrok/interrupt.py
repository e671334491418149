"""Ctrl-C and SIGTERM: the first asks a run to stop at its next step and save, the second
stops it at once.

A `StopFlag` takes over SIGINT and SIGTERM while a run (or a sweep) trains. The first signal
sets `reason`; the loop reads it before every step and evaluation, so a run stops within one
training step, writes its checkpoint and summary, and can be resumed. An evaluation can take
minutes (the full training and validation sets of a large p), so it runs under `abandonable()`:
the first signal ends it at once with `EvaluationAbandoned`, and the resumed run evaluates that
step again. A second signal raises `StopNow` wherever the process is: nothing more is saved, and
the last checkpoint (written atomically) is what a resume continues from.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


class EvaluationAbandoned(Exception):
    """The first Ctrl-C or SIGTERM arrived during an evaluation, which was given up."""


class StopNow(KeyboardInterrupt):
    """A second Ctrl-C or SIGTERM: stop without saving anything more."""


@dataclass
class StopFlag:
    """Set by a signal handler; the loop checks it between steps."""

    reason: str | None = None
    abandoning: bool = False  # inside `abandonable()`: the first signal raises there
    previous: dict = field(default_factory=dict)

    def __enter__(self) -> StopFlag:
        """Route SIGINT and SIGTERM here while the `with` block runs; outside the main thread,
        where Python allows no signal handler, the flag stays down."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        """Restore the handlers `__enter__` replaced."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()

    @contextmanager
    def abandonable(self) -> Iterator[None]:
        """A block (an evaluation, which writes nothing) that the first signal may cut short:
        `EvaluationAbandoned` is raised inside it. Entered with the flag already up, it raises at
        once."""
        if self.reason:
            raise EvaluationAbandoned(self.reason)
        self.abandoning = True
        try:
            yield
        finally:
            self.abandoning = False

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.reason:
            raise StopNow(
                f"{name} again: stopped at once; the last checkpoint is kept, resume continues "
                "from it"
            )
        self.reason = name
        if self.abandoning:
            raise EvaluationAbandoned(name)
