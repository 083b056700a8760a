"""Validation of a dataset root: layout, image/annotation pairing, sizes, decodability and label values.

The dataset classes call :func:`pair_files` at construction so a broken root fails there, naming the files;
:func:`check_dataset` goes further (opens every file) and returns a summary for ``diffseg data check``.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


class DatasetError(ValueError):
    """A dataset root is malformed; the message names the offending file(s) / value(s) and what was expected."""


@functools.cache
def _valid_lut(valid: tuple[int, ...]) -> np.ndarray:
    lut = np.zeros(256, dtype=bool)
    lut[list(valid)] = True
    return lut


def check_label_values(raw: np.ndarray, ann_path: Path, valid: Any, description: str) -> None:
    """Raise a `DatasetError` naming ``ann_path`` and its bad values when ``raw`` (H, W) uint8 holds a value
    outside ``valid`` (one table lookup per pixel: cheap enough for every item a training reads)."""
    ok = _valid_lut(tuple(valid))[raw]
    if not ok.all():
        bad = np.unique(raw[~ok]).tolist()
        raise DatasetError(
            f"{ann_path} holds label value(s) {_name_some([str(v) for v in bad])} outside the expected encoding "
            f"({description}); fix or remove the file (`diffseg data check` lists every such file)"
        )


def _name_some(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else f" ({len(items)} in all)")


def require_dir(path: Path, what: str) -> None:
    """Raise DatasetError naming ``path`` when the folder ``what`` (e.g. 'ADE20K images of split train') is missing."""
    if not path.is_dir():
        raise DatasetError(f"missing folder {path}: expected the {what} there")


def pair_files(
    images: dict[str, Path], annotations: dict[str, Path], where: str
) -> list[tuple[str, Path, Path]]:
    """Match images and annotations by key (the file stem the dataset uses as item id).

    Returns ``[(id, image_path, annotation_path)]`` sorted by id. Raises DatasetError naming some of the unpaired
    files (and their count) in either direction, or when ``where`` (a split) holds no image at all.
    """
    if not images and not annotations:
        raise DatasetError(f"empty split: no images and no annotations found in {where}")
    lonely_images = sorted(str(images[k]) for k in images.keys() - annotations.keys())
    lonely_anns = sorted(str(annotations[k]) for k in annotations.keys() - images.keys())
    if lonely_images:
        raise DatasetError(f"image(s) without annotation in {where}: {_name_some(lonely_images)}")
    if lonely_anns:
        raise DatasetError(f"annotation(s) without image in {where}: {_name_some(lonely_anns)}")
    return [(k, images[k], annotations[k]) for k in sorted(images)]


def _open_fully(path: Path) -> Image.Image:
    """Open ``path`` and decode every pixel (verify() alone misses truncated JPEG data)."""
    try:
        with Image.open(path) as probe:
            probe.verify()
        img = Image.open(path)
        img.load()
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError...) for bad files
        raise DatasetError(f"corrupt or truncated image {path}: {type(e).__name__}: {e}") from e
    return img


def check_dataset(
    name: str, root: str | Path, splits: list[str] | tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Validate a dataset root and summarise it.

    name: "ade20k" | "cityscapes"; splits: default ("train", "val").
    Returns ``{"name", "root", "num_classes", "class_names", "splits": {split: {"count", "image_sizes":
    {"HxW": n}, "label_hist": {class_name: pixels, ..., "ignore": pixels}}}}`` where the histogram is in the
    dataset's training label space (ADE20K: the 150-class mode).
    Raises FileNotFoundError (missing root) or DatasetError (anything else wrong).
    """
    from diffseg.data import DATASETS  # here, not at the top: the dataset modules import this one

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(sorted(DATASETS))}")
    cls = DATASETS[name]
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist (expected a {name} dataset there)")
    splits = tuple(splits or ("train", "val"))
    summary: dict[str, Any] = {
        "name": name,
        "root": str(root),
        "num_classes": cls.NUM_CLASSES,
        "class_names": list(cls.CLASS_NAMES),
        "splits": {},
    }
    for split in splits:
        files = cls.list_files(root, split)
        sizes: Counter[str] = Counter()
        hist = np.zeros(256, dtype=np.int64)
        present: dict[Path, set[int]] = {}
        for _, img_path, ann_path in files:
            img = _open_fully(img_path)
            ann = _open_fully(ann_path)
            if img.size != ann.size:
                raise DatasetError(
                    f"size mismatch: image {img_path} is {img.size[0]}x{img.size[1]} (WxH) but annotation "
                    f"{ann_path} is {ann.size[0]}x{ann.size[1]}; expected equal sizes"
                )
            if ann.mode not in ("L", "P", "I", "I;16"):
                raise DatasetError(
                    f"annotation {ann_path} has mode {ann.mode}; expected a single-channel label png"
                )
            raw = np.asarray(ann)
            values = set(np.unique(raw).tolist())
            present[ann_path] = values
            bad = sorted(int(v) for v in values - set(cls.raw_valid_values(ann_path)))
            if bad:
                raise DatasetError(
                    cls.encoding_problem({ann_path: values})
                    or f"label value(s) {bad} in {ann_path} are outside the {name} range; expected "
                    f"{cls.describe_valid_values(ann_path)}"
                )
            sizes[f"{img.size[1]}x{img.size[0]}"] += 1
            hist += np.bincount(cls.encode(raw, ann_path).ravel(), minlength=256)[:256]
        # Some mistakes show only across files: a whole split in another encoding with every value in range.
        problem = cls.encoding_problem(present)
        if problem:
            raise DatasetError(problem)
        label_hist = {n: int(hist[i]) for i, n in enumerate(cls.CLASS_NAMES)}
        label_hist["ignore"] = int(hist[255])
        summary["splits"][split] = {"count": len(files), "image_sizes": dict(sizes), "label_hist": label_hist}
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A human-readable table of :func:`check_dataset`'s summary (counts, sizes, per-class pixel shares)."""
    lines = [f"{summary['name']} at {summary['root']}: {summary['num_classes']} classes, OK"]
    for split, info in summary["splits"].items():
        sizes = ", ".join(f"{k} ({v})" for k, v in sorted(info["image_sizes"].items()))
        lines.append(f"  {split}: {info['count']} images; sizes (HxW): {sizes}")
        total = sum(info["label_hist"].values()) or 1
        present = [(k, v) for k, v in info["label_hist"].items() if v > 0]
        present.sort(key=lambda kv: -kv[1])
        lines.append(f"    classes present: {len(present) - ('ignore' in dict(present))}")
        for k, v in present:
            lines.append(f"    {k:<24s} {v:>12d} px  {100.0 * v / total:6.2f}%")
    return "\n".join(lines)
