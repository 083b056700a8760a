"""The release's frozen bases: the mmsegmentation 0.30 model-zoo checkpoint of each (dataset, base) of the paper.

The ``paper`` profile reads each base's weights from ``$DIFFSEG_CHECKPOINTS/<file>`` (default ``checkpoints/``);
:func:`missing_checkpoints` lists what a study still needs, with the zoo folder each file comes from, so a run
without them fails before any work. File names are the zoo's own (mmseg 0.30's ``configs/*/*.yml``); the mIoU is
the zoo's single-scale / multi-scale + flip figure for that exact file (None where the zoo gives none).
SegFormer-B2 on ADE20K is the file the release's configs freeze (``segformer_b2_ade20k_*.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CHECKPOINTS_ENV = "DIFFSEG_CHECKPOINTS"
DEFAULT_CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class ZooCheckpoint:
    """One mmseg 0.30 zoo file: ``folder/file`` under the zoo's ``v0.5/`` tree, and its published mIoU."""

    config: str  # the zoo config (and folder) name
    file: str
    family: str  # the zoo's top folder: segformer | deeplabv3plus | mobilenet_v2
    miou_ss: float
    miou_ms: float | None

    @property
    def zoo_path(self) -> str:
        """Where the file sits in the mmseg zoo (``v0.5/<family>/<config>/<file>``)."""
        return f"v0.5/{self.family}/{self.config}/{self.file}"


def _ck(config: str, stamp: str, family: str, ss: float, ms: float | None) -> ZooCheckpoint:
    return ZooCheckpoint(config, f"{config}_{stamp}.pth", family, ss, ms)


# (dataset, registry name) -> zoo checkpoint. ADE20K: 512x512 crops, 160k iterations; Cityscapes: SegFormer at
# 1024x1024 crops (160k), DeepLabV3+ at 512x1024 (80k).
ZOO: dict[tuple[str, str], ZooCheckpoint] = {
    ("ade20k", "segformer-b0-mmseg"): _ck(
        "segformer_mit-b0_512x512_160k_ade20k", "20220617_162207-c00b9603", "segformer", 37.85, 38.97
    ),
    ("ade20k", "segformer-b2-mmseg"): _ck(
        "segformer_mit-b2_512x512_160k_ade20k", "20220620_114047-64e4feca", "segformer", 46.80, 48.12
    ),
    ("ade20k", "segformer-b5-mmseg"): _ck(
        "segformer_mit-b5_512x512_160k_ade20k", "20210726_145235-94cedf59", "segformer", 49.13, 50.22
    ),
    ("ade20k", "deeplabv3plus-m-v2-d8"): _ck(
        "deeplabv3plus_m-v2-d8_512x512_160k_ade20k", "20200825_223255-465a01d4", "mobilenet_v2", 34.02, None
    ),
    ("ade20k", "deeplabv3plus-r50-d8"): _ck(
        "deeplabv3plus_r50-d8_512x512_160k_ade20k", "20200615_124504-6135c7e0", "deeplabv3plus", 43.95, 44.93
    ),
    ("ade20k", "deeplabv3plus-r101-d8"): _ck(
        "deeplabv3plus_r101-d8_512x512_160k_ade20k", "20200615_123232-38ed86bb", "deeplabv3plus", 45.47, 46.35
    ),
    ("cityscapes", "segformer-b0-mmseg"): _ck(
        "segformer_mit-b0_8x1_1024x1024_160k_cityscapes",
        "20211208_101857-e7f88502",
        "segformer",
        76.54,
        78.22,
    ),
    ("cityscapes", "segformer-b2-mmseg"): _ck(
        "segformer_mit-b2_8x1_1024x1024_160k_cityscapes",
        "20211207_134205-6096669a",
        "segformer",
        81.08,
        82.18,
    ),
    ("cityscapes", "segformer-b5-mmseg"): _ck(
        "segformer_mit-b5_8x1_1024x1024_160k_cityscapes",
        "20211206_072934-87a052ec",
        "segformer",
        82.25,
        83.48,
    ),
    ("cityscapes", "deeplabv3plus-m-v2-d8"): _ck(
        "deeplabv3plus_m-v2-d8_512x1024_80k_cityscapes",
        "20200825_124836-d256dd4b",
        "mobilenet_v2",
        75.20,
        None,
    ),
    ("cityscapes", "deeplabv3plus-r50-d8"): _ck(
        "deeplabv3plus_r50-d8_512x1024_80k_cityscapes",
        "20200606_114049-f9fb496d",
        "deeplabv3plus",
        80.09,
        81.13,
    ),
    ("cityscapes", "deeplabv3plus-r101-d8"): _ck(
        "deeplabv3plus_r101-d8_512x1024_80k_cityscapes",
        "20200606_114143-068fcfe9",
        "deeplabv3plus",
        80.97,
        82.03,
    ),
}


def checkpoints_dir() -> Path:
    """``$DIFFSEG_CHECKPOINTS`` or ``checkpoints/``: where the paper profile looks for zoo files."""
    return Path(os.environ.get(CHECKPOINTS_ENV) or DEFAULT_CHECKPOINTS)


def zoo_checkpoint(dataset: str, segmentor: str) -> ZooCheckpoint:
    """The zoo file of a (dataset, base); a pair the zoo table lacks is an error listing the known ones."""
    try:
        return ZOO[(dataset, segmentor)]
    except KeyError:
        known = ", ".join(f"{d}/{s}" for d, s in ZOO)
        raise ValueError(f"no mmseg zoo checkpoint for {dataset}/{segmentor}; known: {known}") from None


def zoo_weights(dataset: str, segmentor: str) -> str:
    """The path the paper profile gives ``segmentor.weights``: ``<checkpoints_dir>/<zoo file>``."""
    return str(checkpoints_dir() / zoo_checkpoint(dataset, segmentor).file)


def missing_checkpoints(weights: list[str]) -> list[str]:
    """One line per weights file of ``weights`` that does not exist, naming the zoo folder it comes from."""
    by_file = {ck.file: ck for ck in ZOO.values()}
    lines = []
    for w in dict.fromkeys(weights):
        if Path(w).expanduser().is_file():
            continue
        ck = by_file.get(Path(w).name)
        where = f" (mmseg zoo {ck.zoo_path})" if ck else ""
        lines.append(f"{w}{where}")
    return lines
