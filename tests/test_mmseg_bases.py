"""The mmseg 0.30 bases without mmseg: shapes, parameter counts, strict checkpoint round trips, one-line errors.

Exact agreement with mmseg's code is tests/test_mmseg_parity.py's job (``make parity``); here the converter is
checked against mmseg's key names (as mmseg 0.30 writes them, listed below) and against its own inverse.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from diffseg.segmentors import (
    build_segmentor,
    count_parameters,
    load_mmseg_checkpoint,
    save_segmentor,
    to_mmseg_state_dict,
)

K = 150
# name -> (feature channels, parameters with a 150-class head, as mmseg 0.30 builds them without auxiliary head)
_BASES = {
    "segformer-b0-mmseg": (256, 3_753_718),
    "segformer-b2-mmseg": (256, 24_761_686),
    "segformer-b5-mmseg": (256, 82_008_406),
    "deeplabv3plus-m-v2-d8": (512, 15_084_998),
    "deeplabv3plus-r50-d8": (512, 41_292_390),
    "deeplabv3plus-r101-d8": (512, 60_284_518),
}
_SLOW = {"segformer-b5-mmseg", "deeplabv3plus-r101-d8"}
# keys of mmseg 0.30 state dicts (from its MixVisionTransformer / ResNetV1c / MobileNetV2 / heads), which the
# inverse must give
_MMSEG_KEYS = {
    "segformer-b0-mmseg": (
        192,
        [
            "backbone.layers.0.0.projection.weight",
            "backbone.layers.0.0.norm.bias",
            "backbone.layers.0.1.0.attn.attn.in_proj_weight",
            "backbone.layers.0.1.0.attn.attn.out_proj.bias",
            "backbone.layers.0.1.0.attn.sr.weight",
            "backbone.layers.0.1.0.attn.norm.weight",
            "backbone.layers.0.1.1.ffn.layers.4.weight",
            "backbone.layers.3.1.1.ffn.layers.1.bias",
            "backbone.layers.3.2.weight",
            "decode_head.convs.3.bn.running_var",
            "decode_head.fusion_conv.conv.weight",
            "decode_head.conv_seg.bias",
        ],
    ),
    "deeplabv3plus-r50-d8": (
        416,
        [
            "backbone.stem.0.weight",
            "backbone.stem.7.num_batches_tracked",
            "backbone.layer1.0.downsample.1.running_mean",
            "backbone.layer4.2.conv3.weight",
            "decode_head.image_pool.1.conv.weight",
            "decode_head.aspp_modules.0.conv.weight",
            "decode_head.aspp_modules.3.depthwise_conv.conv.weight",
            "decode_head.bottleneck.bn.weight",
            "decode_head.c1_bottleneck.conv.weight",
            "decode_head.sep_bottleneck.1.pointwise_conv.bn.bias",
        ],
    ),
    "deeplabv3plus-m-v2-d8": (
        392,
        [
            "backbone.conv1.conv.weight",
            "backbone.conv1.bn.running_var",
            "backbone.layer1.0.conv.0.conv.weight",  # expand_ratio 1: no expand conv, conv.0 is the depthwise
            "backbone.layer1.0.conv.1.bn.bias",
            "backbone.layer2.0.conv.2.conv.weight",
            "backbone.layer7.0.conv.2.bn.num_batches_tracked",
            "decode_head.c1_bottleneck.conv.weight",
            "decode_head.aspp_modules.3.depthwise_conv.conv.weight",
        ],
    ),
}


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n for n in names]


def _image(batch: int = 1, h: int = 64, w: int = 64) -> torch.Tensor:
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(0))


def _save_mmseg(state: dict[str, torch.Tensor], path: Path) -> Path:
    meta = {"mmcv_version": "1.7.2", "CLASSES": [f"c{i}" for i in range(K)], "PALETTE": [[0, 0, 0]] * K}
    torch.save({"state_dict": state, "meta": meta}, path)
    return path


@pytest.mark.parametrize("name", _params(_BASES))
def test_shapes_channels_and_parameter_counts(name: str) -> None:
    seg = build_segmentor(name, K)
    channels, params = _BASES[name]
    assert seg.feature_channels == channels and count_parameters(seg) == params
    with torch.no_grad():
        features, logits = seg(_image(1, 65, 49))
    assert features.shape == (1, channels, 17, 13) and logits.shape == (1, K, 17, 13)
    assert seg.frozen and not seg.training


@pytest.mark.parametrize("name", list(_MMSEG_KEYS))
def test_inverse_mapping_gives_mmseg_key_names(name: str) -> None:
    count, samples = _MMSEG_KEYS[name]
    keys = set(to_mmseg_state_dict(build_segmentor(name, K)))
    assert len(keys) == count
    assert set(samples) <= keys


@pytest.mark.parametrize("name", list(_MMSEG_KEYS))
def test_mmseg_checkpoint_round_trip(name: str, tmp_path: Path) -> None:
    source = build_segmentor(name, K)
    with torch.no_grad():  # move BN off its init so the running statistics are checked too
        for key, value in source.state_dict().items():
            if value.is_floating_point():
                value.add_(0.01 * torch.randn(value.shape, generator=torch.Generator().manual_seed(len(key))))
    state = to_mmseg_state_dict(source)
    # zoo DeepLab files carry an FCN auxiliary head: dropped, not an unexpected key
    state["auxiliary_head.conv_seg.weight"] = torch.zeros(K, 256, 1, 1)
    path = _save_mmseg(state, tmp_path / "zoo.pth")
    loaded = build_segmentor(name, K, weights=path)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with torch.no_grad():
        torch.testing.assert_close(loaded(_image()), source(_image()), rtol=0, atol=0)
    # a bare state dict (no "state_dict" wrapper) loads too
    torch.save(state, tmp_path / "bare.pth")
    load_mmseg_checkpoint(build_segmentor(name, K), tmp_path / "bare.pth")


def test_numpy_scalars_in_the_meta_load_under_both_numpy_names(tmp_path: Path) -> None:
    # mmcv's EvalHook stores numpy scalars in meta["hook_msgs"]; zoo files pickled them under numpy 1's names
    state = to_mmseg_state_dict(build_segmentor("segformer-b0-mmseg", K))
    numpy2 = tmp_path / "numpy2.pth"
    torch.save({"state_dict": state, "meta": {"hook_msgs": {"best_score": np.float64(0.37)}}}, numpy2)
    numpy1 = tmp_path / "numpy1.pth"
    with zipfile.ZipFile(numpy2) as src, zipfile.ZipFile(numpy1, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):  # protocol-2 GLOBAL opcodes are newline-terminated names
                assert b"numpy._core" in data
                data = data.replace(b"numpy._core", b"numpy.core")
            dst.writestr(info, data)
    for path in (numpy2, numpy1):
        load_mmseg_checkpoint(build_segmentor("segformer-b0-mmseg", K), path)


def test_diffseg_own_files_still_load_for_mmseg_names(tmp_path: Path) -> None:
    source = build_segmentor("segformer-b0-mmseg", 7)
    for suffix in (".safetensors", ".pt", ".pth"):
        path = save_segmentor(source, tmp_path / f"own{suffix}")
        loaded = build_segmentor("segformer-b0-mmseg", 7, weights=path)
        assert torch.equal(loaded.decode_head.conv_seg.weight, source.decode_head.conv_seg.weight)


def _one_line_error(name: str, num_classes: int, path: Path) -> str:
    with pytest.raises(ValueError) as info:
        build_segmentor(name, num_classes, weights=path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_wrong_number_of_classes_is_one_line(tmp_path: Path) -> None:
    path = _save_mmseg(to_mmseg_state_dict(build_segmentor("segformer-b0-mmseg", 19)), tmp_path / "city.pth")
    message = _one_line_error("segformer-b0-mmseg", K, path)
    assert (
        "MiT-B0 with a 150-class head" in message and "decode_head.conv_seg.weight (19, 256, 1, 1)" in message
    )


def test_other_architecture_is_one_line(tmp_path: Path) -> None:
    deeplab = _save_mmseg(
        to_mmseg_state_dict(build_segmentor("deeplabv3plus-r50-d8", K)), tmp_path / "dl.pth"
    )
    message = _one_line_error("segformer-b0-mmseg", K, deeplab)
    assert "keys of another architecture" in message and "backbone.stem.0.weight" in message
    b2 = _save_mmseg(to_mmseg_state_dict(build_segmentor("segformer-b2-mmseg", K)), tmp_path / "b2.pth")
    message = _one_line_error("segformer-b0-mmseg", K, b2)
    assert "shape mismatches" in message and "unexpected keys" in message
    segformer = _save_mmseg(
        to_mmseg_state_dict(build_segmentor("segformer-b0-mmseg", K)), tmp_path / "sf.pth"
    )
    assert "DeepLabV3+ R50-D8" in _one_line_error("deeplabv3plus-r50-d8", K, segformer)


def test_mobilenet_v2_d8_layout_and_resnet_files_are_one_line(tmp_path: Path) -> None:
    seg = build_segmentor("deeplabv3plus-m-v2-d8", 19)
    assert count_parameters(seg) == 15_017_795  # the Cityscapes zoo model's 19-class head
    # mmseg's make_layer: stride and dilation on a layer's first block only (layer6 of the D8 config: 4, 1, 1)
    depthwise = [block.conv[-2].conv for block in seg.backbone.layer6]
    assert [m.dilation[0] for m in depthwise] == [4, 1, 1] and [m.padding[0] for m in depthwise] == [4, 1, 1]
    assert [block.conv[-2].conv.stride for block in seg.backbone.layer3] == [(2, 2), (1, 1), (1, 1)]
    assert [block.use_res_connect for block in seg.backbone.layer4] == [False, True, True, True]
    # c1 = layer2 (24 channels, stride 4), c4 = layer7 (320 channels, stride 8)
    with torch.no_grad():
        c1, _, _, c4 = seg.backbone(_image(1, 65, 49))
    assert c1.shape == (1, 24, 17, 13) and c4.shape == (1, 320, 9, 7)
    resnet = _save_mmseg(
        to_mmseg_state_dict(build_segmentor("deeplabv3plus-r50-d8", K)), tmp_path / "r50.pth"
    )
    message = _one_line_error("deeplabv3plus-m-v2-d8", K, resnet)
    assert "DeepLabV3+ MobileNetV2-D8 with a 150-class head" in message
    assert "keys of another architecture" in message and "backbone.stem.0.weight" in message
    mobilenet = _save_mmseg(
        to_mmseg_state_dict(build_segmentor("deeplabv3plus-m-v2-d8", K)), tmp_path / "m.pth"
    )
    message = _one_line_error("deeplabv3plus-r50-d8", K, mobilenet)
    assert "keys of another architecture" in message and "backbone.conv1.conv.weight" in message
    assert "MiT-B0" in _one_line_error("segformer-b0-mmseg", K, mobilenet)


def test_unsafe_or_empty_files_are_one_line(tmp_path: Path) -> None:
    pickled = tmp_path / "pickle.pth"
    # an arbitrary class in the meta: the weights-only unpickler refuses it, and so does the loader
    torch.save({"state_dict": {}, "meta": argparse.Namespace(config="...")}, pickled)
    assert "weights-only" in _one_line_error("segformer-b0-mmseg", K, pickled)
    empty = _save_mmseg({}, tmp_path / "empty.pth")
    assert "missing keys" in _one_line_error("deeplabv3plus-r50-d8", K, empty)
    with pytest.raises(ValueError, match="not an mmseg base"):
        load_mmseg_checkpoint(build_segmentor("segformer-tiny", 3), empty)
    with pytest.raises(ValueError, match="an mmseg .pth checkpoint"):
        build_segmentor("segformer-b0-mmseg", K, weights="nvidia/mit-b0")
