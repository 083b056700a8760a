"""Small pieces every engine module uses: devices, seeded generators, atomic writes, batches, DDP unwrapping."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
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


# The random streams of a run, one per kind of draw; a stream's seeds never collide with another's.
STREAM_EPOCH_ORDER = 1  # the permutation of the training split for one epoch
STREAM_AUGMENT = 2  # one training item's augmentation, keyed by its position in the global batch
STREAM_REFINER = 3  # one training item's timestep, prior sample and forward noise, keyed like STREAM_AUGMENT
STREAM_EVAL = 5  # one evaluated image's sampler noise, keyed by its id
STREAM_BASE_INIT = 9  # the base segmentor's initial weights
STREAM_REFINER_INIT = 11  # the denoiser's (and frozen embedding's) initial weights
# torch's global RNG at each refiner step, per rank (the release head's Dropout2d draws from it)
STREAM_GLOBAL = 13


def iteration_seed(seed: int, iteration: int, stream: int = 0, *keys: int) -> int:
    """A seed for (run seed, iteration, stream, *keys): every random draw is a pure function of these.

    ``keys`` tell apart the draws of one iteration: the rank for per-process draws, the position in the global
    batch for per-item draws. The tuple is hashed by numpy's ``SeedSequence``, so distinct tuples give independent
    seeds (a linear mix of the numbers made item 1's augmentation seed equal to the refiner's stream).
    """
    words = [int(seed) % 2**63, int(iteration), int(stream), *(int(k) for k in keys)]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(2))


def image_seed(seed: int, stream: int, image_id: str) -> int:
    """A seed for (run seed, stream, image id): an evaluated image draws the same noise in any batch, on any rank.

    The id's UTF-8 bytes enter the hash as 32-bit words (ids are unique within a split; the length is a word too,
    so no two ids give the same words).
    """
    data = str(image_id).encode()
    words = [int.from_bytes(data[i : i + 4], "little") for i in range(0, len(data), 4)]
    return iteration_seed(seed, 0, stream, len(data), *words)


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through `diffseg.atomic.atomic_write` (a killed save leaves the previous checkpoint)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def autocast_context(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: dict[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Any]:
    out = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
    if channels_last and device.type == "cuda":
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


class Unwrapped:
    """A view of the refiner whose ``denoiser`` is the bare module (DDP stripped) for checkpointing."""

    def __init__(self, refiner: nn.Module) -> None:
        self._r = refiner

    def __getattr__(self, name: str) -> Any:
        if name == "denoiser":
            return unwrap(self._r.denoiser)
        return getattr(self._r, name)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
