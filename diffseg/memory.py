"""Peak memory of a piece of work: the CUDA allocator's peak, or on CPU the process's peak resident set size.

On Linux the CPU peak is ``VmHWM`` of ``/proc/self/status``, which writing ``5`` to ``/proc/self/clear_refs``
resets, so a long-lived worker can measure each job on its own; elsewhere it is ``ru_maxrss``, which only grows.
Resident memory includes freed heap the allocator keeps (the sweep's workers keep it on purpose, see
``study.workers.WORKER_MALLOC_ENV``), so on CPU a job's figure is an upper bound on what the job itself needed.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a new peak-memory window: CUDA's allocator peak on a CUDA device, the process's RSS peak on CPU
    (Linux; elsewhere the CPU figure keeps counting from the process's start)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # not Linux, or not allowed: the CPU window stays the process's lifetime
    with contextlib.suppress(OSError):
        _CLEAR_REFS.write_text("5")


def peak_memory(device: torch.device | str) -> int:
    """Peak memory in bytes since :func:`reset_peak_memory`: CUDA tensors allocated on a CUDA device; on CPU the
    process's peak resident set size (all allocations, not only tensors)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB, macOS bytes
