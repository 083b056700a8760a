"""Prediction paths against hand computations: sliding window, multi-scale + flip, refine from outside logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffseg.config import apply_overrides
from diffseg.data.transforms import pad_to_multiple
from diffseg.inference import refine
from diffseg.models import build_refiner
from diffseg.prediction import _windows, predict
from diffseg.profiles import profile_config
from diffseg.segmentors import build_segmentor

K = 150


@pytest.fixture(scope="module")
def segmentor():
    torch.manual_seed(0)
    return build_segmentor("segformer-tiny", K, frozen=True).eval()


def _cfg(**overrides):
    return apply_overrides(profile_config("smoke", "ade20k"), {"device": "cpu", **overrides})


def _batch(h: int = 40, w: int = 56):
    image = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(1))
    return {
        "image": pad_to_multiple(image),
        "valid_hw": torch.tensor([[h, w]]),
        "mask": torch.zeros(1, h + 8, w + 8, dtype=torch.long),  # the original resolution differs
    }


def _logits_at(segmentor, image: torch.Tensor) -> torch.Tensor:
    """Base logits of an unpadded image at its own size: pad to 32, run, upsample, crop."""
    padded = pad_to_multiple(image)
    up = F.interpolate(segmentor(padded)[1], size=padded.shape[-2:], mode="bilinear", align_corners=False)
    return up[..., : image.shape[-2], : image.shape[-1]]


def test_sliding_window_is_the_average_of_its_windows(segmentor) -> None:
    cfg = _cfg(**{"eval.mode": "slide", "eval.slide_crop": [32, 32], "eval.slide_stride": [20, 20]})
    batch = _batch()
    got, _ = predict(None, segmentor, batch, cfg)
    image = batch["image"][..., :40, :56]
    total, count = torch.zeros(1, K, 40, 56), torch.zeros(1, 1, 40, 56)
    windows = _windows(40, 56, (32, 32), (20, 20))
    assert len(windows) == 2 * 3  # overlapping windows in both directions
    for y0, x0, ch, cw in windows:
        total[..., y0 : y0 + ch, x0 : x0 + cw] += _logits_at(
            segmentor, image[..., y0 : y0 + ch, x0 : x0 + cw]
        )
        count[..., y0 : y0 + ch, x0 : x0 + cw] += 1
    expected = F.interpolate(total / count, size=(48, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    whole, _ = predict(None, segmentor, batch, _cfg())
    assert not torch.allclose(got, whole, atol=1e-3)  # the windows matter


def test_multi_scale_and_flip_average_the_softmax_of_every_view(segmentor) -> None:
    cfg = _cfg(**{"eval.scales": [0.5, 1.0, 1.5], "eval.flip": True})
    batch = _batch()
    got, _ = predict(None, segmentor, batch, cfg, multi_scale=True)
    image = batch["image"][..., :40, :56]
    views = []
    for s in (0.5, 1.0, 1.5):
        scaled = (
            image if s == 1.0 else F.interpolate(image, scale_factor=s, mode="bilinear", align_corners=False)
        )
        for flip in (False, True):
            logits = _logits_at(segmentor, scaled.flip(-1) if flip else scaled)
            out = F.interpolate(logits, size=(48, 64), mode="bilinear", align_corners=False)
            views.append((out.flip(-1) if flip else out).softmax(1))
    torch.testing.assert_close(got, torch.stack(views).mean(0), rtol=1e-4, atol=1e-5)


def test_refine_from_outside_logits(segmentor) -> None:
    """A logits-conditioned refiner refines any segmentor's logits: what refine() returns is the last step's
    argmax of the refiner's own sampler run on those logits."""
    cfg = _cfg(**{"refiner.condition": "logits"})
    torch.manual_seed(0)
    refiner = build_refiner(cfg, segmentor).eval()
    logits = torch.randn(2, K, 12, 16, generator=torch.Generator().manual_seed(2))
    labels = refine(base_logits=logits, refiner=refiner, steps=3, generator=torch.Generator().manual_seed(3))
    steps = refiner.refine(base=(logits, logits), steps=3, generator=torch.Generator().manual_seed(3))
    assert labels.shape == (2, 12, 16) and labels.dtype == torch.long
    assert torch.equal(labels, steps[-1][1].argmax(1))
    with pytest.raises(ValueError, match=rf"base_logits must be \(B,{K},h,w\)"):
        refine(base_logits=logits[:, :10], refiner=refiner)
