"""The local sweep's worker processes: spawned with the heap settings below, one torch thread each on CPU (or
pinned to one GPU each), and ended with the sweep that started them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import torch

from diffseg.study.devices import GPU, gpu_groups, pin_worker, worker_devices

# glibc hands freed memory back to the OS once the heap's free top exceeds M_TRIM_THRESHOLD (128 KiB at start) and
# serves large blocks with fresh mmaps, so a training step that allocates and frees tens of MB of activations
# faults them in again on the next step: ~6,000 minor page faults per cpu refiner step, ~180 with these settings,
# for a 1.04x faster step in one process (`benchmarks/sweep_breakdown.py --malloc`; the gain is small, the faults
# are not free when two workers share the memory bus). Keeping freed memory in the heap costs no resident memory
# beyond the step's peak. glibc reads these once, at process start: they are set for the spawned workers only.
WORKER_MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    "MALLOC_TOP_PAD_": str(64 << 20),
}


@contextmanager
def worker_environment(defaults: Mapping[str, str], forced: Mapping[str, str | None] | None = None):
    """Set this process's environment for the processes started inside the block, then put it back as it was:
    ``defaults`` where the user set nothing (their own values win), ``forced`` whatever they set (None unsets)."""
    forced = forced or {}
    saved = {k: os.environ.get(k) for k in [*defaults, *forced]}
    for k, v in defaults.items():
        os.environ.setdefault(k, v)
    for k, v in forced.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def spawn_pool(ctx: Any, workers: int, gpus: list[GPU] | None = None) -> Any:
    """A pool of ``workers`` spawned processes started with :data:`WORKER_MALLOC_ENV` (the user's own values of
    those variables win); this process's environment is left as it was. With ``gpus``, worker i is pinned to
    ``worker_devices(workers, gpus)[i]`` (`diffseg.study.devices`)."""
    devices = worker_devices(workers, gpus or [])
    # workers take their slot in start order; a worker the pool starts again later takes the next slot
    slot = ctx.Value("i", 0)
    with worker_environment(WORKER_MALLOC_ENV):
        return ctx.Pool(workers, initializer=init_worker, initargs=(devices, slot))


class Pools:
    """The local sweep's worker pools, each started when a phase first needs it and closed by `close`.

    Single-process jobs run on ``workers`` workers (one per core, or one per GPU, each pinned to it); with
    ``group`` > 1 (``--gpus-per-job``) trainings run as ``group``-process jobs (`diffseg.study.process_group`)
    on ``len(gpus) // group`` workers, each pinned to its own ``group`` GPUs, or on CPU ``workers // group``
    workers whose ranks take a core each. One worker runs its jobs in this process (no pool: None).
    """

    def __init__(self, ctx: Any, workers: int, gpus: list[GPU], group: int = 1) -> None:
        self.ctx, self.workers, self.gpus, self.group = ctx, workers, gpus, group
        self._pools: dict[bool, Any] = {}
        if group > 1 and gpus:
            self.grouped_devices: list[GPU] = gpu_groups(gpus, group)
        else:
            self.grouped_devices = []

    def slots(self, grouped: bool) -> int:
        """How many jobs run at once: single-process jobs, or (``grouped``) multi-process trainings."""
        if not grouped:
            return self.workers
        return len(self.grouped_devices) if self.gpus else max(1, self.workers // self.group)

    def get(self, grouped: bool) -> Any:
        n = self.slots(grouped)
        if n <= 1:
            return None
        if grouped not in self._pools:
            gpus = self.grouped_devices if grouped else self.gpus
            self._pools[grouped] = spawn_pool(self.ctx, n, gpus)
        return self._pools[grouped]

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
            pool.join()
        self._pools.clear()


def init_worker(devices: list[GPU | None] | None = None, slot: Any = None) -> None:
    gpu = None
    if devices and slot is not None:
        with slot.get_lock():
            gpu = devices[slot.value % len(devices)]
            slot.value += 1
    pin_worker(gpu)  # before anything here initialises CUDA
    if gpu is None:
        torch.set_num_threads(1)  # one thread per process: the processes, not threads, fill the cores
    else:  # a GPU worker's CPU work (loading, augmenting, the sampler's bookkeeping) shares the node's cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // len(devices)))
    die_with_parent()


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker when the sweep process dies, even by SIGKILL (which runs no handler), so
    a killed sweep leaves no worker training and writing rows behind. A no-op elsewhere."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before the call: nobody is left to wait for this worker
        os._exit(1)


__all__ = ["WORKER_MALLOC_ENV", "Pools", "die_with_parent", "init_worker", "spawn_pool", "worker_environment"]
