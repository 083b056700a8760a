"""Figures over the saved artifacts: comparison grids, denoising trajectories, what the mask prior learned."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from diffseg.viz.masks import ERROR_COLORS, MASK_TOKEN_COLOR, colorize, error_map, to_uint8_image


def _artifact(artifacts: Mapping[str, Any], key: str) -> np.ndarray:
    if key not in artifacts:
        raise ValueError(f"artifacts lack {key!r}; they hold {sorted(artifacts)}")
    return np.asarray(artifacts[key])


def show_image(ax: Any, rgb: np.ndarray, title: str = "") -> None:
    ax.imshow(rgb, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _colorize_state(x: np.ndarray, palette: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Colourise a noisy state x_t: class indices, the [MASK] token (index K, grey), or a continuous map."""
    if not np.issubdtype(x.dtype, np.integer):
        # the Gaussian arm's state is continuous: show its first channel in grey
        v = x if x.ndim == 2 else x[0]
        v = (v - v.min()) / (np.ptp(v) + 1e-8)
        return np.repeat((v * 255).astype(np.uint8)[..., None], 3, axis=-1)
    return colorize(x, np.concatenate([palette, MASK_TOKEN_COLOR[None]]), ignore_index)


def comparison_grid(
    artifacts: Mapping[str, Any],
    palette: Any,
    n: int = 4,
    ignore_index: int = 255,
    boundary_width: int | str | None = "release",
    step: int = -1,
) -> Figure:
    """Rows of image / GT / base / refined / boundary errors for the first ``n`` images.

    artifacts: image (N,H,W,3) uint8, gt (N,H,W), base (N,H,W), refined_steps (S,N,H,W); ``step`` picks the
    refined step (default the last). Boundary errors: within the GT boundary band, green = fixed by the
    refinement, red = introduced by it, grey = wrong in both.
    """
    image, gt, base = (_artifact(artifacts, k) for k in ("image", "gt", "base"))
    refined = _artifact(artifacts, "refined_steps")[step]
    palette = np.asarray(palette, dtype=np.uint8)
    n = min(n, len(image))
    if n < 1:
        raise ValueError("comparison_grid: the artifacts hold no images")
    fig = Figure(figsize=(2.2 * 5, 2.0 * n + 0.4), layout="constrained")
    axes = fig.subplots(n, 5, squeeze=False)
    for i in range(n):
        err = error_map(gt[i], base[i], refined[i], ignore_index, boundary_width)
        acc_b = _pixel_acc(base[i], gt[i], ignore_index)
        acc_r = _pixel_acc(refined[i], gt[i], ignore_index)
        show_image(axes[i, 0], to_uint8_image(image[i]), "image" if i == 0 else "")
        show_image(axes[i, 1], colorize(gt[i], palette, ignore_index), "ground truth" if i == 0 else "")
        show_image(axes[i, 2], colorize(base[i], palette, ignore_index), f"base ({acc_b:.1f}% px)")
        show_image(axes[i, 3], colorize(refined[i], palette, ignore_index), f"refined ({acc_r:.1f}% px)")
        show_image(axes[i, 4], ERROR_COLORS[err], "boundary errors" if i == 0 else "")
    fig.legend(
        handles=[
            Patch(color=ERROR_COLORS[k] / 255.0, label=lbl)
            for k, lbl in ((2, "fixed"), (3, "new"), (1, "both"))
        ],
        loc="outside lower center",
        ncols=3,
        fontsize=8,
    )
    return fig


def _pixel_acc(pred: np.ndarray, gt: np.ndarray, ignore_index: int) -> float:
    valid = gt != ignore_index
    return float((pred[valid] == gt[valid]).mean() * 100.0) if valid.any() else float("nan")


def artifact_summary(artifacts: Mapping[str, Any], ignore_index: int = 255) -> dict[str, float]:
    """Pixel accuracy (percent) of base and final refined on the stored images, and shares of pixels fixed/broken."""
    gt, base = _artifact(artifacts, "gt"), _artifact(artifacts, "base")
    refined = _artifact(artifacts, "refined_steps")[-1]
    valid = gt != ignore_index
    if not valid.any():
        raise ValueError("artifact_summary: every GT pixel is ignore")
    wb, wr = (base != gt) & valid, (refined != gt) & valid
    total = float(valid.sum())
    return {
        "images": int(len(gt)),
        "base_acc": float(100.0 * (1 - wb.sum() / total)),
        "refined_acc": float(100.0 * (1 - wr.sum() / total)),
        "fixed_pct": float(100.0 * (wb & ~wr).sum() / total),
        "broken_pct": float(100.0 * (~wb & wr).sum() / total),
        "changed_pct": float(100.0 * ((base != refined) & valid).sum() / total),
    }


