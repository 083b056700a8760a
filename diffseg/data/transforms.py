"""Train and test pipelines (paper.md, "Training" / "Data conventions"), mmseg semantics in plain torch.

A transform maps an item ``{"image": (3, H, W) float32 in [0, 1], "mask": (H, W) int64, "id": str}`` to a new
item: train -> image normalised and padded to ``crop_size``, mask padded with 255; test -> image resized into
``test_scale``, normalised and padded to a multiple of 32 (bottom/right), mask left at its original resolution,
plus ``valid_hw``: (2,) int64, the resized image's size before padding.
Masks are only ever resized with nearest neighbour, so no label value is invented.

Randomness: every draw comes from a ``torch.Generator``, the one passed to ``__call__`` or the one the transform
owns (seeded at construction). With DataLoader workers, reseed the owned generator per worker
(:func:`diffseg.data.seed_worker`); otherwise each worker would repeat the same augmentations.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

from diffseg.config import DataConfig
from diffseg.data.checks import DatasetError

# ImageNet statistics on [0, 1] images (mmseg's 123.675, 116.28, 103.53 / 58.395, 57.12, 57.375 divided by 255).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255


def read_image(path: str | Path) -> torch.Tensor:
    """An RGB file as (3, H, W) float32 in [0, 1]; an unreadable or truncated file is a `DatasetError` naming it."""
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except OSError as e:  # PIL's UnidentifiedImageError, "image file is truncated", permissions
        raise DatasetError(f"cannot read image {path}: {e}") from e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def read_pair(img_path: Path, ann_path: Path) -> tuple[torch.Tensor, np.ndarray]:
    """An image (3, H, W) float32 in [0, 1] and its raw annotation (H, W) uint8; a size mismatch names both files."""
    image = read_image(img_path)
    try:
        with Image.open(ann_path) as ann:
            raw = np.asarray(ann, dtype=np.uint8)
    except OSError as e:
        raise DatasetError(f"cannot read annotation {ann_path}: {e}") from e
    if raw.shape != tuple(image.shape[1:]):
        raise DatasetError(
            f"size mismatch: image {img_path} is {tuple(image.shape[1:])} (H, W) but {ann_path} is {raw.shape}"
        )
    return image, raw


def normalize(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) float in [0, 1] -> ImageNet-normalised."""
    mean = torch.tensor(MEAN, dtype=image.dtype).view(3, 1, 1)
    std = torch.tensor(STD, dtype=image.dtype).view(3, 1, 1)
    return (image - mean) / std


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`; works on (3, H, W) or (B, 3, H, W)."""
    shape = (3, 1, 1) if image.dim() == 3 else (1, 3, 1, 1)
    mean = torch.tensor(MEAN, dtype=image.dtype, device=image.device).view(shape)
    std = torch.tensor(STD, dtype=image.dtype, device=image.device).view(shape)
    return image * std + mean


def keep_ratio_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmseg's keep-ratio rescale: largest (h', w') with long side <= max(scale) and short side <= min(scale)."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(h, w), short_edge / min(h, w))
    return max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) float -> (3, *size), bilinear."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0].clamp_(0.0, 1.0)


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) long -> (*size) long, nearest neighbour (never invents a label value)."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()


def _uniform(lo: float, hi: float, g: torch.Generator) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _coin(p: float, g: torch.Generator) -> bool:
    return float(torch.rand((), generator=g)) < p


def random_crop(
    image: torch.Tensor,
    mask: torch.Tensor,
    crop_size: tuple[int, int],
    cat_max_ratio: float,
    g: torch.Generator,
    tries: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """mmseg RandomCrop: a crop of at most ``crop_size`` (H, W), redrawn up to ``tries`` times until no single
    class covers ``cat_max_ratio`` or more of its non-ignore pixels (and at least two classes are present).
    As in mmseg, when every try fails the last crop is kept. image: (3, H, W), mask: (H, W)."""
    h, w = mask.shape
    ch, cw = min(crop_size[0], h), min(crop_size[1], w)

    def draw() -> tuple[int, int]:
        y = int(torch.randint(0, h - ch + 1, (), generator=g))
        x = int(torch.randint(0, w - cw + 1, (), generator=g))
        return y, x

    y, x = draw()
    if cat_max_ratio < 1.0:
        for _ in range(tries):
            crop = mask[y : y + ch, x : x + cw]
            counts = torch.bincount(crop[crop != IGNORE_INDEX].flatten(), minlength=1)
            counts = counts[counts > 0]
            if len(counts) > 1 and float(counts.max()) / float(counts.sum()) < cat_max_ratio:
                break
            y, x = draw()
    return image[:, y : y + ch, x : x + cw], mask[y : y + ch, x : x + cw]


def photometric_distortion(image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """mmseg PhotoMetricDistortion on a (3, H, W) [0, 1] image: brightness +-32/255, contrast and saturation
    x[0.5, 1.5], hue +-18 OpenCV units (0.1 of the circle), each with p = 0.5; contrast before or after the
    colour steps with p = 0.5 (as mmseg). Result clamped to [0, 1]."""
    if _coin(0.5, g):
        image = image + _uniform(-32 / 255, 32 / 255, g)
    contrast_first = _coin(0.5, g)

    def contrast(img: torch.Tensor) -> torch.Tensor:
        # mmseg's contrast multiplies pixel values (no mean centring).
        return img * _uniform(0.5, 1.5, g) if _coin(0.5, g) else img

    image = image.clamp(0.0, 1.0)
    if contrast_first:
        image = contrast(image).clamp(0.0, 1.0)
    if _coin(0.5, g):
        image = TF.adjust_saturation(image, _uniform(0.5, 1.5, g))
    if _coin(0.5, g):
        image = TF.adjust_hue(image, _uniform(-0.1, 0.1, g))
    if not contrast_first:
        image = contrast(image)
    return image.clamp(0.0, 1.0)


def pad_to(image: torch.Tensor, mask: torch.Tensor | None, size: tuple[int, int]):
    """Pad bottom/right to ``size`` (H, W): image with 0 (after normalisation), mask with 255."""
    h, w = image.shape[-2:]
    ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph), value=0.0)
        if mask is not None:
            mask = F.pad(mask, (0, pw, 0, ph), value=IGNORE_INDEX)
    return image, mask


def pad_to_multiple(image: torch.Tensor, multiple: int = 32) -> torch.Tensor:
    """Pad (..., H, W) with 0 on the bottom/right so that H and W divide by ``multiple``: the one rule by which
    the test transform, the evaluator (whole image or window) and the artifacts feed a segmentor."""
    h, w = image.shape[-2:]
    return pad_to(image, None, (math.ceil(h / multiple) * multiple, math.ceil(w / multiple) * multiple))[0]


class _Seeded:
    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the owned generator (DataLoader workers call this with their own seed)."""
        self.generator.manual_seed(seed)


class TrainTransform(_Seeded):
    """Random rescale -> random crop (cat_max_ratio) -> flip -> photometric -> normalise -> pad to crop_size.

    scale: mmseg img_scale (long, short bound); ratio_range: multiplies ``scale``; crop_size: (H, W).
    Output: image (3, crop_h, crop_w) float32, mask (crop_h, crop_w) int64, id.
    """

    def __init__(
        self,
        scale: tuple[int, int],
        ratio_range: tuple[float, float],
        crop_size: tuple[int, int],
        cat_max_ratio: float = 0.75,
        photometric: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if ratio_range[0] <= 0 or ratio_range[1] < ratio_range[0]:
            raise ValueError(f"ratio_range must be 0 < low <= high, got {ratio_range}")
        if min(crop_size) <= 0 or min(scale) <= 0:
            raise ValueError(
                f"crop_size and scale must be positive, got crop_size={crop_size}, scale={scale}"
            )
        self.scale, self.ratio_range, self.crop_size = tuple(scale), tuple(ratio_range), tuple(crop_size)
        self.cat_max_ratio, self.photometric = cat_max_ratio, photometric

    def __call__(self, item: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
        g = generator if generator is not None else self.generator
        image, mask = item["image"], item["mask"]
        ratio = _uniform(*self.ratio_range, g)
        target = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        size = keep_ratio_size(image.shape[1], image.shape[2], target)
        image, mask = resize_image(image, size), resize_mask(mask, size)
        image, mask = random_crop(image, mask, self.crop_size, self.cat_max_ratio, g)
        if _coin(0.5, g):
            image, mask = image.flip(-1), mask.flip(-1)
        if self.photometric:
            image = photometric_distortion(image, g)
        image, mask = pad_to(normalize(image), mask, self.crop_size)
        return {**item, "image": image.contiguous(), "mask": mask.contiguous()}


class TestTransform:
    """Keep-ratio resize into ``scale`` -> normalise -> pad to a multiple of ``size_divisor`` (bottom/right).

    The mask stays at its original (H, W); ``valid_hw`` (2,) int64 gives the resized image's size before padding,
    so an evaluator crops the logits to it and resizes them to the mask.
    """

    __test__ = False  # not a pytest class, despite the name

    def __init__(self, scale: tuple[int, int], size_divisor: int = 32) -> None:
        self.scale, self.size_divisor = tuple(scale), size_divisor

    def __call__(self, item: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
        image = item["image"]
        size = keep_ratio_size(image.shape[1], image.shape[2], self.scale)
        image = pad_to_multiple(normalize(resize_image(image, size)), self.size_divisor)
        return {**item, "image": image.contiguous(), "valid_hw": torch.tensor(size, dtype=torch.long)}


def build_transforms(cfg: DataConfig, train: bool, seed: int = 0) -> TrainTransform | TestTransform:
    """The train (``train=True``) or test pipeline from a DataConfig."""
    if train:
        return TrainTransform(
            cfg.scale, cfg.ratio_range, cfg.crop_size, cfg.cat_max_ratio, cfg.photometric, seed
        )
    return TestTransform(cfg.test_scale)
