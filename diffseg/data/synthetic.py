"""Procedural scenes (``diffseg.data.scenes``) written in the real ADE20K and Cityscapes on-disk layouts: the
study's embedded default.

Each image is drawn from ``np.random.default_rng([seed, split, index])``, so a file does not depend on how many
others are written. Writing is atomic: into a temporary folder beside ``root``, renamed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from diffseg.config import DataConfig
from diffseg.data.scenes import draw_room, draw_street
from diffseg.paths import resolve

LAYOUTS = ("ade20k", "cityscapes")
DEFAULT_SIZE = {"ade20k": (128, 128), "cityscapes": (64, 128)}  # (H, W)
META_FILE = "synthetic.json"

CITIES = {
    "train": ("aachen", "bochum", "bremen"),
    "val": ("frankfurt", "lindau", "munster"),
}

# --------------------------------------------------------------------------------------------------------------
# Writing datasets


def _ade_paths(root: Path, split: str, i: int) -> tuple[Path, Path]:
    folder = {"train": "training", "val": "validation"}[split]
    stem = f"ADE_{split}_{i + 1:08d}"
    return root / "images" / folder / f"{stem}.jpg", root / "annotations" / folder / f"{stem}.png"


def _cs_paths(root: Path, split: str, i: int) -> tuple[Path, Path]:
    cities = CITIES[split]
    city = cities[i % len(cities)]
    stem = f"{city}_{i // len(cities):06d}_{19 + 10 * (i % 7):06d}"  # <city>_<seq>_<frame>
    return (
        root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
        root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
    )


_WRITERS: dict[str, tuple[Callable, Callable, str]] = {
    "ade20k": (draw_room, _ade_paths, "JPEG"),
    "cityscapes": (draw_street, _cs_paths, "PNG"),
}


def holds_dataset(layout: str, root: str | Path) -> bool:
    """Whether ``root`` already has the top-level folders of ``layout`` (then it is reused, never rewritten)."""
    root = Path(root)
    dirs = ("images", "annotations") if layout == "ade20k" else ("leftImg8bit", "gtFine")
    return all((root / d).is_dir() for d in dirs)


def write_synthetic(
    layout: str,
    root: str | Path,
    n_train: int,
    n_val: int,
    size: tuple[int, int] | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write ``n_train`` + ``n_val`` synthetic scenes at ``size`` (H, W) in the on-disk layout ``layout``.

    Returns ``root``. Raises ValueError on a bad layout / count / size, or when ``root`` exists and is not empty
    (unless ``overwrite``). The dataset is built in a temporary folder beside ``root`` and renamed into place, so an
    interrupted run never leaves a half-written dataset.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown synthetic layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    size = tuple(size) if size is not None else DEFAULT_SIZE[layout]
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"synthetic size must be (H, W) with both >= 16, got {size}")
    if n_train < 1 or n_val < 1:
        raise ValueError(f"synthetic n_train and n_val must be >= 1, got n_train={n_train}, n_val={n_val}")
    root = Path(root)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise ValueError(f"{root} exists and is not empty; choose another root or pass overwrite")
    root.parent.mkdir(parents=True, exist_ok=True)
    draw, paths, fmt = _WRITERS[layout]
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the published dataset is for everyone to read
    try:
        for split_idx, (split, n) in enumerate((("train", n_train), ("val", n_val))):
            for i in range(n):
                rng = np.random.default_rng([seed, split_idx, i])
                image, labels = draw(size[0], size[1], rng)
                img_path, ann_path = paths(tmp, split, i)
                img_path.parent.mkdir(parents=True, exist_ok=True)
                ann_path.parent.mkdir(parents=True, exist_ok=True)
                kw = {"quality": 90} if fmt == "JPEG" else {"compress_level": 1}
                Image.fromarray(image).save(img_path, fmt, **kw)
                Image.fromarray(labels, mode="L").save(ann_path, "PNG", compress_level=1)
        meta = {"layout": layout, "n_train": n_train, "n_val": n_val, "size": list(size), "seed": seed}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        _publish(tmp, root, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _publish(tmp: Path, root: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``root`` (replacing an old ``root`` only with ``overwrite``)."""
    if root.exists() and overwrite:
        trash = root.with_name(f".{root.name}.old-{os.getpid()}")
        root.rename(trash)
        tmp.rename(root)
        shutil.rmtree(trash, ignore_errors=True)
        return
    if root.exists() and not any(root.iterdir()):
        root.rmdir()
    os.rename(tmp, root)  # atomic on one filesystem; fails if another process published first


def ensure_synthetic(cfg: DataConfig) -> Path:
    """Write the synthetic dataset of ``cfg`` (layout ``cfg.dataset``) to ``cfg.root`` unless it holds one already.

    Safe when several processes call it at once: the first rename wins, the others discard their copy.
    A reused root whose recorded parameters differ from ``cfg`` gets a warning (it is not rewritten).
    """
    root = resolve(cfg.root)
    if not holds_dataset(cfg.dataset, root):
        try:
            write_synthetic(
                cfg.dataset, root, cfg.synth_n_train, cfg.synth_n_val, cfg.synth_size, cfg.synth_seed
            )
        except (OSError, ValueError):
            if not holds_dataset(cfg.dataset, root):  # not a lost race: a real problem
                raise
    meta_path = root / META_FILE
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        want = {
            "layout": cfg.dataset,
            "n_train": cfg.synth_n_train,
            "n_val": cfg.synth_n_val,
            "size": list(cfg.synth_size),
            "seed": cfg.synth_seed,
        }
        if meta != want:
            warnings.warn(
                f"reusing synthetic dataset {root} written with {meta}, not the config's {want}", stacklevel=2
            )
    return root
