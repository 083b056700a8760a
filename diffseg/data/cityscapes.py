"""Cityscapes (leftImg8bit / gtFine layout), labelIds -> the 19 trainIds through cityscapesScripts' label table.

Files: leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png and
gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png; a ``*_gtFine_labelTrainIds.png`` beside it (as
written by cityscapesScripts' createTrainIdLabelImgs) is used instead when present.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cityscapesscripts.helpers.labels import labels as _CS_LABELS
from torch.utils.data import Dataset

from diffseg.data.checks import check_label_values, pair_files, require_dir
from diffseg.data.transforms import IGNORE_INDEX, read_pair

_IMG_SUFFIX = "_leftImg8bit.png"
_ID_SUFFIX = "_gtFine_labelIds.png"
_TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"
_SPLITS = ("train", "val", "test")

_TRAIN_LABELS = sorted((lb for lb in _CS_LABELS if 0 <= lb.trainId < 255), key=lambda lb: lb.trainId)
CITYSCAPES_CLASSES: tuple[str, ...] = tuple(lb.name for lb in _TRAIN_LABELS)
CITYSCAPES_PALETTE = np.array([lb.color for lb in _TRAIN_LABELS], dtype=np.uint8)
# Official labelIds that may appear in a labelIds png ("license plate" has id -1 and is never written).
LABEL_IDS: tuple[int, ...] = tuple(sorted(lb.id for lb in _CS_LABELS if lb.id >= 0))
TRAIN_IDS: tuple[int, ...] = (*range(len(_TRAIN_LABELS)), IGNORE_INDEX)


def _label_id_lut() -> np.ndarray:
    """256-entry lookup labelId -> trainId (255 for void / ignoreInEval ids and for ids outside the table)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for lb in _CS_LABELS:
        if lb.id >= 0 and 0 <= lb.trainId < 255:
            lut[lb.id] = lb.trainId
    return lut


LABEL_ID_TO_TRAIN_ID = _label_id_lut()


def _is_train_ids(ann_path: Path) -> bool:
    return ann_path.name.endswith(_TRAIN_ID_SUFFIX)


class Cityscapes(Dataset):
    """Cityscapes fine annotations, 19 classes. Items: ``image`` (3, H, W) float32, ``mask`` (H, W) int64
    (255 = ignore), ``id`` ("<city>_<seq>_<frame>").

    root: folder holding leftImg8bit/ and gtFine/; split: "train" | "val" | "test".
    """

    name = "cityscapes"
    NUM_CLASSES = len(CITYSCAPES_CLASSES)
    CLASS_NAMES = CITYSCAPES_CLASSES
    ignore_index = IGNORE_INDEX
    metric_ignore_index = IGNORE_INDEX
    reduce_zero_label = False

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.root, self.split, self.transform = Path(root), split, transform
        self.num_classes = self.NUM_CLASSES
        self.class_names = CITYSCAPES_CLASSES
        self.palette = CITYSCAPES_PALETTE
        self.files = self.list_files(self.root, split)

    @classmethod
    def list_files(cls, root: str | Path, split: str) -> list[tuple[str, Path, Path]]:
        """``[(id, image.png, annotation.png)]``; the annotation is labelTrainIds when present, else labelIds."""
        if split not in _SPLITS:
            raise ValueError(f"Cityscapes split {split!r} is not valid; expected one of {', '.join(_SPLITS)}")
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"Cityscapes root {root} does not exist")
        img_dir, ann_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        require_dir(img_dir, f"Cityscapes images (<city>/*{_IMG_SUFFIX}) of split {split!r}")
        require_dir(ann_dir, f"Cityscapes annotations (<city>/*{_ID_SUFFIX}) of split {split!r}")
        images = {p.name[: -len(_IMG_SUFFIX)]: p for p in img_dir.glob(f"*/*{_IMG_SUFFIX}")}
        anns = {p.name[: -len(_ID_SUFFIX)]: p for p in ann_dir.glob(f"*/*{_ID_SUFFIX}")}
        for p in ann_dir.glob(f"*/*{_TRAIN_ID_SUFFIX}"):
            anns[p.name[: -len(_TRAIN_ID_SUFFIX)]] = p  # preferred: already in trainIds
        return pair_files(images, anns, f"{img_dir} / {ann_dir}")

    # -- label encoding, shared with diffseg.data.checks --------------------------------------------------------
    @staticmethod
    def raw_valid_values(ann_path: Path) -> tuple[int, ...]:
        return TRAIN_IDS if _is_train_ids(ann_path) else LABEL_IDS

    @staticmethod
    def describe_valid_values(ann_path: Path) -> str:
        if _is_train_ids(ann_path):
            return "trainIds 0..18 or 255"
        return f"official Cityscapes labelIds {LABEL_IDS[0]}..{LABEL_IDS[-1]}"

    @staticmethod
    def encoding_problem(values: dict[Path, set[int]]) -> str | None:
        """What is wrong with the encoding of a split's annotations (``{path: values present}``), or None.

        A trainIds png saved under the labelIds name decodes to wrong classes without any value out of range
        when it holds no 255. Real labelIds scenes always hold an id above 18 (sky 23, vegetation 21, car 26, ...),
        so a labelIds split in which no file does is read as trainIds under the wrong name.
        """
        named_ids = {p: v for p, v in values.items() if not _is_train_ids(p)}
        if named_ids and all(max(v, default=0) <= max(TRAIN_IDS[:-1]) for v in named_ids.values()):
            first = sorted(named_ids)[0]
            return (
                f"every {_ID_SUFFIX} file of this split ({len(named_ids)}, e.g. {first}) holds only values 0..18: "
                f"these look like trainIds saved under the labelIds name; name them "
                f"{first.name.replace(_ID_SUFFIX, _TRAIN_ID_SUFFIX)} (trainIds) or use the official labelIds files"
            )
        with_255 = sorted(p for p, v in named_ids.items() if 255 in v)
        if with_255:
            return (
                f"{with_255[0]} holds 255, the trainIds ignore value, which no labelIds file holds: a trainIds file "
                f"saved under the labelIds name? name it {with_255[0].name.replace(_ID_SUFFIX, _TRAIN_ID_SUFFIX)}"
            )
        return None

    @staticmethod
    def encode(raw: np.ndarray, ann_path: Path) -> np.ndarray:
        """Annotation (H, W) uint8 -> trainIds (H, W) uint8, 255 = ignore."""
        return raw if _is_train_ids(ann_path) else LABEL_ID_TO_TRAIN_ID[raw]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item_id, img_path, ann_path = self.files[index]
        image, raw = read_pair(img_path, ann_path)
        check_label_values(
            raw, ann_path, self.raw_valid_values(ann_path), self.describe_valid_values(ann_path)
        )
        labels = self.encode(raw, ann_path)
        item = {"image": image, "mask": torch.from_numpy(labels.astype(np.int64)), "id": item_id}
        return self.transform(item) if self.transform is not None else item
