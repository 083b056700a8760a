"""diffseg: a discrete-diffusion mask-prior refiner on top of frozen segmentors (DDPS companion)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "refine"]


def refine(*args: Any, **kwargs: Any) -> Any:
    """Refined label maps from images or from your own segmentor's logits (see ``diffseg.inference.refine``)."""
    from diffseg.inference import refine as _refine

    return _refine(*args, **kwargs)
