"""DeepLabV3+ (MobileNetV2 / ResNet-50 / ResNet-101 and a tiny CPU preset) through segmentation-models-pytorch.

Features are smp's decoder output at 1/4 resolution (ASPP upsampled, fused with the stride-4 skip), the input of
``segmentation_head``; the model is built with ``upsampling=1`` so the head's 1x1 conv gives the logits at 1/4.

Choices (see the report / README): the full-size presets use ``decoder_channels=512``, the condition width of
paper.md ("512 for DeepLabV3+", mmseg's DepthwiseSeparableASPPHead), and smp's default encoder output stride 16
(mmseg's R50/R101-D8 use 8: four times the encoder cost at 1/8 for the last stages). smp's ASPP is lighter than
mmseg's, so parameter counts are below the release's.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from diffseg.segmentors.base import Segmentor, output_size

# registry suffix -> (smp encoder name, decoder channels)
_DEEPLAB_VARIANTS: dict[str, tuple[str, int]] = {
    "mobilenetv2": ("mobilenet_v2", 512),
    "r50": ("resnet50", 512),
    "r101": ("resnet101", 512),
    # CPU preset: timm's MobileNetV3-small x0.5 (0.4 M parameters with the head), built offline with no weights.
    "tiny": ("tu-mobilenetv3_small_050", 64),
}
DEEPLAB_VARIANTS: tuple[str, ...] = tuple(_DEEPLAB_VARIANTS)

# The decoder concatenates the x4-upsampled ASPP map (stride 16) with the stride-4 skip, so the input side must
# be a multiple of 16; other sizes are padded (bottom / right, zeros = the normalised mean) and cropped back.
_INPUT_MULTIPLE = 16


class DeepLabV3PlusSegmentor(Segmentor):
    """An ``smp.DeepLabV3Plus`` behind the :class:`Segmentor` interface."""

    def __init__(self, name: str, model: smp.DeepLabV3Plus, num_classes: int, decoder_channels: int) -> None:
        super().__init__(name, num_classes, decoder_channels)
        self.model = model

    def _forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = image.shape[-2:]
        pad_h = -height % _INPUT_MULTIPLE
        pad_w = -width % _INPUT_MULTIPLE
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h))
        features = self.model.decoder(self.model.encoder(image))
        logits = self.model.segmentation_head(features)
        h, w = output_size(height, width)
        return features[..., :h, :w], logits[..., :h, :w]


def build_deeplab(name: str, variant: str, num_classes: int) -> DeepLabV3PlusSegmentor:
    """A randomly initialised DeepLabV3+ of ``variant`` (``"mobilenetv2"``, ``"r50"``, ``"r101"``, ``"tiny"``)."""
    if variant not in _DEEPLAB_VARIANTS:
        raise ValueError(
            f"unknown DeepLabV3+ variant {variant!r}; valid variants: {', '.join(_DEEPLAB_VARIANTS)}"
        )
    encoder, channels = _DEEPLAB_VARIANTS[variant]
    model = smp.DeepLabV3Plus(
        encoder_name=encoder,
        encoder_weights=None,
        classes=num_classes,
        decoder_channels=channels,
        upsampling=1,
    )
    return DeepLabV3PlusSegmentor(name, model, num_classes, channels)
