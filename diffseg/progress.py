"""Progress of long work as plain lines on the terminal (one per finished job, with its rate), never in a report.

Bars that redraw themselves (tqdm) turn into pages of carriage returns in a log file or a CI transcript, and
inside a notebook kernel they become stderr output of the rendered report. The sweep therefore prints one line
per finished training or evaluation to the process's *terminal* stream, and library calls made from a notebook
are quiet by default (`wanted` is False where stderr is not a terminal, as in a papermill kernel).

A line reads::

    [cpu] refiners 3/24 ade20k/segformer-tiny seed 1: 41.2 s, 9.7 it/s, peak 0.9 GiB | phase 2.1 min, ~4.9 min left
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def wanted(progress: bool | None) -> bool:
    """An explicit ``progress`` wins; ``None`` means: only when stderr is an interactive terminal."""
    if progress is not None:
        return bool(progress)
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


class JobLog:
    """Counts the finished jobs of one phase and prints a line for each.

    Args:
        prefix: what the work is, e.g. ``"[cpu] refiners"``.
        total: the number of jobs in the phase.
        stream: where the lines go (default ``sys.stderr``, looked up when a line is printed).
        enabled: False makes every call a no-op.
    """

    def __init__(self, prefix: str, total: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.prefix, self.total, self.done = prefix, int(total), 0
        self.stream, self.enabled = stream, enabled
        self.start = time.perf_counter()

    def finished(
        self, label: str, seconds: float, iterations: int | None = None, peak_bytes: int | None = None
    ) -> str:
        """Record one finished job (``seconds`` of its own; ``iterations`` trained and its peak memory, if
        known) and print its line."""
        self.done += 1
        rate = ""
        if iterations and seconds > 0:  # it/s for fast work, s/it where an iteration takes a second or more
            per_s = iterations / seconds
            rate = f", {per_s:.1f} it/s" if per_s >= 1 else f", {seconds / iterations:.1f} s/it"
        if peak_bytes:
            rate += f", peak {peak_bytes / 2**30:.1f} GiB"
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * (self.total - self.done)
        eta = f", ~{_minutes(left)} left" if self.done < self.total else ""
        line = (
            f"{self.prefix} {self.done}/{self.total} {label}: {seconds:.1f} s{rate} | "
            f"phase {_minutes(elapsed)}{eta}"
        )
        if self.enabled:
            print(line, file=self.stream or sys.stderr, flush=True)
        return line

    def failed(self, what: str) -> str:
        """Record one failed job (``what``: its name, error and log) and print its line."""
        self.done += 1
        line = f"{self.prefix} {self.done}/{self.total} FAILED {what}"
        if self.enabled:
            print(line, file=self.stream or sys.stderr, flush=True)
        return line
