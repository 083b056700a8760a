"""Throughput of diffseg's metrics on CPU: mIoU vs torchmetrics, mBIoU vs the per-class erosion reference.

    .venv/bin/python benchmarks/metrics.py [--images 16] [--ref-images 2]

Prints a markdown table of images/s (one image per update, as an evaluator sees them) for 150 classes at
512 x 683 (ADE20K-like) and 19 classes at 1024 x 2048 (Cityscapes). The mBIoU reference is the straightforward
definition (each class eroded d times with a 3x3 kernel), the same function tests/test_metrics.py checks the
one-pass implementation against; its counts are checked equal here too. Label maps are piecewise constant with
ignore pixels, the prediction a perturbed copy, so boundaries look like real ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from diffseg.metrics import boundary_counts, boundary_width, confusion_matrix  # noqa: E402
from diffseg.reference_metrics import reference_boundary_counts  # noqa: E402

IGNORE = 255
SETTINGS = [(150, 512, 683), (19, 1024, 2048)]  # (classes, H, W)


def make_pair(num_classes: int, h: int, w: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, target), each (1, H, W) long: regions of ~32 px, 5% ignore in target, pred = target with ~10%
    of its regions relabelled and shifted by a few pixels."""
    cells = torch.randint(0, num_classes, (1, 1, h // 32 + 1, w // 32 + 1), generator=gen).float()
    target = F.interpolate(cells, scale_factor=32, mode="nearest")[0, :, :h, :w].long()
    target[torch.rand(target.shape, generator=gen) < 0.05] = IGNORE
    relabel = torch.rand(cells.shape, generator=gen) < 0.1
    cells = torch.where(relabel, torch.randint(0, num_classes, cells.shape, generator=gen).float(), cells)
    pred = F.interpolate(cells, scale_factor=32, mode="nearest")[0, :, :h, :w].long()
    return torch.roll(pred, shifts=(3, -2), dims=(1, 2)), target


def images_per_s(fn: Callable[[torch.Tensor, torch.Tensor], object], pairs: list, warmup: int = 2) -> float:
    for pred, target in pairs[:warmup]:  # allocator, thread pool, lazy init
        fn(pred, target)
    start = time.perf_counter()
    for pred, target in pairs:
        fn(pred, target)
    return len(pairs) / (time.perf_counter() - start)


def bench(num_classes: int, h: int, w: int, n_images: int, n_ref: int) -> list[tuple]:
    from torchmetrics.classification import MulticlassJaccardIndex

    gen = torch.Generator().manual_seed(0)
    pairs = [make_pair(num_classes, h, w, gen) for _ in range(max(n_images, n_ref))]
    d = boundary_width(h, w)

    jaccard = MulticlassJaccardIndex(num_classes=num_classes, ignore_index=IGNORE, validate_args=False)
    ours_miou = images_per_s(lambda p, t: confusion_matrix(p, t, num_classes, IGNORE), pairs[:n_images])
    tm_miou = images_per_s(lambda p, t: jaccard.update(p, t), pairs[:n_images])

    ours_biou = images_per_s(lambda p, t: boundary_counts(p, t, num_classes, d, IGNORE), pairs[:n_images])
    ref_biou = images_per_s(
        lambda p, t: reference_boundary_counts(p, t, num_classes, IGNORE, d), pairs[:n_ref]
    )
    for pred, target in pairs[:n_ref]:  # same numbers, or the speed means nothing
        ours, ref = (
            boundary_counts(pred, target, num_classes, d, IGNORE),
            reference_boundary_counts(pred, target, num_classes, IGNORE, d),
        )
        if not (torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1])):
            raise RuntimeError(f"boundary counts differ from the reference at K={num_classes}, {h}x{w}")
    size = f"{h}x{w} (d={d})"
    return [
        ("mIoU", num_classes, size, ours_miou, "torchmetrics MulticlassJaccardIndex", tm_miou),
        ("mBIoU", num_classes, size, ours_biou, "per-class 3x3 erosions", ref_biou),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="images timed for the fast paths")
    parser.add_argument("--ref-images", type=int, default=2, help="images timed for the slow mBIoU reference")
    args = parser.parse_args(argv)
    rows = []
    for num_classes, h, w in SETTINGS:
        rows += bench(num_classes, h, w, args.images, args.ref_images)
    print(f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, one image per update\n")
    print("| metric | classes | size | diffseg img/s | baseline | baseline img/s | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for metric, k, size, ours, name, base in rows:
        print(f"| {metric} | {k} | {size} | {ours:.2f} | {name} | {base:.3f} | {ours / base:.1f}x |")


if __name__ == "__main__":
    main()
