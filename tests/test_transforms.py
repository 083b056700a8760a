"""Train / test pipelines: shapes, pad values, nearest masks, cat_max_ratio, determinism with a generator."""

from __future__ import annotations

import pytest
import torch

from diffseg.config import DataConfig
from diffseg.data.transforms import (
    MEAN,
    STD,
    TestTransform,
    TrainTransform,
    build_transforms,
    denormalize,
    keep_ratio_size,
    normalize,
    random_crop,
    resize_mask,
)


def _item(h: int = 40, w: int = 60, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.randint(0, 5, (h // 4, w // 4), generator=g).repeat_interleave(4, 0).repeat_interleave(4, 1)
    mask[:4] = 255
    return {"image": torch.rand(3, h, w, generator=g), "mask": mask, "id": "x"}


def test_keep_ratio_size_matches_mmseg():
    assert keep_ratio_size(512, 683, (2048, 512)) == (512, 683)
    assert keep_ratio_size(128, 128, (2048, 512)) == (512, 512)
    assert keep_ratio_size(1024, 2048, (2048, 1024)) == (1024, 2048)
    assert keep_ratio_size(100, 400, (256, 128)) == (64, 256)  # long side binds


def test_train_shapes_pad_values_and_mask_values():
    t = TrainTransform(scale=(64, 32), ratio_range=(0.5, 1.0), crop_size=(48, 48), cat_max_ratio=0.75, seed=0)
    item = _item()
    for _ in range(5):
        out = t(item)
        assert out["image"].shape == (3, 48, 48) and out["image"].dtype == torch.float32
        assert out["mask"].shape == (48, 48) and out["mask"].dtype == torch.int64
        assert set(out["mask"].unique().tolist()) <= set(item["mask"].unique().tolist())
    # Scale (64, 32) at ratio <= 1 gives at most 32 rows: the bottom rows are padding.
    assert (out["image"][:, -8:] == 0).all() and (out["mask"][-8:] == 255).all()


def test_nearest_resize_never_invents_values():
    mask = torch.tensor([[0, 7], [255, 3]]).repeat_interleave(5, 0).repeat_interleave(5, 1)
    for size in [(3, 3), (7, 13), (25, 31)]:
        assert set(resize_mask(mask, size).unique().tolist()) <= {0, 7, 255, 3}


def test_cat_max_ratio_respected_when_possible():
    # Class 2 fills the left 24 of 64 columns: about 45% of random 32x32 crops are mixed below 75%.
    mask = torch.ones(64, 64, dtype=torch.long)
    mask[:, :24] = 2
    image = torch.zeros(3, 64, 64)

    def mixed(crop: torch.Tensor) -> bool:
        counts = torch.bincount(crop.flatten())
        return bool(counts.max() / counts.sum() < 0.75)

    hits = sum(
        mixed(random_crop(image, mask, (32, 32), 0.75, torch.Generator().manual_seed(s))[1])
        for s in range(40)
    )
    free = sum(
        mixed(random_crop(image, mask, (32, 32), 1.0, torch.Generator().manual_seed(s))[1]) for s in range(40)
    )
    assert hits >= 39 and free <= 30  # 10 tries nearly always succeed (mmseg keeps the last try otherwise)
    # Ignore pixels do not count towards the ratio.
    ignore_heavy = torch.full((32, 32), 255, dtype=torch.long)
    ignore_heavy[:, :8], ignore_heavy[:, 8:16] = 1, 2
    _, crop = random_crop(torch.zeros(3, 32, 32), ignore_heavy, (32, 32), 0.75, torch.Generator())
    assert crop.shape == (32, 32)


def test_determinism_with_generator():
    t = TrainTransform(scale=(64, 32), ratio_range=(0.5, 2.0), crop_size=(32, 32), seed=0)
    item = _item()
    a = t(item, generator=torch.Generator().manual_seed(7))
    b = t(item, generator=torch.Generator().manual_seed(7))
    c = t(item, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["image"], c["image"])
    t1, t2 = (TrainTransform((64, 32), (0.5, 2.0), (32, 32), seed=5) for _ in range(2))
    assert torch.equal(t1(item)["image"], t2(item)["image"])  # owned generators with one seed agree


def test_test_transform_pads_to_32_and_keeps_mask():
    item = _item(40, 60)
    out = TestTransform(scale=(100, 50))(item)
    assert out["valid_hw"].tolist() == [50, 75] and out["valid_hw"].dtype == torch.int64
    assert out["image"].shape == (3, 64, 96)
    assert (out["image"][:, 50:] == 0).all() and (out["image"][:, :, 75:] == 0).all()
    assert torch.equal(out["mask"], item["mask"])  # original resolution, untouched


def test_normalize_roundtrip_and_constants():
    x = torch.rand(2, 3, 5, 5)
    assert torch.allclose(denormalize(normalize(x[0])), x[0], atol=1e-6)
    assert torch.allclose(denormalize(torch.stack([normalize(v) for v in x])), x, atol=1e-6)
    assert MEAN == (0.485, 0.456, 0.406) and STD == (0.229, 0.224, 0.225)


def test_build_transforms_and_bad_args():
    cfg = DataConfig(scale=(64, 32), crop_size=(16, 16), test_scale=(64, 32))
    assert isinstance(build_transforms(cfg, True), TrainTransform)
    assert isinstance(build_transforms(cfg, False), TestTransform)
    with pytest.raises(ValueError, match="ratio_range"):
        TrainTransform((64, 32), (2.0, 1.0), (16, 16))
