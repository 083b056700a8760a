"""Figures of a dataset: class pixel frequencies and sample images with their labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from diffseg.viz.artifact_figures import show_image
from diffseg.viz.masks import overlay, to_uint8_image


def class_pixel_counts(dataset: Any, max_items: int | None = None, ignore_index: int = 255) -> pd.DataFrame:
    """Pixel count and share (percent) per class over a dataset (items dict(mask (H,W) long)), and how many
    images contain each class. Columns: class_name, pixels, share, images."""
    names = list(getattr(dataset, "class_names", []))
    if not names:
        raise ValueError(f"class_pixel_counts: dataset {type(dataset).__name__} has no class_names")
    k = len(names)
    pixels = np.zeros(k, dtype=np.int64)
    images = np.zeros(k, dtype=np.int64)
    count = len(dataset) if max_items is None else min(max_items, len(dataset))
    for i in range(count):
        m = np.asarray(dataset[i]["mask"]).ravel()
        m = m[m != ignore_index]
        bad = m[(m < 0) | (m >= k)]
        if bad.size:
            raise ValueError(f"class_pixel_counts: item {i} has label {int(bad[0])} outside the {k} classes")
        c = np.bincount(m, minlength=k)
        pixels += c
        images += c > 0
    share = 100.0 * pixels / max(int(pixels.sum()), 1)
    return pd.DataFrame({"class_name": names, "pixels": pixels, "share": share, "images": images})


def class_frequency(dataset: Any, max_items: int | None = None, top: int = 40, title: str = "") -> Figure:
    """Bar chart of class pixel shares (percent), classes in the dataset palette's colours, most frequent first."""
    counts = class_pixel_counts(dataset, max_items).sort_values("share", ascending=False)
    palette = np.asarray(getattr(dataset, "palette", np.full((len(counts), 3), 100)), dtype=np.uint8)
    colors = [palette[i] / 255.0 for i in counts.index]
    counts, colors = counts.iloc[:top], colors[:top]
    fig = Figure(figsize=(max(5.0, 0.28 * len(counts) + 1.5), 3.4), layout="constrained")
    ax = fig.subplots()
    ax.bar(range(len(counts)), counts["share"], color=colors, edgecolor="black", linewidth=0.3)
    ax.set_xticks(range(len(counts)), counts["class_name"], rotation=75, fontsize=7)
    ax.set(ylabel="share of labelled pixels (%)", title=title or "class frequency")
    return fig


def dataset_samples(dataset: Any, n: int = 4, alpha: float = 0.6) -> Figure:
    """The first ``n`` items: image above, mask overlaid in the dataset's palette below."""
    n = min(n, len(dataset))
    if n < 1:
        raise ValueError("dataset_samples: the dataset is empty")
    palette = np.asarray(dataset.palette, dtype=np.uint8)
    fig = Figure(figsize=(2.4 * n, 4.6), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        item = dataset[i]
        img = to_uint8_image(np.asarray(item["image"]))
        show_image(axes[0, i], img, str(item.get("id", i)))
        show_image(axes[1, i], overlay(img, np.asarray(item["mask"]), palette, alpha))
    return fig
