"""The run's log: ``log.csv`` (appended across resumes), TensorBoard scalars and the terminal progress bar."""

from __future__ import annotations

import csv
import io
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
        new = not csv_path.exists()
        with csv_path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["job", "iteration", "stage", "loss", "lr", "time"])
            w.writerow(
                [
                    desc,
                    engine.state.iteration,
                    out.get("stage"),
                    out.get("loss"),
                    out.get("lr"),
                    round(time.time(), 3),
                ]
            )

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


def _drop_rows_after(csv_path: Path, job: str, iteration: int) -> None:
    """Forget ``job``'s rows past ``iteration``: a run resumed from an older checkpoint (the newest was truncated)
    logs those iterations again, and the log should hold each once."""
    if not csv_path.exists():
        return
    with csv_path.open(newline="") as f:
        rows = list(csv.reader(f))
    keep = [r for r in rows[1:] if not (r and r[0] == job and int(r[1]) > iteration)]
    if len(keep) == len(rows) - 1:
        return
    buf = io.StringIO()
    csv.writer(buf).writerows([rows[0], *keep])
    atomic_write_text(csv_path, buf.getvalue())
