"""ADE20K (ADEChallengeData2016 layout): images/{training,validation}/*.jpg, annotations/.../*.png.

Raw annotation values: 0 = "other", 1..150 = the classes. Two label modes, which give the same mIoU:
- ``reduce_zero_label=True`` (mmseg): 150 classes, 0 -> 255 (ignore), v -> v - 1; ``metric_ignore_index`` = 255.
- ``reduce_zero_label=False`` (the DDPS release): 151 classes, values kept as they are; class 0 is scored out by
  passing ``metric_ignore_index`` = 0 to the metric (255 never occurs in this mode).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from diffseg.data.checks import check_label_values, pair_files, require_dir
from diffseg.data.transforms import IGNORE_INDEX, read_pair

# mmseg's ADE20KDataset class names and palette, in raw-label order 1..150.
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)  # fmt: skip

ADE20K_PALETTE = np.array(
    [
        [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3], [120, 120, 80],
        [140, 140, 140], [204, 5, 255], [230, 230, 230], [4, 250, 7], [224, 5, 255], [235, 255, 7],
        [150, 5, 61], [120, 120, 70], [8, 255, 51], [255, 6, 82], [143, 255, 140], [204, 255, 4],
        [255, 51, 7], [204, 70, 3], [0, 102, 200], [61, 230, 250], [255, 6, 51], [11, 102, 255],
        [255, 7, 71], [255, 9, 224], [9, 7, 230], [220, 220, 220], [255, 9, 92], [112, 9, 255],
        [8, 255, 214], [7, 255, 224], [255, 184, 6], [10, 255, 71], [255, 41, 10], [7, 255, 255],
        [224, 255, 8], [102, 8, 255], [255, 61, 6], [255, 194, 7], [255, 122, 8], [0, 255, 20],
        [255, 8, 41], [255, 5, 153], [6, 51, 255], [235, 12, 255], [160, 150, 20], [0, 163, 255],
        [140, 140, 140], [250, 10, 15], [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0],
        [153, 255, 0], [0, 0, 255], [255, 71, 0], [0, 235, 255], [0, 173, 255], [31, 0, 255],
        [11, 200, 200], [255, 82, 0], [0, 255, 245], [0, 61, 255], [0, 255, 112], [0, 255, 133],
        [255, 0, 0], [255, 163, 0], [255, 102, 0], [194, 255, 0], [0, 143, 255], [51, 255, 0],
        [0, 82, 255], [0, 255, 41], [0, 255, 173], [10, 0, 255], [173, 255, 0], [0, 255, 153],
        [255, 92, 0], [255, 0, 255], [255, 0, 245], [255, 0, 102], [255, 173, 0], [255, 0, 20],
        [255, 184, 184], [0, 31, 255], [0, 255, 61], [0, 71, 255], [255, 0, 204], [0, 255, 194],
        [0, 255, 82], [0, 10, 255], [0, 112, 255], [51, 0, 255], [0, 194, 255], [0, 122, 255],
        [0, 255, 163], [255, 153, 0], [0, 255, 10], [255, 112, 0], [143, 255, 0], [82, 0, 255],
        [163, 255, 0], [255, 235, 0], [8, 184, 170], [133, 0, 255], [0, 255, 92], [184, 0, 255],
        [255, 0, 31], [0, 184, 255], [0, 214, 255], [255, 0, 112], [92, 255, 0], [0, 224, 255],
        [112, 224, 255], [70, 184, 160], [163, 0, 255], [153, 0, 255], [71, 255, 0], [255, 0, 163],
        [255, 204, 0], [255, 0, 143], [0, 255, 235], [133, 255, 0], [255, 0, 235], [245, 0, 255],
        [255, 0, 122], [255, 245, 0], [10, 190, 212], [214, 255, 0], [0, 204, 255], [20, 0, 255],
        [255, 255, 0], [0, 153, 255], [0, 41, 255], [0, 255, 204], [41, 0, 255], [41, 255, 0],
        [173, 0, 255], [0, 245, 255], [71, 0, 255], [122, 0, 255], [0, 255, 184], [0, 92, 255],
        [184, 255, 0], [0, 133, 255], [255, 214, 0], [25, 194, 194], [102, 255, 0], [92, 0, 255],
    ],
    dtype=np.uint8,
)  # fmt: skip

_SPLIT_DIRS = {"train": "training", "val": "validation"}


def _reduce_zero_lut() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[1:151] = np.arange(150, dtype=np.uint8)
    return lut


class ADE20K(Dataset):
    """ADE20K scene parsing. Items: ``image`` (3, H, W) float32, ``mask`` (H, W) int64 (255 = ignore), ``id``.

    root: folder holding images/ and annotations/; split: "train" | "val";
    transform: a callable item -> item (see diffseg.data.transforms); None keeps [0, 1] images at file size.
    """

    name = "ade20k"
    NUM_CLASSES = 150  # in the training label space used by checks (the reduce_zero_label mode)
    CLASS_NAMES = ADE20K_CLASSES
    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        root: str | Path,
        split: str,
        reduce_zero_label: bool = True,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.root, self.split = Path(root), split
        self.reduce_zero_label = reduce_zero_label
        self.transform = transform
        self.files = self.list_files(self.root, split)
        if reduce_zero_label:
            self.num_classes = 150
            self.class_names = ADE20K_CLASSES
            self.palette = ADE20K_PALETTE
            self.metric_ignore_index = IGNORE_INDEX
            self._lut = _reduce_zero_lut()
        else:
            self.num_classes = 151
            self.class_names = ("other", *ADE20K_CLASSES)
            self.palette = np.concatenate([np.zeros((1, 3), np.uint8), ADE20K_PALETTE])
            self.metric_ignore_index = 0
            self._lut = None

    @classmethod
    def list_files(cls, root: str | Path, split: str) -> list[tuple[str, Path, Path]]:
        """``[(id, image.jpg, annotation.png)]`` of a split; raises on missing folders, empty or unpaired splits."""
        if split not in _SPLIT_DIRS:
            raise ValueError(f"ADE20K split {split!r} is not valid; expected one of {', '.join(_SPLIT_DIRS)}")
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"ADE20K root {root} does not exist")
        img_dir = root / "images" / _SPLIT_DIRS[split]
        ann_dir = root / "annotations" / _SPLIT_DIRS[split]
        require_dir(img_dir, f"ADE20K images (*.jpg) of split {split!r}")
        require_dir(ann_dir, f"ADE20K annotations (*.png) of split {split!r}")
        images = {p.stem: p for p in img_dir.glob("*.jpg")}
        anns = {p.stem: p for p in ann_dir.glob("*.png")}
        return pair_files(images, anns, f"{img_dir} / {ann_dir}")

    # -- label encoding, shared with diffseg.data.checks --------------------------------------------------------
    @staticmethod
    def raw_valid_values(ann_path: Path) -> range:
        return range(0, 151)

    @staticmethod
    def describe_valid_values(ann_path: Path) -> str:
        return "raw ADE20K values 0 (other) .. 150"

    @staticmethod
    def encoding_problem(values: dict[Path, set[int]]) -> str | None:
        """None: ADE20K has one encoding, so an out-of-range value (caught per file) is the only way to be wrong."""
        return None

    @staticmethod
    def encode(raw: np.ndarray, ann_path: Path) -> np.ndarray:
        """Raw annotation (H, W) uint8 -> 150-class labels (H, W) uint8, 255 = ignore."""
        return _reduce_zero_lut()[raw]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item_id, img_path, ann_path = self.files[index]
        image, raw = read_pair(img_path, ann_path)
        check_label_values(
            raw, ann_path, self.raw_valid_values(ann_path), self.describe_valid_values(ann_path)
        )
        labels = self._lut[raw] if self._lut is not None else raw
        item = {"image": image, "mask": torch.from_numpy(labels.astype(np.int64)), "id": item_id}
        return self.transform(item) if self.transform is not None else item
