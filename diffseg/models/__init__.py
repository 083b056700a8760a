"""The refiner's networks: the time-conditioned UNet and the MaskPriorRefiner around a frozen segmentor.

The networks load on first use (PEP 562), so ``diffseg.models.options`` (the enumerated settings configs check
against) imports without torch's model zoo libraries.
"""

from __future__ import annotations

import importlib
from typing import Any

from diffseg.models.options import CONDITIONS, NOISE_OBJECTS

_LAZY = {
    "Denoiser": "diffseg.models.denoiser",
    "MaskPriorRefiner": "diffseg.models.refiner",
    "build_refiner": "diffseg.models.refiner",
    "condition_channels": "diffseg.models.denoiser",
    "denoiser_in_channels": "diffseg.models.denoiser",
    "UNet": "diffseg.models.unet",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'diffseg.models' has no attribute {name!r}")


__all__ = ["CONDITIONS", "NOISE_OBJECTS", *_LAZY]
