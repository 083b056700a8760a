"""The release's frozen bases as mmsegmentation 0.30 built them: SegFormer (MiT-B0/B2/B5) and DeepLabV3+
MobileNetV2/R50/R101-D8.

Backbones come from transformers (``SegformerModel``, the MiT encoder), timm (``resnet50c`` / ``resnet101c``:
the deep 32-32-64 stem of mmseg's ResNetV1c; ``output_stride=8`` dilates layer3 / layer4 with first-block
dilations 1 / 2, which is mmseg's ``contract_dilation=True``) and mmseg's own MobileNetV2
(:mod:`diffseg.segmentors.mmseg_mobilenet`); the decode heads are mmseg's own
(:mod:`diffseg.segmentors.mmseg_heads`). Zoo checkpoints load with
:func:`diffseg.segmentors.mmseg_convert.load_mmseg_checkpoint`; ``tests/test_mmseg_parity.py`` checks the outputs
against mmseg's code.

Two details that differ from the libraries' defaults and matter for parity: mmseg's MiT uses LayerNorm eps 1e-6
everywhere (transformers builds eps 1e-5 layers), and mmseg's SegformerHead concatenates the stages 1..4.
"""

from __future__ import annotations

import timm
import torch
from torch import nn
from transformers import SegformerConfig, SegformerModel

from diffseg.segmentors.base import Segmentor
from diffseg.segmentors.mmseg_heads import DepthwiseSeparableASPPHead, SegformerHead
from diffseg.segmentors.mmseg_mobilenet import MobileNetV2
from diffseg.segmentors.segformer import _MIT_SIZES

# registry suffix of the mmseg SegFormers -> MiT size
MMSEG_SEGFORMER_SIZES: tuple[str, ...] = ("b0", "b2", "b5")
# registry suffix of the mmseg DeepLabV3+ -> (display name, backbone: a timm model or mmseg's "mobilenet_v2",
# decode head in_channels (the stride-8 map), c1_in_channels (the stride-4 map)), as the zoo configs set them
_MMSEG_DEEPLAB: dict[str, tuple[str, str, int, int]] = {
    "m-v2-d8": ("MobileNetV2-D8", "mobilenet_v2", 320, 24),
    "r50-d8": ("R50-D8", "resnet50c", 2048, 256),
    "r101-d8": ("R101-D8", "resnet101c", 2048, 256),
}
MMSEG_DEEPLAB_VARIANTS: tuple[str, ...] = tuple(_MMSEG_DEEPLAB)

_MIT_EPS = 1e-6  # mmseg MixVisionTransformer: norm_cfg=dict(type='LN', eps=1e-6)


def mit_config(size: str) -> SegformerConfig:
    """The transformers config of mmseg's ``mit_{size}`` backbone (heads 1/2/5/8, sr 8/4/2/1, patches 7/3/3/3)."""
    if size not in MMSEG_SEGFORMER_SIZES:
        raise ValueError(
            f"unknown mmseg SegFormer size {size!r}; valid sizes: {', '.join(MMSEG_SEGFORMER_SIZES)}"
        )
    hidden, depths = _MIT_SIZES[size]
    return SegformerConfig(
        hidden_sizes=list(hidden),
        depths=list(depths),
        num_attention_heads=[1, 2, 5, 8],
        sr_ratios=[8, 4, 2, 1],
        patch_sizes=[7, 3, 3, 3],
        strides=[4, 2, 2, 2],
        mlp_ratios=[4, 4, 4, 4],
        hidden_act="gelu",  # mmcv GELU = nn.GELU, the exact erf form
        drop_path_rate=0.1,
        layer_norm_eps=_MIT_EPS,
    )


class MmsegSegFormer(Segmentor):
    """mmseg 0.30 ``EncoderDecoder(MixVisionTransformer, SegformerHead)``; features are the 256-channel fused map.

    Submodules: ``backbone`` (a transformers ``SegformerModel``), ``decode_head`` (:class:`SegformerHead`).
    """

    def __init__(self, name: str, size: str, num_classes: int) -> None:
        super().__init__(name, num_classes, 256)
        self.size = size
        self.backbone = SegformerModel(mit_config(size))
        for module in self.backbone.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = _MIT_EPS
        self.decode_head = SegformerHead(_MIT_SIZES[size][0], num_classes, channels=256)

    def _forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Stage by stage rather than output_hidden_states: every stage's (B, C_i, H_i, W_i) map is needed.
        stages = []
        h = image
        for stage in self.backbone.stages:
            h = stage(h)
            stages.append(h)
        return self.decode_head(stages)


class MmsegDeepLabV3Plus(Segmentor):
    """mmseg 0.30 ``EncoderDecoder(ResNetV1c-D8 | MobileNetV2-D8, DepthwiseSeparableASPPHead)``; features are
    512-channel at 1/4.

    Submodules: ``backbone`` (a timm ResNet without classifier, or :class:`MobileNetV2` with mmseg's names),
    ``decode_head`` (:class:`DepthwiseSeparableASPPHead`). The FCN auxiliary head of the zoo checkpoints is
    training-only and is not built.
    """

    def __init__(self, name: str, variant: str, num_classes: int) -> None:
        if variant not in _MMSEG_DEEPLAB:
            raise ValueError(
                f"unknown mmseg DeepLabV3+ variant {variant!r}; valid: {', '.join(MMSEG_DEEPLAB_VARIANTS)}"
            )
        super().__init__(name, num_classes, 512)
        self.variant = variant
        self.display_name, backbone, in_channels, c1_in_channels = _MMSEG_DEEPLAB[variant]
        if backbone == "mobilenet_v2":
            self.backbone: nn.Module = MobileNetV2()  # the D8 config's strides / dilations / out_indices
        else:
            self.backbone = timm.create_model(
                backbone, pretrained=False, num_classes=0, global_pool="", output_stride=8
            )
        self.decode_head = DepthwiseSeparableASPPHead(
            num_classes, in_channels=in_channels, c1_in_channels=c1_in_channels
        )

    def _forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.backbone
        if isinstance(b, MobileNetV2):
            # mmseg's head takes inputs[0] as c1 and in_index=3 as its input: of out_indices (1, 2, 4, 6) that is
            # layer2 (24 channels, stride 4) and layer7 (320 channels, stride 8)
            outs = b(image)
            c1, c4 = outs[0], outs[3]
        else:
            x = b.maxpool(b.act1(b.bn1(b.conv1(image))))
            c1 = b.layer1(x)  # (B, 256, H/4, W/4)
            c4 = b.layer4(b.layer3(b.layer2(c1)))  # (B, 2048, H/8, W/8)
        return self.decode_head(c1, c4)


def build_mmseg_segmentor(name: str, family: str, variant: str, num_classes: int) -> Segmentor:
    """A randomly initialised mmseg base; ``family`` is ``"segformer-mmseg"`` or ``"deeplabv3plus-mmseg"``."""
    if family == "segformer-mmseg":
        return MmsegSegFormer(name, variant, num_classes)
    if family == "deeplabv3plus-mmseg":
        return MmsegDeepLabV3Plus(name, variant, num_classes)
    raise ValueError(f"unknown mmseg family {family!r}; valid: segformer-mmseg, deeplabv3plus-mmseg")
