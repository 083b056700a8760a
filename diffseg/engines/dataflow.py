"""Data for training and evaluation: the seeded iteration sampler, per-item seeds and the loaders."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ignite.distributed as idist
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from diffseg.config import ExperimentConfig
from diffseg.engines.common import STREAM_AUGMENT, STREAM_EPOCH_ORDER, iteration_seed, make_generator


def per_process_batch(batch_size: int, world_size: int) -> int:
    """This process's share of the global batch ``data.batch_size`` when ``world_size`` processes train; a
    batch that does not split evenly is an error naming the key and the sizes that would."""
    if batch_size % world_size:
        raise ValueError(
            f"config key 'data.batch_size' is the global batch ({batch_size}) and must split evenly over the "
            f"{world_size} processes of this training: give a multiple of {world_size}, or run "
            f"{', '.join(str(n) for n in range(1, batch_size + 1) if batch_size % n == 0)} processes"
        )
    return batch_size // world_size


class IterationSampler(Sampler[list[int]]):
    """Batches of dataset indices as a pure function of (seed, iteration), resumable at any iteration.

    The infinite stream of indices is the concatenation of per-epoch permutations seeded by (seed, epoch);
    iteration i takes the global batch at positions [i * B * world, (i + 1) * B * world) and this rank its slice.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        total_iters: int,
        seed: int,
        start_iter: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_items < 1:
            raise ValueError("the training split is empty")
        self.n, self.bs, self.total, self.seed = num_items, batch_size, total_iters, seed
        self.start, self.rank, self.world = start_iter, rank, world_size
        self._perm_cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perm_cache:
            self._perm_cache = {
                epoch: torch.randperm(
                    self.n,
                    generator=make_generator(
                        iteration_seed(self.seed, epoch, STREAM_EPOCH_ORDER), torch.device("cpu")
                    ),
                )
            }
        return self._perm_cache[epoch]

    def batch(self, iteration: int) -> list[int]:
        global_bs = self.bs * self.world
        start = iteration * global_bs + self.rank * self.bs
        out = []
        for pos in range(start, start + self.bs):
            epoch, k = divmod(pos, self.n)
            out.append(int(self._perm(epoch)[k]))
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(self.start, self.total):
            # Items are keyed by their position in the global batch: under DDP, rank r's item j draws what item
            # r * B + j draws in one process with the global batch.
            first = self.rank * self.bs
            yield [
                (idx, iteration_seed(self.seed, i, STREAM_AUGMENT, first + j))
                for j, idx in enumerate(self.batch(i))
            ]

    def __len__(self) -> int:
        return max(0, self.total - self.start)


class SeededItems(Dataset):
    """Fetch item ``idx`` with the transform's generator reseeded by ``item_seed``: augmentations are a function of
    (seed, iteration, position in batch), whatever the number of workers, and replay exactly on resume."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        idx, item_seed = key
        transform = getattr(self.dataset, "transform", None)
        if transform is not None and hasattr(transform, "reseed"):
            transform.reseed(item_seed)
        return self.dataset[idx]


def get_dataflow(
    cfg: ExperimentConfig, total_iters: int, start_iter: int = 0, seed_offset: int = 0
) -> tuple[DataLoader, DataLoader, Dataset]:
    """Train loader (``IterationSampler``, resumable), val loader (this rank's shard) and the val dataset."""
    from diffseg.data import build_dataset, collate, ensure_synthetic

    if cfg.data.synthetic:
        if idist.get_rank() == 0:
            ensure_synthetic(cfg.data)
        idist.barrier()
    train_ds = build_dataset(cfg.data, "train", train=True)
    val_ds = build_dataset(cfg.data, "val", train=False)
    pin = torch.cuda.is_available()
    workers = cfg.data.num_workers
    sampler = IterationSampler(
        len(train_ds),
        per_process_batch(cfg.data.batch_size, idist.get_world_size()),
        total_iters,
        cfg.seed + seed_offset,
        start_iter,
        idist.get_rank(),
        idist.get_world_size(),
    )
    train_loader = DataLoader(
        SeededItems(train_ds),
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin,
        # The iteration sampler covers the whole run in one pass (one "epoch"), so workers start once either way.
        persistent_workers=False,
    )
    val_indices = list(range(idist.get_rank(), len(val_ds), idist.get_world_size()))
    if cfg.eval.max_images is not None:
        val_indices = [i for i in val_indices if i < cfg.eval.max_images]
    val_loader = DataLoader(
        torch.utils.data.Subset(val_ds, val_indices),
        batch_size=cfg.eval.batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin,
    )
    return train_loader, val_loader, val_ds


def metric_ignore_index(dataset: Dataset) -> int:
    """The label the metrics ignore (ADE20K's 151-class mode ignores class 0, everything else 255)."""
    return int(getattr(dataset, "metric_ignore_index", getattr(dataset, "ignore_index", 255)))
