"""SegFormer (MiT-B0..B5 and a tiny CPU preset) through Hugging Face transformers.

Features are the All-MLP decode head's fused map after ``linear_fuse`` + BN + ReLU (+ dropout, identity in eval),
i.e. exactly the classifier's input, captured with a forward pre-hook so that the wrapped model stays a plain
``SegformerForSemanticSegmentation`` (its ``save_pretrained`` / ``from_pretrained`` keep working).

Random-init presets use a 256-channel decode head for every size, as mmsegmentation's SegFormer configs (the
release froze mmseg checkpoints: paper.md's parameter counts fit a 256-channel head). The NVIDIA hub checkpoints
of B2..B5 carry a 768-channel head; when those are loaded, ``feature_channels`` follows the loaded config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from diffseg.segmentors.base import Segmentor

# (hidden_sizes, depths) per MiT size; heads, sr-ratios and mlp-ratios are shared by all sizes.
_MIT_SIZES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "b0": ((32, 64, 160, 256), (2, 2, 2, 2)),
    "b1": ((64, 128, 320, 512), (2, 2, 2, 2)),
    "b2": ((64, 128, 320, 512), (3, 4, 6, 3)),
    "b3": ((64, 128, 320, 512), (3, 4, 18, 3)),
    "b4": ((64, 128, 320, 512), (3, 8, 27, 3)),
    "b5": ((64, 128, 320, 512), (3, 6, 40, 3)),
    # CPU preset: four stages of small width and depth one; forward + backward of 16 x 64x64 takes ~30 ms.
    "tiny": ((16, 32, 64, 128), (1, 1, 1, 1)),
}
SEGFORMER_SIZES: tuple[str, ...] = tuple(_MIT_SIZES)


def segformer_config(size: str, num_classes: int) -> SegformerConfig:
    """The transformers config of a MiT size (``"b0"``..``"b5"``, ``"tiny"``) with a K-class head."""
    if size not in _MIT_SIZES:
        raise ValueError(f"unknown SegFormer size {size!r}; valid sizes: {', '.join(_MIT_SIZES)}")
    hidden, depths = _MIT_SIZES[size]
    return SegformerConfig(
        num_labels=num_classes,
        hidden_sizes=list(hidden),
        depths=list(depths),
        num_attention_heads=[1, 2, 4, 8] if size == "tiny" else [1, 2, 5, 8],
        decoder_hidden_size=64 if size == "tiny" else 256,
        semantic_loss_ignore_index=255,
    )


class SegFormerSegmentor(Segmentor):
    """A ``SegformerForSemanticSegmentation`` behind the :class:`Segmentor` interface."""

    def __init__(self, name: str, model: SegformerForSemanticSegmentation) -> None:
        super().__init__(name, model.config.num_labels, model.config.decoder_hidden_size)
        self.model = model
        self._captured: torch.Tensor | None = None
        model.decode_head.classifier.register_forward_pre_hook(self._capture_classifier_input)

    def _capture_classifier_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._captured = args[0]

    def _forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            logits = self.model(pixel_values=image).logits
            features = self._captured
        finally:
            self._captured = None  # do not keep the activation (and its graph) alive between calls
        return features, logits


def _check_loaded_config(
    model: SegformerForSemanticSegmentation, size: str, num_classes: int, source: str
) -> None:
    cfg = model.config
    if cfg.num_labels != num_classes:
        raise ValueError(
            f"SegFormer weights {source} have a {cfg.num_labels}-class head, but num_classes={num_classes} was "
            f"requested (the published ADE20K checkpoints have 150 classes, Cityscapes 19)"
        )
    hidden, depths = _MIT_SIZES[size]
    if tuple(cfg.hidden_sizes) != hidden or tuple(cfg.depths) != depths:
        raise ValueError(
            f"SegFormer weights {source} are not a MiT-{size.upper()}: hidden_sizes={list(cfg.hidden_sizes)}, "
            f"depths={list(cfg.depths)}; expected hidden_sizes={list(hidden)}, depths={list(depths)}"
        )


def build_segformer(
    name: str, size: str, num_classes: int, pretrained: str | Path | None = None
) -> SegFormerSegmentor:
    """Build a SegFormer of ``size``; ``pretrained`` is a hub id or a local ``save_pretrained`` folder.

    A local folder is read with ``local_files_only=True`` so that it never touches the network.
    (State-dict files of the wrapper are loaded by the registry, not here.)
    """
    if pretrained is None:
        return SegFormerSegmentor(name, SegformerForSemanticSegmentation(segformer_config(size, num_classes)))
    local = Path(pretrained).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise FileNotFoundError(
                f"SegFormer folder {local} has no config.json (expected a save_pretrained folder)"
            )
        model = SegformerForSemanticSegmentation.from_pretrained(str(local), local_files_only=True)
    else:
        model = SegformerForSemanticSegmentation.from_pretrained(
            str(pretrained)
        )  # a hub id, named by the user
    if getattr(model.config, "model_type", None) != "segformer":
        raise ValueError(
            f"weights {pretrained} are a {model.config.model_type!r} model, expected 'segformer'"
        )
    _check_loaded_config(model, size, num_classes, str(pretrained))
    return SegFormerSegmentor(name, model)
