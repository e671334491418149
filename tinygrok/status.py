"""What a run shows while it trains: one status line on stderr (step, steps/s, accuracies, losses,
time left) that never wraps on a terminal and becomes plain log lines off one. A sweep draws its
own line with the same `StatusLine`."""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from typing import TextIO

from tinygrok.config import Config
from tinygrok.metrics import generalized_since


class StatusLine:
    """A status line on stderr, shared by a run's `Progress` and a sweep's display.

    On a terminal it is redrawn in place (carriage return, erase the line) at most every 0.5 s and
    is never longer than the terminal's width minus one, so that it never wraps onto a new row: the
    caller gives the line in several forms, fullest first, and the first that fits is drawn. Off a
    terminal (a log file) every draw is the fullest form on a line of its own, every 15 s.
    """

    def __init__(self, enabled: bool = True, stream: TextIO | None = None):
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.interval = 0.5 if self.tty else 15.0
        self.last = -math.inf  # when the line was last drawn
        self.drawn = False  # a line is on the terminal's current row

    def due(self, force: bool = False) -> bool:
        """Whether to draw now: enabled, and forced or `interval` seconds after the last draw."""
        return self.enabled and (force or time.perf_counter() - self.last >= self.interval)

    def width(self) -> int:
        """The terminal's columns: the stream's terminal, else $COLUMNS or stdout's, else 80."""
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        return columns or shutil.get_terminal_size((80, 24)).columns

    def draw(self, *forms: str) -> None:
        """Show the first of `forms` (fullest first) that fits the terminal, or the last one cut
        to fit; off a terminal, the first."""
        if self.tty:
            room = max(self.width() - 1, 1)
            line = next((f for f in forms if len(f) <= room), forms[-1][:room])
            self.stream.write("\r\033[K" + line)
            self.drawn = True
        else:
            self.stream.write(forms[0] + "\n")
        self.stream.flush()
        self.last = time.perf_counter()

    def message(self, text: str) -> None:
        """`text` on a line of its own (even when disabled); the status line is drawn again at
        the next update."""
        if self.drawn:
            self.stream.write("\r\033[K")
            self.drawn = False
        self.stream.write(text + "\n")
        self.stream.flush()
        self.last = -math.inf

    def close(self) -> None:
        """End the status line: the terminal's cursor moves to a new row."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


class Progress:
    """A run's status line (`StatusLine`): step, steps/s, train and validation accuracy, losses
    and the time left.

    The rate is measured from the first update on, so compiling the kernels does not count.
    Until the model has generalized it is the time to the step budget. Once validation accuracy has
    reached the generalized threshold and stayed there (`generalized_since`, the loop's early-stop
    rule), it is the time until the first evaluation `patience` steps later, where the run stops.
    """

    RATE_WINDOW = 5.0  # seconds

    def __init__(
        self,
        budget: int,
        enabled: bool = True,
        start: int = 0,
        *,
        cfg: Config | None = None,
        records: list[dict] | None = None,
        stream: TextIO | None = None,
    ):
        """`cfg` gives the early stop (patience, threshold, eval_every; None: no early stop) and
        `records` is the loop's own list of evaluation records, read at every draw."""
        self.budget, self.cfg = budget, cfg
        self.records = records if records is not None else []
        self.line = StatusLine(enabled, stream)
        self.last_t: float | None = None  # when and at which step the rate was last measured
        self.last_step = start
        self.rate = 0.0
        self.shown: tuple[int, dict | None] = (start, None)  # the latest `update`'s arguments

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        """Draw the latest step, however the run ended, and end the line."""
        self.update(*self.shown, force=True)
        self.close()

    def update(self, step: int, record: dict | None, force: bool = False) -> None:
        """Show `step` with the latest evaluation `record`."""
        self.shown = (step, record)
        if not self.line.due(force):
            return
        now = time.perf_counter()
        if self.last_t is not None and now > self.last_t and step > self.last_step:
            dt = now - self.last_t
            rate = (step - self.last_step) / dt
            # an average over about the last RATE_WINDOW seconds, however often the line is drawn
            weight = 1 - math.exp(-dt / self.RATE_WINDOW) if self.rate else 1.0
            self.rate += weight * (rate - self.rate)
        self.last_t, self.last_step = now, step
        self.line.draw(*self.forms(step, record))

    def stop_step(self) -> int:
        """The step the run will end at, as the records stand: the budget, or while validation
        accuracy has stayed >= the threshold since step s, the first evaluation at or after
        s + patience."""
        cfg = self.cfg
        if cfg is None or not cfg.patience:
            return self.budget
        since = generalized_since(self.records, cfg.generalized_threshold)
        if since is None:
            return self.budget
        due = since + cfg.patience
        return min(self.budget, -(-due // cfg.eval_every) * cfg.eval_every)

    def time_left(self, step: int) -> tuple[str, str, str]:
        """The end of the status line in three lengths: "ETA 2h10m to budget", "generalized,
        stops in ~1m20s" (once generalized), "done"; empty while there is no rate yet."""
        end = self.stop_step()
        if step >= end:
            if end < self.budget:
                return "generalized, stopped", "stopped", "stopped"
            return "done", "done", "done"
        if self.rate <= 0:
            return "", "", ""
        left = format_seconds((end - step) / self.rate)
        if end < self.budget:
            return f"generalized, stops in ~{left}", f"stops in ~{left}", f"stops ~{left}"
        if self.cfg is not None and self.cfg.patience:
            return f"ETA {left} to budget", f"ETA {left} to budget", f"{left} to budget"
        return f"ETA {left}", f"ETA {left}", left

    def forms(self, step: int, record: dict | None) -> list[str]:
        """The status line, fullest first: the loss pair goes first, then the labels shorten."""
        steps = f"{step:,}/{self.budget:,}"
        rate = padded_rate = short_rate = acc = mid_acc = short_acc = loss = ""
        if self.rate > 0:
            padded_rate, rate = f"{self.rate:6.1f} steps/s", f"{self.rate:.1f} steps/s"
            short_rate = f"{self.rate:.1f}/s"
        if record:
            train, val = 100 * record["train_acc"], 100 * record["val_acc"]
            acc = f"train {train:5.1f}%  val {val:5.1f}%"  # fixed widths: the line does not jitter
            mid_acc = f"train {train:.1f}% val {val:.1f}%"
            short_acc = f"tr {train:.1f}% val {val:.1f}%"
            loss = f"loss {record['train_loss']:.3g}/{record['val_loss']:.3g}"
        eta, mid_eta, short_eta = self.time_left(step)

        def join(*fields: str) -> str:
            return "  ".join(f for f in fields if f)

        return [
            join("step " + steps, padded_rate, acc, loss, eta),
            join("step " + steps, padded_rate, acc, eta),
            join("step " + steps, rate, mid_acc, mid_eta),
            join(steps, short_rate, mid_acc, short_eta),
            join(steps, short_acc, short_eta),
            join(steps, short_eta),
            join(f"{step:,}", short_eta),
        ]

    def close(self) -> None:
        """End the status line."""
        self.line.close()


def format_seconds(s: float) -> str:
    """12.3 -> '12s', 125 -> '2m05s', 7300 -> '2h01m'."""
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