def trajectory_grid(artifacts: Mapping[str, Any], palette: Any, index: int = 0, max_steps: int = 8) -> Figure:
    """The denoising trajectory of image ``index``: noisy input x_t (top) and prediction x0_hat (bottom) per step.

    artifacts: x_t_steps (S,N,h,w), refined_steps (S,N,H,W), t_steps (S,); at most ``max_steps`` evenly spaced
    steps are drawn (always the first and the last). The [MASK] token of absorbing kernels is grey.
    """
    xt = _artifact(artifacts, "x_t_steps")
    x0 = _artifact(artifacts, "refined_steps")
    ts = _artifact(artifacts, "t_steps")
    palette = np.asarray(palette, dtype=np.uint8)
    if not 0 <= index < x0.shape[1]:
        raise ValueError(f"trajectory_grid: index {index} outside the {x0.shape[1]} stored images")
    s = len(x0)
    picks = sorted(set(np.linspace(0, s - 1, min(max_steps, s)).round().astype(int).tolist()))
    fig = Figure(figsize=(1.9 * len(picks), 4.0), layout="constrained")
    axes = fig.subplots(2, len(picks), squeeze=False)
    for j, k in enumerate(picks):
        show_image(axes[0, j], _colorize_state(xt[k, index], palette), f"step {k + 1}, t={int(ts[k])}\nx_t")
        show_image(axes[1, j], colorize(x0[k, index], palette), "x0_hat")
    return fig


def _downsample_nearest(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """(..., H, W) -> (..., h, w) by picking the pixel at each output cell's centre."""
    H, W = mask.shape[-2:]
    rows = ((np.arange(h) + 0.5) * H / h).astype(int)
    cols = ((np.arange(w) + 0.5) * W / w).astype(int)
    return mask[..., rows[:, None], cols[None, :]]


def prior_table(artifacts: Mapping[str, Any], ignore_index: int = 255) -> pd.DataFrame:
    """Per noise level: share of pixels (percent, GT at 1/4 resolution, ignore excluded) equal to GT before and
    after one-shot denoising by the mask prior (columns level, noised_acc, denoised_acc, gain)."""
    gt = _artifact(artifacts, "prior_gt")
    noised, den = _artifact(artifacts, "prior_noised"), _artifact(artifacts, "prior_denoised")
    levels = _artifact(artifacts, "prior_levels")
    small = _downsample_nearest(gt, *noised.shape[-2:])
    valid = small != ignore_index
    rows = []
    for i, lvl in enumerate(levels):
        a = float((noised[i][valid] == small[valid]).mean() * 100.0)
        b = float((den[i][valid] == small[valid]).mean() * 100.0)
        rows.append(
            {
                "level": lvl.item() if hasattr(lvl, "item") else lvl,
                "noised_acc": a,
                "denoised_acc": b,
                "gain": b - a,
            }
        )
    return pd.DataFrame(rows)


def prior_grid(artifacts: Mapping[str, Any], palette: Any, n: int = 2) -> Figure:
    """Ground truth noised at each level (upper row per image) and its one-shot denoised x0_hat (lower row).

    artifacts: prior_gt (N,H,W), prior_noised / prior_denoised (L,N,h,w), prior_levels (L,).
    """
    gt = _artifact(artifacts, "prior_gt")
    noised, den = _artifact(artifacts, "prior_noised"), _artifact(artifacts, "prior_denoised")
    levels = _artifact(artifacts, "prior_levels")
    palette = np.asarray(palette, dtype=np.uint8)
    n = min(n, gt.shape[0])
    n_lv = len(levels)
    fig = Figure(figsize=(1.9 * (n_lv + 1), 3.8 * n), layout="constrained")
    axes = fig.subplots(2 * n, n_lv + 1, squeeze=False)
    for i in range(n):
        show_image(axes[2 * i, 0], colorize(gt[i], palette), "ground truth")
        axes[2 * i + 1, 0].set_axis_off()
        for j in range(n_lv):
            show_image(
                axes[2 * i, j + 1], _colorize_state(noised[j, i], palette), f"noised, level {levels[j]}"
            )
            show_image(axes[2 * i + 1, j + 1], colorize(den[j, i], palette), "denoised x0_hat")
    return fig


def prior_samples(artifacts: Mapping[str, Any], palette: Any, n: int = 8) -> Figure:
    """Masks sampled from pure noise with the condition zeroed: what the mask prior alone believes masks look like.

    artifacts: prior_samples (M,h,w).
    """
    samples = _artifact(artifacts, "prior_samples")
    palette = np.asarray(palette, dtype=np.uint8)
    n = min(n, len(samples))
    if n < 1:
        raise ValueError("prior_samples: the artifacts hold no samples")
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(2.2 * ncols, 2.2 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for k, ax in enumerate(axes):
        if k < n:
            show_image(ax, colorize(samples[k], palette), f"sample {k + 1}")
        else:
            ax.set_axis_off()
    return fig
