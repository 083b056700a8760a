"""Checkpoints: written atomically, newest first, a truncated one skipped; the refiner's signature check."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from ignite.handlers import EMAHandler
from torch import nn

from diffseg.engines.common import atomic_torch_save

CHECKPOINT_PREFIX = "checkpoint_"


def checkpoint_files(ckpt_dir: Path) -> list[Path]:
    files = [p for p in ckpt_dir.glob(f"{CHECKPOINT_PREFIX}*.pt")]
    return sorted(files, key=lambda p: int(p.stem[len(CHECKPOINT_PREFIX) :]), reverse=True)


def load_latest_checkpoint(ckpt_dir: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """The newest checkpoint that loads; a truncated or corrupt one is reported and the previous one used."""
    for path in checkpoint_files(ckpt_dir):
        try:
            return torch.load(path, map_location="cpu", weights_only=True), path
        except Exception as e:  # noqa: BLE001 - any failure to read means "not usable"
            warnings.warn(
                f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); using the previous one",
                stacklevel=2,
            )
    return None, None


def save_checkpoint(ckpt_dir: Path, iteration: int, state: dict[str, Any], keep: int = 2) -> Path:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"{CHECKPOINT_PREFIX}{iteration}.pt"
    atomic_torch_save(state, path)
    for old in checkpoint_files(ckpt_dir)[keep:]:
        old.unlink(missing_ok=True)
    return path


def refiner_state(refiner: nn.Module, ema: EMAHandler | None, opt: torch.optim.Optimizer, it: int) -> dict:
    return {
        "iteration": it,
        "denoiser": refiner.denoiser.state_dict(),
        "ema": ema.ema_model.state_dict() if ema is not None else None,
        "optimizer": opt.state_dict(),
        "model_signature": refiner_signature(refiner),
        # CPU numbers depend on it (float reductions are split by thread): a resume with another count is warned
        "num_threads": torch.get_num_threads(),
    }


def refiner_signature(refiner: nn.Module) -> dict[str, Any]:
    """What a checkpoint must match to be loaded into this refiner (names, not just shapes, in the error)."""
    return {
        "num_classes": int(refiner.num_classes),
        "segmentor": str(getattr(refiner.segmentor, "name", type(refiner.segmentor).__name__)),
        "num_parameters": int(sum(p.numel() for p in refiner.denoiser.parameters())),
    }


def check_signature(saved: dict[str, Any] | None, refiner: nn.Module, path: Path | str) -> None:
    """Refuse a checkpoint of another model or number of classes, naming what differs."""
    current = refiner_signature(refiner)
    if saved is None:
        raise ValueError(f"{path} is not a diffseg refiner checkpoint (no model signature)")
    diffs = [
        f"{k}: checkpoint has {saved.get(k)!r}, this model expects {v!r}"
        for k, v in current.items()
        if saved.get(k) != v
    ]
    if diffs:
        raise ValueError(f"checkpoint {path} is for another model: " + "; ".join(diffs))
