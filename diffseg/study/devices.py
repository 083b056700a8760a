"""Where the local sweep's workers run: one worker per visible GPU on CUDA, each pinned to its own device.

The sweep's parent process lists the GPUs it may use (`visible_gpus`), assigns them to its pool workers round
robin (`worker_devices`: as many workers as GPUs by default, so each GPU has one; more workers share GPUs), and each
worker pins itself when it starts (`pin_worker`), before it initialises CUDA: it narrows ``CUDA_VISIBLE_DEVICES``
to its GPU, so everything it runs sees that GPU as ``cuda:0`` (``device=auto`` / ``cuda`` included) and cannot
allocate on another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GPU:
    """One visible GPU: its index in this process (``cuda:<index>``) and its name in ``CUDA_VISIBLE_DEVICES``
    (an ordinal or a UUID, what a child's ``CUDA_VISIBLE_DEVICES`` must say to select it)."""

    index: int
    name: str


def visible_gpus() -> list[GPU]:
    """The GPUs this process may use (none without CUDA), named as its ``CUDA_VISIBLE_DEVICES`` names them."""
    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [d.strip() for d in env.split(",") if d.strip()] if env else []
    if len(names) < count:  # unset (every device is visible) or not naming them one by one
        names = [str(i) for i in range(count)]
    return [GPU(i, names[i]) for i in range(count)]


def worker_devices(workers: int, gpus: list[GPU]) -> list[GPU | None]:
    """The GPU of each of ``workers`` pool workers: round robin over ``gpus`` (worker i gets ``gpus[i % n]``);
    None for every worker when there are no GPUs (CPU workers)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return [gpus[i % len(gpus)] if gpus else None for i in range(workers)]


def gpu_groups(gpus: list[GPU], size: int) -> list[GPU]:
    """``gpus`` cut into groups of ``size`` for multi-GPU trainings (``--gpus-per-job``), each a `GPU` whose name
    lists its members (``"0,1"``: what ``CUDA_VISIBLE_DEVICES`` says to show a worker all of them); GPUs left over
    after the last whole group stay idle. Fewer GPUs than ``size`` is an error that says how many there are."""
    if size < 1:
        raise ValueError(f"--gpus-per-job must be >= 1, got {size}")
    if len(gpus) < size:
        raise ValueError(
            f"--gpus-per-job {size} asks for {size} GPUs per training but this process sees {len(gpus)}"
            + (f" ({', '.join(g.name for g in gpus)})" if gpus else " (no CUDA)")
            + "; give at most that many, or make more visible (CUDA_VISIBLE_DEVICES)"
        )
    whole = len(gpus) // size * size
    return [GPU(gpus[i].index, ",".join(g.name for g in gpus[i : i + size])) for i in range(0, whole, size)]


def pin_worker(gpu: GPU | None) -> None:
    """Make this process use ``gpu`` only (nothing for None). Before CUDA is initialised here (a fresh spawned
    worker): ``CUDA_VISIBLE_DEVICES`` names it alone. After (it cannot be narrowed then): the current device."""
    if gpu is None:
        return
    if torch.cuda.is_initialized():
        torch.cuda.set_device(gpu.index)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu.name
