"""The refiner's networks: the time-conditioned UNet and the MaskPriorRefiner around a frozen segmentor."""

from diffseg.models.refiner import (
    CONDITIONS,
    NOISE_OBJECTS,
    Denoiser,
    MaskPriorRefiner,
    build_refiner,
    condition_channels,
    denoiser_in_channels,
)
from diffseg.models.unet import UNet

__all__ = [
    "CONDITIONS",
    "NOISE_OBJECTS",
    "Denoiser",
    "MaskPriorRefiner",
    "UNet",
    "build_refiner",
    "condition_channels",
    "denoiser_in_channels",
]
