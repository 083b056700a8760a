"""The sweep's job table: one row per finished job (phase, what it was, seconds, iterations, peak memory, device,
the machine that ran it: an id of the store's ``machines.csv``, `diffseg.machines`) in
``results/<profile>/jobs.csv``, so where a study's time and memory go can be read after the fact. Lines written
before the machine column existed read as machine "unrecorded".

Rows of earlier sweeps into the same store are kept. Several sweeps (or a sweep and a requeued job) may write at
once: each row is appended with one ``O_APPEND`` write while holding the table's lock file (`diffseg.engines.
run_lock`, ``jobs.csv.lock``), never by rewriting the file, so no writer's rows are lost and a killed sweep leaves
every finished job's row; a line a killed writer left unfinished is ended before the next row.
"""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path

from diffseg.atomic import atomic_write_text
from diffseg.engines.run_lock import hold
from diffseg.machines import UNRECORDED

JOBS_FILE = "jobs.csv"
COLUMNS = ("phase", "job", "seconds", "iterations", "peak_memory_gib", "device", "finished_at", "machine")


def _line(row: dict[str, str] | None = None) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    if row is None:
        writer.writeheader()
    else:
        writer.writerow(row)
    return buf.getvalue()


class JobTable:
    """Append-only table of finished jobs at ``path`` (a CSV with :data:`COLUMNS`).

    ``rows`` holds what the file held when the table was opened and the rows this table added since.
    """

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
        """Record one finished job (``machine``: its id in the store's machines table): append its line to the
        file (under the table's lock)."""
        row = {
            "phase": phase,
            "job": job,
            "seconds": f"{seconds:.2f}",
            "iterations": "" if iterations is None else str(iterations),
            "peak_memory_gib": f"{peak_bytes / 2**30:.3f}",
            "device": device,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": machine,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # held for one short write: a writer killed while holding it is on this host (dead pid) or goes stale
        with hold(
            self.path.with_name(self.path.name + ".lock"), heartbeat_s=5.0, poll_s=0.05, stale_after_s=60.0
        ):
            self._upgrade_header()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                text = _line(row)
                if size == 0:
                    text = _line() + text
                elif not self._ends_with_newline():
                    text = "\n" + text  # a killed writer's unfinished line stays one (unparsable) line
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        self.rows.append(row)

    def _upgrade_header(self) -> None:
        """A table written before a column existed (the machine) is rewritten once with today's header, its
        rows keeping their values and reading "unrecorded" in the new column; then lines are appended."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) == COLUMNS:
                return
            rows = [{**r, "machine": r.get("machine") or UNRECORDED} for r in reader]
        atomic_write_text(
            self.path, _line() + "".join(_line({k: r.get(k, "") for k in COLUMNS}) for r in rows)
        )

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
