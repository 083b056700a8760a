"""Reference boundary counts: the straightforward per-class definition of the release's boundary IoU.

One class at a time, erosion by explicit 3x3 AND: slow, but obviously the definition. `diffseg.metrics` computes
the same counts for all classes at once; the tests check them count for count against these, and
``benchmarks/metrics.py`` times them against these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reference_class_boundary(label: torch.Tensor, c: int, d: int) -> torch.Tensor:
    """Boundary of class c, as the release: M_c minus M_c eroded d times by a 3x3 square, outside = not-c.

    label: (B, H, W) integer; returns (B, H, W) bool.
    """
    mask = label == c
    eroded = mask
    for _ in range(d):
        # One 3x3 erosion = AND over the 3x3 neighbourhood, with a False ring re-padded at every step: the
        # outside of the image is not-c (cv2 pads once with a zero ring that erosion keeps at zero: the same).
        p = F.pad(eroded, (1, 1, 1, 1), value=False)
        rows = p[:, :, :-2] & p[:, :, 1:-1] & p[:, :, 2:]
        eroded = rows[:, :-2] & rows[:, 1:-1] & rows[:, 2:]
    return mask & ~eroded


def reference_boundary_counts(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int, d: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class |B_gt & B_pred| and |B_gt | B_pred| (int64, (K,)), one class at a time; the ignore class is
    skipped (its counts stay 0)."""
    inter = torch.zeros(num_classes, dtype=torch.int64)
    union = torch.zeros(num_classes, dtype=torch.int64)
    for c in range(num_classes):
        if c == ignore_index:
            continue
        b_gt = reference_class_boundary(target, c, d)
        b_pred = reference_class_boundary(pred, c, d)
        inter[c] = int((b_gt & b_pred).sum())
        union[c] = int((b_gt | b_pred).sum())
    return inter, union
