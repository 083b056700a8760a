"""Datasets: items are dicts ``image`` (3, H, W) float32, ``mask`` (H, W) int64 (255 = ignore), ``id`` str.

ADE20K and Cityscapes read their real on-disk layouts; the synthetic scenes are written in those same layouts, so
the ``cpu`` profile and the ``paper`` profile share every code path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from diffseg.config import DataConfig
from diffseg.data.ade20k import ADE20K, ADE20K_CLASSES, ADE20K_PALETTE
from diffseg.data.checks import DatasetError, check_dataset, format_summary
from diffseg.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, LABEL_ID_TO_TRAIN_ID, Cityscapes
from diffseg.data.synthetic import ensure_synthetic, holds_dataset, write_synthetic
from diffseg.data.transforms import (
    MEAN,
    STD,
    TestTransform,
    TrainTransform,
    build_transforms,
    denormalize,
    normalize,
)
from diffseg.paths import resolve

DATASETS: dict[str, type] = {"ade20k": ADE20K, "cityscapes": Cityscapes}

__all__ = [
    "ADE20K", "ADE20K_CLASSES", "ADE20K_PALETTE", "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE", "DATASETS",
    "LABEL_ID_TO_TRAIN_ID", "MEAN", "STD", "Cityscapes", "DatasetError", "TestTransform", "TrainTransform",
    "build_dataset", "build_transforms", "check_dataset", "collate", "denormalize", "ensure_synthetic",
    "format_summary", "holds_dataset", "normalize", "seed_worker", "write_synthetic",
]  # fmt: skip


def build_dataset(cfg: DataConfig, split: str, train: bool, seed: int = 0) -> Dataset:
    """The dataset ``cfg.dataset`` at ``cfg.root`` with the train (``train=True``) or test pipeline.

    With ``cfg.synthetic`` the synthetic dataset is first written to ``cfg.root`` if it is not there yet.
    ``seed`` seeds the train transform's own generator.
    """
    if cfg.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.dataset!r} in data.dataset; valid: {', '.join(DATASETS)}")
    if cfg.synthetic:
        ensure_synthetic(cfg)
    transform = build_transforms(cfg, train, seed=seed)
    root = resolve(cfg.root)  # a relative root is the project's, wherever the process runs (diffseg.paths)
    if cfg.dataset == "ade20k":
        return ADE20K(root, split, reduce_zero_label=cfg.reduce_zero_label, transform=transform)
    return Cityscapes(root, split, transform=transform)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: reseed the dataset's transform from the worker's own torch seed.

    torch gives each worker ``base_seed + worker_id`` (base_seed drawn from the loader's generator each epoch),
    so workers and epochs get distinct, reproducible augmentation streams.
    """
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if transform is not None and hasattr(transform, "reseed"):
        transform.reseed(torch.initial_seed() % 2**63)


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into ``image`` (B, 3, H, W) float32, ``mask`` (B, H, W) int64, ``id`` list[str]
    (and ``valid_hw`` (B, 2) int64 when present). Items must share their sizes; a clear ValueError says otherwise.
    """
    if not batch:
        raise ValueError("collate got an empty batch")
    out: dict[str, Any] = {"id": [b["id"] for b in batch]}
    for key in batch[0]:
        if key == "id":
            continue
        shapes = {tuple(b[key].shape) for b in batch}
        if len(shapes) > 1:
            raise ValueError(
                f"collate: items of one batch differ in '{key}' size {sorted(shapes)} (ids {out['id']}); "
                "use batch_size=1 or a transform that pads to one size"
            )
        out[key] = torch.stack([b[key] for b in batch])
    return out
