"""Small pieces every engine module uses: devices, seeded generators, atomic writes, batches, DDP unwrapping."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from torch import nn

from diffseg.atomic import atomic_write


class NanLossError(RuntimeError):
    """Training produced a non-finite loss; the message names the iteration and the last good checkpoint."""


def resolve_device(name: str = "auto") -> torch.device:
    """ "auto" -> this process's CUDA device if there is one, else CPU."""
    if name == "auto":
        return idist.device() if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but CUDA is not available here; use device=cpu or auto")
    return torch.device(name)


def iteration_seed(seed: int, iteration: int, stream: int = 0) -> int:
    """A seed for (run seed, iteration, stream): every random draw of an iteration is a pure function of these."""
    return (seed * 1_000_003 + iteration * 7_919 + stream * 104_729) % (2**62)


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through `diffseg.atomic.atomic_write` (a killed save leaves the previous checkpoint)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Any]:
    out = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
    if channels_last and device.type == "cuda":
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


class _Unwrapped:
    """A view of the refiner whose ``denoiser`` is the bare module (DDP stripped) for checkpointing."""

    def __init__(self, refiner: nn.Module) -> None:
        self._r = refiner

    def __getattr__(self, name: str) -> Any:
        if name == "denoiser":
            return _unwrap(self._r.denoiser)
        return getattr(self._r, name)


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
