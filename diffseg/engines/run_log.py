"""The run's log: ``log.csv`` (appended across resumes), TensorBoard scalars and the terminal progress bar."""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path

import ignite.distributed as idist
from ignite.engine import Engine, Events

from diffseg.atomic import atomic_write_text
from diffseg.config import ExperimentConfig


def attach_logging(trainer: Engine, run_dir: Path, cfg: ExperimentConfig, progress: bool, desc: str) -> None:
    """CSV log (appended, so a resumed run continues it), TensorBoard scalars and a progress bar (rank 0)."""
    if idist.get_rank() != 0:
        return
    csv_path = run_dir / "log.csv"
    _drop_rows_after(csv_path, desc, trainer.state.iteration)

    logged = {"iteration": None}

    # Every log_every iterations, and the last one: once, also when it is a multiple of log_every.
    @trainer.on(Events.ITERATION_COMPLETED(every=max(1, cfg.train.log_every)) | Events.COMPLETED)
    def _write_csv(engine: Engine) -> None:
        if logged["iteration"] == engine.state.iteration:
            return
        logged["iteration"] = engine.state.iteration
        out = engine.state.output or {}
        row = [
            desc,
            engine.state.iteration,
            out.get("stage"),
            out.get("loss"),
            out.get("lr"),
            round(time.time(), 3),
        ]
        _append_row(csv_path, row)

    try:
        from ignite.handlers.tensorboard_logger import TensorboardLogger

        tb = TensorboardLogger(log_dir=str(run_dir / "tensorboard"))
        tb.attach_output_handler(
            trainer,
            event_name=Events.ITERATION_COMPLETED(every=max(1, cfg.train.log_every)),
            tag=desc,
            output_transform=lambda o: {"loss": o["loss"], "lr": o["lr"]},
        )

        @trainer.on(Events.COMPLETED | Events.TERMINATE)
        def _close(_: Engine) -> None:
            tb.close()

        @trainer.on(Events.EXCEPTION_RAISED)
        def _close_and_reraise(_: Engine, e: BaseException) -> None:
            # ignite hands an exception to its EXCEPTION_RAISED handlers instead of raising it: raise it again
            tb.close()
            raise e
    except ImportError:  # tensorboard is a pinned dependency; keep training if a user removed it
        pass

    if progress:
        from ignite.handlers import ProgressBar

        ProgressBar(desc=desc, persist=False).attach(trainer, output_transform=lambda o: {"loss": o["loss"]})


HEADER = ["job", "iteration", "stage", "loss", "lr", "time"]


def _append_row(csv_path: Path, row: list, header: list[str] = HEADER) -> None:
    """Append one row (and ``header`` to a new file) with a single ``O_APPEND`` write: a kill leaves at most one
    unfinished last line, which `_drop_rows_after` removes on resume."""
    buf = io.StringIO()
    w = csv.writer(buf)  # csv's own \r\n line ends, as the log always had
    fd = os.open(csv_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size == 0:
            w.writerow(header)
        w.writerow(row)
        os.write(fd, buf.getvalue().encode())
    finally:
        os.close(fd)


def _drop_rows_after(csv_path: Path, job: str, iteration: int) -> None:
    """Forget ``job``'s rows past ``iteration``, and an unfinished last line: a resumed run logs the iterations
    after its checkpoint again (also when the newest checkpoint was truncated and an older one is used), and the
    log should hold each once."""
    if not csv_path.exists():
        return
    text = csv_path.read_text()  # universal newlines: the \r\n line ends read as \n
    complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]  # a killed write's torn line
    rows = list(csv.reader(io.StringIO(complete)))

    def keep(r: list[str]) -> bool:
        if len(r) != len(HEADER) or not r[1].isdigit():
            return False  # not a row this log writes (a torn line that happened to end a line)
        return not (r[0] == job and int(r[1]) > iteration)

    kept = [r for r in rows[1:] if keep(r)]
    if complete == text and len(kept) == len(rows) - 1:
        return
    if not rows:
        csv_path.unlink()
        return
    buf = io.StringIO()
    csv.writer(buf).writerows([rows[0], *kept])
    atomic_write_text(csv_path, buf.getvalue())


ATTEMPTS_FILE = "attempts.csv"
ATTEMPT_COLUMNS = ["job", "start_iteration", "total_iterations", "host", "pid", "slurm_job_id", "time"]


def record_attempt(run_dir: Path, job: str, start: int, total: int) -> None:
    """One line in ``<run folder>/attempts.csv`` each time a training starts or resumes there (rank 0): which
    process trained a folder from which iteration, to debug requeues and to check that a run trained once."""
    import socket

    if idist.get_rank() != 0:
        return
    row = [
        job,
        start,
        total,
        socket.gethostname(),
        os.getpid(),
        os.environ.get("SLURM_JOB_ID", ""),
        time.time(),
    ]
    _append_row(Path(run_dir) / ATTEMPTS_FILE, row, ATTEMPT_COLUMNS)
