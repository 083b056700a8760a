"""DataLoader throughput of the train pipeline on a synthetic root, and synthetic writing time.

    .venv/bin/python benchmarks/data.py [--layout ade20k] [--n 96] [--batch 8]

Prints a table of images/s for 0, 1, 2 workers (with pin_memory / persistent_workers variants), the ratio
to 0 workers, and the time to write 300 train + 100 val images at 128x128 per layout.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from diffseg.config import DataConfig
from diffseg.data import build_dataset, collate, seed_worker, write_synthetic


def loader_rate(ds, batch: int, workers: int, pin: bool, persistent: bool, epochs: int = 2) -> float:
    """Images/s over ``epochs`` passes (the first batch of the first epoch, i.e. worker start-up, included)."""
    loader = DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=seed_worker,
        pin_memory=pin,
        persistent_workers=persistent and workers > 0,
        generator=torch.Generator().manual_seed(0),
        drop_last=True,
    )
    n, start = 0, time.perf_counter()
    for _ in range(epochs):
        for b in loader:
            n += b["image"].shape[0]
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layout", default="ade20k", choices=("ade20k", "cityscapes"))
    p.add_argument("--n", type=int, default=96, help="train images in the benchmark root")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument(
        "--threads", type=int, default=0, help="torch.set_num_threads in the main process (0: leave)"
    )
    args = p.parse_args()
    if args.threads:
        # Small per-image ops oversubscribe a shared 2-core CPU: 1 thread is ~10x faster there with 0 workers.
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        print("| layout | images | size | write s | images/s |")
        print("|---|---|---|---|---|")
        for layout in ("ade20k", "cityscapes"):
            start = time.perf_counter()
            write_synthetic(layout, Path(tmp) / f"w_{layout}", 300, 100, (128, 128), seed=0)
            took = time.perf_counter() - start
            print(f"| {layout} | 300 + 100 | 128x128 | {took:.2f} | {400 / took:.0f} |")
        cfg = DataConfig(
            dataset=args.layout,
            root=str(Path(tmp) / "bench"),
            synthetic=True,
            synth_n_train=args.n,
            synth_n_val=8,
            synth_size=(128, 128),
            scale=(256, 128),
            crop_size=(128, 128),
        )
        ds = build_dataset(cfg, "train", train=True)
        print(f"\ntrain pipeline, {args.layout} {len(ds)} images 128x128 -> crops 128x128, batch {args.batch}, "
              f"2 epochs, torch threads {torch.get_num_threads()}")  # fmt: skip
        print("| workers | pin_memory | persistent | images/s | vs 0 workers |")
        print("|---|---|---|---|---|")
        base = None
        for workers, pin, persistent in [(0, False, False), (1, False, False), (2, False, False),
                                         (2, True, False), (2, False, True), (2, True, True)]:  # fmt: skip
            rate = loader_rate(ds, args.batch, workers, pin, persistent)
            base = base or rate
            print(f"| {workers} | {pin} | {persistent} | {rate:.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
