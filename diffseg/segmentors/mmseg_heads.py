"""mmsegmentation 0.30's ``SegformerHead`` and ``DepthwiseSeparableASPPHead`` (DeepLabV3+), re-implemented in torch.

The release froze mmseg 0.30 zoo models, so these heads follow mmseg's code line by line (checked against
``mmseg/models/decode_heads/{segformer_head,aspp_head,sep_aspp_head,decode_head}.py`` and mmcv 1.7.2's
``ConvModule`` / ``DepthwiseSeparableConvModule``), and their submodules carry mmseg's names, so a zoo
checkpoint's ``decode_head.*`` keys load after stripping the prefix and nothing else.

Each head's ``forward`` returns ``(features, logits)``: features are what mmseg's ``cls_seg`` receives (before its
dropout), logits the ``conv_seg`` output, both at the head's input resolution (1/4 of the image).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# mmcv act_cfg type -> module; mmcv builds both in place (its default ``inplace=True``)
_ACTIVATIONS: dict[str, type[nn.Module]] = {"ReLU": nn.ReLU, "ReLU6": nn.ReLU6}


class ConvModule(nn.Module):
    """mmcv's ``ConvModule`` with ``norm_cfg=BN``: conv (no bias, as ``bias='auto'`` gives with a norm) ->
    BatchNorm2d (eps 1e-5, mmcv's default) -> activation (``act``: mmcv's ``act_cfg`` type, ``None`` for none);
    attribute names ``conv`` / ``bn`` / ``activate`` are mmcv's, hence the state-dict keys."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        act: str | None = "ReLU",
        stride: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-5)
        # The heads use mmcv's default act_cfg, ReLU (SegformerHead's fusion_conv too); MobileNetV2 uses ReLU6,
        # and None for its linear 1x1 projections (act_cfg=None), which mmcv builds without an `activate`.
        if act is not None and act not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; valid: {', '.join(_ACTIVATIONS)} or None")
        self.activate = _ACTIVATIONS[act](inplace=True) if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class DepthwiseSeparableConvModule(nn.Module):
    """mmcv's ``DepthwiseSeparableConvModule``: depthwise kxk ConvModule then pointwise 1x1 ConvModule, each with
    its own BN + ReLU (``dw_*_cfg`` / ``pw_*_cfg`` default to the shared norm and act)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, dilation: int = 1
    ) -> None:
        super().__init__()
        self.depthwise_conv = ConvModule(
            in_channels, in_channels, kernel_size, padding=padding, dilation=dilation, groups=in_channels
        )
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    # mmseg.ops.resize with the configs' mode='bilinear', align_corners=False
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class _ClassifierMixin(nn.Module):
    """``BaseDecodeHead.cls_seg``: Dropout2d(0.1) (identity in eval) + ``conv_seg`` 1x1 conv with bias."""

    def _init_classifier(self, channels: int, num_classes: int, dropout_ratio: float) -> None:
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()

    def _classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(features))


class SegformerHead(_ClassifierMixin):
    """mmseg 0.30 ``SegformerHead`` (the All-MLP decoder).

    Per stage a 1x1 ConvModule to ``channels``, then bilinear resize to stage 1's size (conv before resize, as
    mmseg), concatenation in stage order 1..4 (transformers' head concatenates 4..1: its weights do not fit),
    ``fusion_conv`` 1x1 ConvModule (4*channels -> channels, BN + ReLU), ``cls_seg``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 256,
        dropout_ratio: float = 0.1,
    ) -> None:
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.channels = channels
        self.num_classes = num_classes
        self.convs = nn.ModuleList([ConvModule(c, channels, 1) for c in self.in_channels])
        self.fusion_conv = ConvModule(channels * len(self.in_channels), channels, 1)
        self._init_classifier(channels, num_classes, dropout_ratio)

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: inputs: the four MiT stage maps, (B, C_i, H/2^(i+2), W/2^(i+2)) float.

        Returns: features (B, channels, H1, W1), logits (B, K, H1, W1), (H1, W1) = stage 1's size.
        """
        size = inputs[0].shape[2:]
        outs = [_resize(conv(x), size) for conv, x in zip(self.convs, inputs, strict=True)]
        features = self.fusion_conv(torch.cat(outs, dim=1))
        return features, self._classify(features)


class DepthwiseSeparableASPPHead(_ClassifierMixin):
    """mmseg 0.30 ``DepthwiseSeparableASPPHead`` (DeepLabV3+ decoder).

    ASPP on the backbone's stride-8 map (``in_channels``: ResNet layer4's 2048, MobileNetV2 layer7's 320):
    ``image_pool`` (global average pool + 1x1 ConvModule, resized back bilinearly) first, then ``aspp_modules``
    (1x1 ConvModule for dilation 1, depthwise-separable 3x3 for the others), concatenated in that order,
    ``bottleneck`` 3x3 ConvModule; resized to the stride-4 map's size and concatenated *after* ``c1_bottleneck``
    (1x1 ConvModule on the stride-4 map, ``c1_in_channels``: ResNet layer1's 256, MobileNetV2 layer2's 24);
    ``sep_bottleneck`` two depthwise-separable 3x3 modules; ``cls_seg``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 2048,
        channels: int = 512,
        dilations: Sequence[int] = (1, 12, 24, 36),
        c1_in_channels: int = 256,
        c1_channels: int = 48,
        dropout_ratio: float = 0.1,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.channels = channels
        self.num_classes = num_classes
        self.dilations = tuple(dilations)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvModule(in_channels, channels, 1))
        self.aspp_modules = nn.ModuleList(
            [
                ConvModule(in_channels, channels, 1)
                if d == 1
                else DepthwiseSeparableConvModule(in_channels, channels, 3, padding=d, dilation=d)
                for d in self.dilations
            ]
        )
        self.bottleneck = ConvModule((len(self.dilations) + 1) * channels, channels, 3, padding=1)
        self.c1_bottleneck = ConvModule(c1_in_channels, c1_channels, 1)
        self.sep_bottleneck = nn.Sequential(
            DepthwiseSeparableConvModule(channels + c1_channels, channels, 3, padding=1),
            DepthwiseSeparableConvModule(channels, channels, 3, padding=1),
        )
        self._init_classifier(channels, num_classes, dropout_ratio)

    def forward(self, c1: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: c1: stride-4 map (B, c1_in_channels, H/4, W/4) float; x: stride-8 map (B, in_channels, H/8, W/8).

        Returns: features (B, channels, H/4, W/4), logits (B, K, H/4, W/4).
        """
        aspp = [_resize(self.image_pool(x), x.shape[2:])]
        aspp.extend(module(x) for module in self.aspp_modules)
        out = self.bottleneck(torch.cat(aspp, dim=1))
        c1_out = self.c1_bottleneck(c1)
        out = torch.cat([_resize(out, c1_out.shape[2:]), c1_out], dim=1)
        features = self.sep_bottleneck(out)
        return features, self._classify(features)
