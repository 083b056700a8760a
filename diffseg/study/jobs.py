"""The sweep's job table: one row per finished job (phase, what it was, seconds, iterations, peak memory, device,
the machine that ran it: an id of the store's ``machines.csv``, `diffseg.machines`) in
``results/<profile>/jobs.csv``, so where a study's time and memory go can be read after the fact. Lines written
before the machine column existed read as machine "unrecorded".

Rows of earlier sweeps into the same store are kept (a resumed sweep appends); the file is rewritten atomically
after each job, so a killed sweep leaves every finished job's row and never a half-written line.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from diffseg.atomic import atomic_write_text
from diffseg.machines import UNRECORDED

JOBS_FILE = "jobs.csv"
COLUMNS = ("phase", "job", "seconds", "iterations", "peak_memory_gib", "device", "finished_at", "machine")


class JobTable:
    """Append-only table of finished jobs at ``path`` (a CSV with :data:`COLUMNS`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, str]] = []
        if self.path.is_file():
            with self.path.open(newline="") as f:
                self.rows = [{**r, "machine": r.get("machine") or UNRECORDED} for r in csv.DictReader(f)]

    def add(
        self,
        phase: str,
        job: str,
        seconds: float,
        iterations: int | None,
        peak_bytes: int,
        device: str,
        machine: str = UNRECORDED,
    ) -> None:
        """Record one finished job (``machine``: its id in the store's machines table) and rewrite the file."""
        self.rows.append(
            {
                "phase": phase,
                "job": job,
                "seconds": f"{seconds:.2f}",
                "iterations": "" if iterations is None else str(iterations),
                "peak_memory_gib": f"{peak_bytes / 2**30:.3f}",
                "device": device,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "machine": machine,
            }
        )
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())
