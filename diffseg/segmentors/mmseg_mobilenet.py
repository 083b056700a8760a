"""mmsegmentation 0.30's ``MobileNetV2`` backbone as its DeepLabV3+ MobileNetV2-D8 config builds it, in torch.

Written after ``mmseg/models/backbones/mobilenet_v2.py`` and ``mmseg/models/utils/inverted_residual.py``; the
submodules carry mmseg's names (``conv1.{conv,bn}``, ``layer{1..7}.{j}.conv.{k}.{conv,bn}``), so a zoo
checkpoint's ``backbone.*`` keys load unchanged.

The zoo config (``configs/mobilenet_v2/deeplabv3plus_m-v2-d8_512x512_160k_ade20k.py``) sets
``widen_factor=1.``, ``strides=(1, 2, 2, 1, 1, 1, 1)``, ``dilations=(1, 1, 1, 2, 2, 4, 4)``,
``out_indices=(1, 2, 4, 6)``: output stride 8 with dilated layers 4..7. One mmseg detail matters for parity:
``make_layer`` gives a layer's dilation to its *first* block only, the later blocks of a dilated layer run with
dilation 1 (unlike ResNet's ``contract_dilation``, which dilates every block).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from diffseg.segmentors.mmseg_heads import ConvModule

# MobileNetV2.arch_settings, per layer: expand_ratio, output channels (widen_factor 1), number of blocks
ARCH_SETTINGS: tuple[tuple[int, int, int], ...] = (
    (1, 16, 1),
    (6, 24, 2),
    (6, 32, 3),
    (6, 64, 4),
    (6, 96, 3),
    (6, 160, 3),
    (6, 320, 1),
)
# the DeepLabV3+ MobileNetV2-D8 config's backbone settings
D8_STRIDES: tuple[int, ...] = (1, 2, 2, 1, 1, 1, 1)
D8_DILATIONS: tuple[int, ...] = (1, 1, 1, 2, 2, 4, 4)
STEM_CHANNELS = 32  # make_divisible(32 * widen_factor, 8) at widen_factor 1


class InvertedResidual(nn.Module):
    """mmseg's ``InvertedResidual``: ``conv`` = [1x1 expand ConvModule (only if ``expand_ratio != 1``),
    depthwise 3x3 ConvModule (stride, dilation, padding = dilation), 1x1 project ConvModule without activation],
    ReLU6 activations; the input is added back when ``stride == 1`` and the channels do not change."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, expand_ratio: int, dilation: int = 1
    ):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        self.stride = stride
        self.use_res_connect = stride == 1 and in_channels == out_channels
        hidden = int(round(in_channels * expand_ratio))
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvModule(in_channels, hidden, 1, act="ReLU6"))
        layers += [
            ConvModule(
                hidden,
                hidden,
                3,
                stride=stride,
                padding=dilation,
                dilation=dilation,
                groups=hidden,
                act="ReLU6",
            ),
            # the linear bottleneck: mmseg's act_cfg=None
            ConvModule(hidden, out_channels, 1, act=None),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, out_channels, ceil(H / stride), ceil(W / stride))."""
        out = self.conv(x)
        # out-of-place add: the input may be a tensor the caller keeps (e.g. an out_indices output)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """mmseg 0.30 ``MobileNetV2`` (widen_factor 1, BN, ReLU6): ``conv1`` (3x3 stride 2, 32 channels), then
    ``layer1..layer7`` of :class:`InvertedResidual` blocks after :data:`ARCH_SETTINGS`.

    A layer's stride and dilation apply to its first block only (mmseg's ``make_layer``). :meth:`forward` returns
    the outputs of the layers in ``out_indices`` (0-based), as mmseg's ``forward``.
    """

    def __init__(
        self,
        strides: Sequence[int] = D8_STRIDES,
        dilations: Sequence[int] = D8_DILATIONS,
        out_indices: Sequence[int] = (1, 2, 4, 6),
    ) -> None:
        super().__init__()
        if not len(strides) == len(dilations) == len(ARCH_SETTINGS):
            raise ValueError(f"strides and dilations need {len(ARCH_SETTINGS)} entries, one per layer")
        if any(i not in range(len(ARCH_SETTINGS)) for i in out_indices):
            raise ValueError(f"out_indices must lie in 0..{len(ARCH_SETTINGS) - 1}, got {tuple(out_indices)}")
        self.out_indices = tuple(out_indices)
        self.conv1 = ConvModule(3, STEM_CHANNELS, 3, stride=2, padding=1, act="ReLU6")
        in_channels = STEM_CHANNELS
        for i, ((expand_ratio, channels, blocks), stride, dilation) in enumerate(
            zip(ARCH_SETTINGS, strides, dilations, strict=True)
        ):
            # as mmseg's make_layer: the first block takes the layer's stride and dilation, the later ones neither
            first = InvertedResidual(in_channels, channels, stride, expand_ratio, dilation)
            rest = [InvertedResidual(channels, channels, 1, expand_ratio, 1) for _ in range(blocks - 1)]
            layer = nn.Sequential(first, *rest)
            self.add_module(f"layer{i + 1}", layer)
            in_channels = channels
        self.out_channels = tuple(ARCH_SETTINGS[i][1] for i in self.out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args: x: (B, 3, H, W) float.

        Returns: per index in ``out_indices``, that layer's output (B, C_i, H_i, W_i); with the D8 settings and
        the default ``out_indices``: 24 channels at stride 4, 32 at 8, 96 at 8 and 320 at 8 (sizes rounded up).
        """
        x = self.conv1(x)
        outs = []
        for i in range(len(ARCH_SETTINGS)):
            x = getattr(self, f"layer{i + 1}")(x)
            if i in self.out_indices:
                outs.append(x)
        return outs
