"""Frozen base segmentors behind one interface: ``forward(image) -> (features, logits)`` at 1/4 resolution.

>>> seg = build_segmentor("segformer-tiny", num_classes=8)   # random init, frozen
>>> features, logits = seg(torch.randn(2, 3, 64, 64))         # (2, 64, 16, 16), (2, 8, 16, 16)
"""

from diffseg.segmentors.base import Segmentor, count_parameters, output_size
from diffseg.segmentors.mmseg_convert import load_mmseg_checkpoint, to_mmseg_state_dict
from diffseg.segmentors.registry import build_segmentor, segmentor_names
from diffseg.segmentors.weights import load_segmentor_state, save_segmentor

__all__ = [
    "Segmentor",
    "build_segmentor",
    "count_parameters",
    "load_mmseg_checkpoint",
    "load_segmentor_state",
    "output_size",
    "save_segmentor",
    "segmentor_names",
    "to_mmseg_state_dict",
]
