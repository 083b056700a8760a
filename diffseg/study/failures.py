"""Jobs that failed, whatever ran them: a sweep finishes every other job, then lists these and fails."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Failure:
    """A job that failed: its name, the last line of its error and where its log is."""

    name: str
    error: str
    log: str

    def line(self) -> str:
        return f"{self.name}: {self.error} (log: {self.log})"


class SweepFailed(RuntimeError):
    """Jobs of a sweep failed; the message lists each with its error's last line and its log. The sweep ran
    every other job first; run it again once the cause is fixed, and it does only what is still missing."""

    def __init__(self, failures: list[Failure]) -> None:
        self.failures = failures
        super().__init__(f"{len(failures)} job(s) failed: " + "; ".join(f.line() for f in failures))


__all__ = ["Failure", "SweepFailed"]
