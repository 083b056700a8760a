"""One sweep training as N processes (``diffseg sweep --gpus-per-job N``): one training over several GPUs.

A pool worker cannot start processes of its own (multiprocessing's workers are daemons), so a grouped job runs in
a fresh interpreter: `run_grouped` pickles the job to a file and starts ``python -m diffseg.study.process_group``,
which spawns N ranks through ``ignite.distributed.Parallel`` (NCCL on GPUs, rank r on ``cuda:r`` of the GPUs its
worker is pinned to; gloo on CPUs, one thread per rank) on a free local port, so groups on one node never meet.
Every rank runs the job (`diffseg.study.sweep._call`; rank 0 alone writes files) and rank 0's result comes back
through a file. The training is the config's: ``data.batch_size`` is the global batch, split over the ranks.

`in_slurm_tasks` is the same on a Slurm allocation of several tasks, where Slurm, not this module, started the
ranks (ignite reads ``SLURM_PROCID`` / ``SLURM_NTASKS`` / the node list).
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffseg.atomic import atomic_write

RESULT, ERROR = "result.pkl", "error.txt"


def free_port() -> int:
    """A TCP port free on this host now (the OS picks it), for one group's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _backend() -> str:
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def run_grouped(job: tuple[str, Any, str], processes: int) -> tuple[Any, ...]:
    """Run sweep job ``job`` as ``processes`` ranks in a child interpreter; returns rank 0's `_call` result with
    its device named ``"<device> x<processes>"``. A failing rank raises here with the first error's last line."""
    with tempfile.TemporaryDirectory(prefix="diffseg-group-") as tmp:
        folder = Path(tmp)
        (folder / "job.pkl").write_bytes(pickle.dumps(job))
        cmd = [
            sys.executable,
            "-m",
            "diffseg.study.process_group",
            str(folder),
            str(processes),
            str(free_port()),
        ]
        code = subprocess.run(cmd, check=False).returncode
        if code != 0 or not (folder / RESULT).exists():
            error = (folder / ERROR).read_text().strip() if (folder / ERROR).exists() else ""
            raise RuntimeError(error or f"the {processes}-process group exited with status {code}")
        result = pickle.loads((folder / RESULT).read_bytes())
    label, seconds, iterations, peak, device, machine = result
    return label, seconds, iterations, peak, f"{device} x{processes}", machine


def _rank(local_rank: int, folder: str) -> None:
    """One rank: the job, with rank 0's result (or the first error of any rank) written to ``folder``."""
    import ignite.distributed as idist
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # a rank per core, as the sweep's single-process CPU workers
    import warnings

    _quiet_ignite()  # a spawned rank imports ignite afresh
    # DDP's reducer warns once per parameter whose gradient is strided otherwise than its bucket (SegFormer's
    # depthwise convs: a layout question of speed, not of the numbers); one line per job is noise in a sweep
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    from diffseg.study.sweep import _call

    job = pickle.loads((Path(folder) / "job.pkl").read_bytes())
    try:
        result = _call(job)
    except Exception as e:
        last = (str(e).strip().splitlines() or [""])[-1]
        try:  # the first failing rank names the error; the others find the file taken
            fd = os.open(Path(folder) / ERROR, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, f"rank {idist.get_rank()}: {type(e).__name__}: {last}".encode())
            os.close(fd)
        except FileExistsError:
            pass
        raise
    if idist.get_rank() == 0:
        data = pickle.dumps(result)
        atomic_write(Path(folder) / RESULT, lambda tmp: Path(tmp).write_bytes(data))


def in_slurm_tasks(job: tuple[str, Any, str], call: Callable[[Any], Any]) -> Any:
    """Run ``call(job)`` as one rank of the Slurm job's tasks (ignite builds the group from Slurm's environment);
    rank 0 returns the result, the other ranks None."""
    import ignite.distributed as idist

    out: list[tuple[int, Any]] = []
    with idist.Parallel(backend=_backend()) as parallel:
        parallel.run(lambda _local_rank: out.append((idist.get_rank(), call(job))))
    rank, result = out[0]
    return result if rank == 0 else None


def _quiet_ignite() -> None:
    """ignite's launcher and ``auto_model`` log their set-up at INFO through loggers they build on each call
    (``ignite.utils.setup_logger``, level INFO): a group per training would print a dozen lines per job between
    the sweep's progress lines. Warnings and errors still show."""
    import functools
    import logging

    import ignite.distributed.auto as auto
    import ignite.distributed.launcher as launcher
    from ignite.utils import setup_logger

    quiet = functools.partial(setup_logger, level=logging.WARNING)
    launcher.setup_logger = auto.setup_logger = quiet  # type: ignore[attr-defined]


def main(argv: list[str]) -> int:
    import ignite.distributed as idist

    _quiet_ignite()
    folder, processes, port = argv[0], int(argv[1]), int(argv[2])
    with idist.Parallel(backend=_backend(), nproc_per_node=processes, master_port=port) as parallel:
        parallel.run(_rank, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
