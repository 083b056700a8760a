"""Masks as pictures: palettes, overlays, boundary bands and the base-vs-refined error map."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Categories of the error map in `comparison_grid`, with their colours.
ERROR_COLORS = np.array(
    [
        [0, 0, 0],  # correct in both (or outside the boundary band)
        [150, 150, 150],  # wrong in base and refined
        [40, 180, 60],  # fixed by the refinement
        [220, 40, 40],  # introduced by the refinement
    ],
    dtype=np.uint8,
)
MASK_TOKEN_COLOR = np.array([128, 128, 128], dtype=np.uint8)


def colorize(mask: Any, palette: Any, ignore_index: int = 255) -> np.ndarray:
    """Class-index map to RGB.

    mask: (H, W) integer class indices (numpy or torch); palette: (K, 3) uint8.
    Returns (H, W, 3) uint8; ``ignore_index`` pixels are black. Any other value outside [0, K) raises ValueError.
    """
    mask = np.asarray(mask)
    palette = np.asarray(palette, dtype=np.uint8)
    if mask.ndim != 2:
        raise ValueError(f"colorize: mask must be (H, W), got shape {mask.shape}")
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"colorize: palette must be (K, 3) uint8, got shape {palette.shape}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"colorize: mask must hold integer class indices, got dtype {mask.dtype}")
    mask = mask.astype(np.int64)
    ignore = mask == ignore_index
    bad = (~ignore) & ((mask < 0) | (mask >= len(palette)))
    if bad.any():
        raise ValueError(
            f"colorize: mask value {int(mask[bad][0])} is outside the palette's {len(palette)} classes "
            f"and is not the ignore index {ignore_index}"
        )
    out = palette[np.where(ignore, 0, mask)]
    out[ignore] = 0
    return out


def overlay(image: Any, mask: Any, palette: Any, alpha: float = 0.5, ignore_index: int = 255) -> np.ndarray:
    """Blend a colourised mask over an image; ignore pixels show the image unchanged.

    image: (H, W, 3) uint8, or float in [0, 1] as (H, W, 3) or (3, H, W); mask: (H, W) int.
    Returns (H, W, 3) uint8.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay: alpha must be in [0, 1], got {alpha}")
    img = to_uint8_image(image)
    mask = np.asarray(mask)
    if img.shape[:2] != mask.shape:
        raise ValueError(f"overlay: image {img.shape[:2]} and mask {mask.shape} differ in size")
    color = colorize(mask, palette, ignore_index).astype(np.float32)
    blend = (1.0 - alpha) * img.astype(np.float32) + alpha * color
    keep = (mask == ignore_index)[..., None]
    return np.where(keep, img, np.clip(blend + 0.5, 0, 255)).astype(np.uint8)


def to_uint8_image(image: Any) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.transpose(1, 2, 0)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3) or (3, H, W), got shape {img.shape}")
    if img.dtype != np.uint8:
        img = np.clip(img.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return img


def boundary_band(mask: Any, width: int = 1, ignore_index: int = 255) -> np.ndarray:
    """Pixels within ``width`` pixels (chessboard distance) of a pixel of another label or of the image border.

    mask: (H, W) int. Returns (H, W) bool. This is the union over classes of the release's boundary (paper.md,
    mBIoU: ``width`` 3x3 erosions, the outside of the image counting as another class, ignore pixels "not c" for
    every class and never boundary themselves), i.e. what ``diffseg.metrics.boundary_map(...) >= 0`` marks;
    computed in numpy so that pictures need no torch.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"boundary_band: mask must be (H, W), got shape {mask.shape}")
    if width < 1:
        raise ValueError(f"boundary_band: width must be >= 1, got {width}")
    k = 2 * width + 1
    # a pixel is boundary iff its window holds another label: window max != window min (separable, O(k) a pixel)
    padded = np.pad(mask.astype(np.int64), width, mode="constant", constant_values=-1)
    win = np.lib.stride_tricks.sliding_window_view
    hi = win(win(padded, k, axis=1).max(-1), k, axis=0).max(-1)
    lo = win(win(padded, k, axis=1).min(-1), k, axis=0).min(-1)
    return (hi != lo) & (mask != ignore_index)


def release_boundary_width(height: int, width: int, ratio: float = 0.02) -> int:
    """The release's boundary depth: ``max(1, round(ratio * image diagonal))`` (as ``diffseg.metrics``)."""
    return max(1, int(round(ratio * math.hypot(height, width))))


def error_map(
    gt: Any, base: Any, refined: Any, ignore_index: int = 255, boundary_width: int | str | None = "release"
) -> np.ndarray:
    """Per-pixel comparison of two predictions against GT.

    gt, base, refined: (H, W) int. Returns (H, W) uint8 categories: 0 correct in both (or ignore, or outside the
    GT boundary band), 1 wrong in both, 2 fixed by the refinement (wrong in base, right in refined), 3 introduced
    by the refinement. ``boundary_width``: "release" (2% of the diagonal, as mBIoU), an int, or None (all pixels).
    """
    gt, base, refined = (np.asarray(a) for a in (gt, base, refined))
    if not gt.shape == base.shape == refined.shape:
        raise ValueError(f"error_map: gt {gt.shape}, base {base.shape}, refined {refined.shape} differ")
    valid = gt != ignore_index
    if boundary_width == "release":
        boundary_width = release_boundary_width(*gt.shape)
    if boundary_width is not None:
        valid &= boundary_band(gt, int(boundary_width), ignore_index)
    wb, wr = (base != gt) & valid, (refined != gt) & valid
    out = np.zeros(gt.shape, dtype=np.uint8)
    out[wb & wr] = 1
    out[wb & ~wr] = 2
    out[~wb & wr] = 3
    return out
