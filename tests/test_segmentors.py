"""Base segmentors: shapes for every registered name, frozen semantics, weights round trips, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffseg.segmentors import (
    Segmentor,
    build_segmentor,
    count_parameters,
    output_size,
    save_segmentor,
    segmentor_names,
)

K = 5
# building + one forward of these costs seconds on a 2-core CPU; run them with -m slow
_SLOW = {"segformer-b4", "segformer-b5", "deeplabv3plus-r101"}


def _image(batch: int = 1, h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _params(names: tuple[str, ...]) -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n for n in names]


@pytest.mark.parametrize("name", _params(segmentor_names()))
def test_shapes_every_name(name: str) -> None:
    seg = build_segmentor(name, K)
    batch = 2 if name.endswith("tiny") else 1
    with torch.no_grad():
        features, logits = seg(_image(batch))
    assert isinstance(seg, Segmentor) and seg.name == name and seg.num_classes == K
    assert features.shape == (batch, seg.feature_channels, 16, 16)
    assert logits.shape == (batch, K, 16, 16)
    assert torch.isfinite(features).all() and torch.isfinite(logits).all()


def test_feature_channels_of_full_presets() -> None:
    # paper.md: 256-channel SegFormer head (mmseg configs), 512-channel DeepLabV3+ decoder
    assert build_segmentor("segformer-b0", K).feature_channels == 256
    assert build_segmentor("deeplabv3plus-mobilenetv2", K).feature_channels == 512


@pytest.mark.parametrize("name", ["segformer-tiny", "deeplabv3plus-tiny"])
def test_sizes_not_divisible_by_the_stride(name: str) -> None:
    seg = build_segmentor(name, K)
    with torch.no_grad():
        features, logits = seg(_image(1, 70, 90))
    assert output_size(70, 90) == (18, 23)
    assert features.shape[-2:] == (18, 23) and logits.shape[-2:] == (18, 23)


def test_logits_are_the_classifier_applied_to_the_features() -> None:
    seg = build_segmentor("segformer-tiny", K)
    with torch.no_grad():
        features, logits = seg(_image(2))
        again = seg.model.decode_head.classifier(features)
    torch.testing.assert_close(again, logits)


@pytest.mark.parametrize("name", ["segformer-tiny", "deeplabv3plus-tiny"])
def test_frozen_stays_in_eval_with_fixed_bn(name: str) -> None:
    seg = build_segmentor(name, K)
    parent = nn.ModuleDict({"seg": seg, "head": nn.Conv2d(1, 1, 1)})
    parent.train()
    assert parent["head"].training
    assert not seg.training and not any(m.training for m in seg.modules())
    assert not any(p.requires_grad for p in seg.parameters())
    before = {k: v.clone() for k, v in seg.state_dict().items()}
    assert any("running_mean" in k for k in before)
    features, logits = seg(_image(2))  # in "train" mode of the parent, with grad enabled
    assert not features.requires_grad and not logits.requires_grad
    for k, v in seg.state_dict().items():
        assert torch.equal(v, before[k]), k
    seg.train(True)
    assert not seg.training


def test_unfrozen_trains_then_freezes() -> None:
    seg = build_segmentor("deeplabv3plus-tiny", K, frozen=False)
    seg.train()
    assert seg.training and all(p.requires_grad for p in seg.parameters())
    bn = next(m for m in seg.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    _, logits = seg(_image(2))
    logits.mean().backward()
    assert not torch.equal(bn.running_mean, before)  # BN statistics move while training a base from scratch
    seg.freeze()
    assert not seg.training and seg.frozen and not any(p.requires_grad for p in seg.parameters())


def test_segformer_save_pretrained_folder_round_trip(tmp_path) -> None:
    seg = build_segmentor("segformer-tiny", K)
    seg.model.save_pretrained(tmp_path / "hf")
    loaded = build_segmentor("segformer-tiny", K, weights=tmp_path / "hf")
    image = _image(2)
    with torch.no_grad():
        for a, b in zip(seg(image), loaded(image)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert loaded.frozen


def test_segformer_folder_with_other_label_space_fails(tmp_path) -> None:
    build_segmentor("segformer-tiny", 7).model.save_pretrained(tmp_path / "hf7")
    with pytest.raises(ValueError, match=r"7-class head.*num_classes=5") as err:
        build_segmentor("segformer-tiny", 5, weights=tmp_path / "hf7")
    assert str(tmp_path / "hf7") in str(err.value)
    with pytest.raises(ValueError, match="not a MiT-B0"):
        build_segmentor("segformer-b0", 7, weights=tmp_path / "hf7")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_deeplab_state_file_round_trip(tmp_path, suffix: str) -> None:
    seg = build_segmentor("deeplabv3plus-tiny", K, frozen=False)
    with torch.no_grad():  # move BN statistics away from their init so that the round trip covers buffers
        for m in seg.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
    seg.freeze()
    path = save_segmentor(seg, tmp_path / f"seg{suffix}")
    loaded = build_segmentor("deeplabv3plus-tiny", K, weights=path)
    image = _image(2)
    with torch.no_grad():
        for a, b in zip(seg(image), loaded(image)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not list(tmp_path.glob("*.tmp"))


def test_state_file_of_other_classes_or_model_fails(tmp_path) -> None:
    path = save_segmentor(build_segmentor("deeplabv3plus-tiny", 7), tmp_path / "dl7.safetensors")
    with pytest.raises(ValueError, match=r"7 classes; expected 'deeplabv3plus-tiny' with 5 classes"):
        build_segmentor("deeplabv3plus-tiny", 5, weights=path)
    with pytest.raises(ValueError, match=r"saved from 'deeplabv3plus-tiny'.*expected 'segformer-tiny'"):
        build_segmentor("segformer-tiny", 7, weights=path)
    # a bare state dict (no metadata): the shape check names the mismatch
    bare = tmp_path / "bare.pt"
    torch.save(build_segmentor("deeplabv3plus-tiny", 7).state_dict(), bare)
    with pytest.raises(ValueError, match=r"do not fit 'deeplabv3plus-tiny' with 5 classes.*shape mismatch"):
        build_segmentor("deeplabv3plus-tiny", 5, weights=bare)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown segmentor 'segformer-b9'") as err:
        build_segmentor("segformer-b9", K)
    for name in (
        "segformer-b0",
        "segformer-b5",
        "deeplabv3plus-r101",
        "deeplabv3plus-tiny",
        "segformer-tiny",
    ):
        assert name in str(err.value)


def test_bad_weights_and_inputs() -> None:
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        build_segmentor("deeplabv3plus-tiny", K, weights="/nonexistent/missing.safetensors")
    with pytest.raises(FileNotFoundError, match="/nonexistent/folder"):
        build_segmentor("segformer-tiny", K, weights="/nonexistent/folder")
    with pytest.raises(ValueError, match="state-dict file"):
        build_segmentor("deeplabv3plus-tiny", K, weights="nvidia/some-hub-id")
    with pytest.raises(ValueError, match="num_classes"):
        build_segmentor("segformer-tiny", 0)
    seg = build_segmentor("segformer-tiny", K)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        seg(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="floating"):
        seg(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_count_parameters() -> None:
    lin = nn.Linear(3, 4)
    assert count_parameters(lin) == 16
    lin.bias.requires_grad_(False)
    assert count_parameters(lin, trainable_only=True) == 12
    # SegFormer-B0 with an ADE20K head: paper.md's 15.1 M minus an 11.4 M width-128 refiner
    assert abs(count_parameters(build_segmentor("segformer-b0", 150)) - 3.75e6) < 0.05e6
