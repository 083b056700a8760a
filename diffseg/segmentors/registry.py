"""The segmentor registry: ``build_segmentor(name, num_classes, weights, frozen)``; a bad name lists the valid ones.

The registry is a read-only mapping built once; callers get names from :func:`segmentor_names` and never
mutate shared state.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType

from diffseg.segmentors.base import Segmentor
from diffseg.segmentors.deeplab import DEEPLAB_VARIANTS, build_deeplab
from diffseg.segmentors.mmseg_bases import (
    MMSEG_DEEPLAB_VARIANTS,
    MMSEG_SEGFORMER_SIZES,
    build_mmseg_segmentor,
)
from diffseg.segmentors.mmseg_convert import load_mmseg_checkpoint
from diffseg.segmentors.segformer import SEGFORMER_SIZES, build_segformer
from diffseg.segmentors.weights import is_state_file, load_segmentor_state

# name -> (family, size / variant)
_REGISTRY: MappingProxyType[str, tuple[str, str]] = MappingProxyType(
    {
        **{f"segformer-{size}": ("segformer", size) for size in SEGFORMER_SIZES},
        **{f"deeplabv3plus-{variant}": ("deeplabv3plus", variant) for variant in DEEPLAB_VARIANTS},
        # the release's frozen bases as mmseg 0.30 built them; weights: mmseg zoo .pth checkpoints
        **{f"segformer-{size}-mmseg": ("segformer-mmseg", size) for size in MMSEG_SEGFORMER_SIZES},
        **{f"deeplabv3plus-{v}": ("deeplabv3plus-mmseg", v) for v in MMSEG_DEEPLAB_VARIANTS},
    }
)


def segmentor_names() -> tuple[str, ...]:
    """Every valid registry name."""
    return tuple(_REGISTRY)


def _looks_like_path(weights: str) -> bool:
    # a hub id is "owner/name"; anything anchored to the file system is a path the user expects to exist
    return weights.startswith(("/", "./", "../", "~"))


def build_segmentor(
    name: str,
    num_classes: int,
    weights: str | os.PathLike[str] | None = None,
    frozen: bool = True,
) -> Segmentor:
    """Build a registered base segmentor.

    Args:
        name: a name from :func:`segmentor_names` (``segformer-b0``..``b5``, ``segformer-tiny``,
            ``deeplabv3plus-mobilenetv2`` / ``-r50`` / ``-r101`` / ``-tiny``).
            The mmseg 0.30 bases: ``segformer-b0-mmseg`` / ``-b2-mmseg`` / ``-b5-mmseg``,
            ``deeplabv3plus-m-v2-d8`` / ``-r50-d8`` / ``-r101-d8``.
        num_classes: K; checked against the loaded weights' head.
        weights: None (random init), a ``.safetensors`` / ``.pt`` state dict saved by :func:`save_segmentor`,
            or for SegFormer a local ``save_pretrained`` folder or a Hugging Face hub id. For the mmseg bases
            a ``.pth`` file is an mmseg 0.30 checkpoint, converted by :func:`load_mmseg_checkpoint`.
        frozen: eval mode for good and no gradients (the refiner's base); False to train it, then ``freeze()``.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown segmentor {name!r}; valid names: {', '.join(_REGISTRY)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    family, variant = _REGISTRY[name]
    mmseg = family.endswith("-mmseg")
    state_file = None
    pretrained = None
    if weights is not None:
        weights_str = str(weights)
        if is_state_file(weights_str):
            if not Path(weights_str).expanduser().is_file():
                raise FileNotFoundError(f"segmentor weights file {weights_str} does not exist")
            state_file = Path(weights_str).expanduser()
        elif family == "segformer" and not mmseg:
            if _looks_like_path(weights_str) and not Path(weights_str).expanduser().exists():
                raise FileNotFoundError(f"SegFormer weights folder {weights_str} does not exist")
            pretrained = weights_str
        else:
            kinds = "an mmseg .pth checkpoint or a " if mmseg else "a "
            raise ValueError(
                f"weights for {name} must be {kinds}state-dict file ending in .safetensors or .pt, "
                f"got {weights_str!r}"
            )
    if mmseg:
        segmentor: Segmentor = build_mmseg_segmentor(name, family, variant, num_classes)
    elif family == "segformer":
        segmentor = build_segformer(name, variant, num_classes, pretrained)
    else:
        segmentor = build_deeplab(name, variant, num_classes)
    if state_file is not None and mmseg and state_file.suffix.lower() == ".pth":
        load_mmseg_checkpoint(segmentor, state_file)
    elif state_file is not None:
        load_segmentor_state(segmentor, state_file)
    if frozen:
        segmentor.freeze()
    return segmentor
