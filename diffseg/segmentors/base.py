"""The base-segmentor contract: ``forward(image) -> (features, logits)``, both at 1/4 input resolution.

A :class:`Segmentor` wraps an off-the-shelf model (SegFormer, DeepLabV3+) and exposes the decode head's fused
feature map *before* the classifier (the refiner's condition, paper.md "Architecture") next to the class logits.
Frozen segmentors stay in eval mode whatever ``.train()`` is called on them or on a parent module, so the BN
statistics of the released weights never drift while the refiner around them trains.
"""

from __future__ import annotations

import torch
from torch import nn


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module`` (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def output_size(height: int, width: int) -> tuple[int, int]:
    """The 1/4 map size every segmentor returns: ``ceil(H / 4), ceil(W / 4)`` (SegFormer's stride-4 patch embed)."""
    return (height + 3) // 4, (width + 3) // 4


def check_image(image: torch.Tensor) -> None:
    """Raise ValueError unless ``image`` is a (B, 3, H, W) floating tensor."""
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"image must be a torch.Tensor of shape (B, 3, H, W), got {type(image).__name__}")
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must have shape (B, 3, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"image must be a floating tensor (normalised RGB), got dtype {image.dtype}")


class Segmentor(nn.Module):
    """A base segmentor behind the one interface the refiner and the engines use.

    Attributes:
        name: registry name (e.g. ``"segformer-b2"``).
        num_classes: K, the number of output classes.
        feature_channels: C, channels of the feature map returned by :meth:`forward`.
    """

    def __init__(self, name: str, num_classes: int, feature_channels: int) -> None:
        super().__init__()
        self.name = name
        self.num_classes = num_classes
        self.feature_channels = feature_channels
        self._frozen = False

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> Segmentor:
        """Eval mode for good, no gradients: the state a base segmentor is in under a refiner."""
        self._frozen = True
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def unfreeze(self) -> Segmentor:
        """Trainable again (to train a base segmentor from scratch); the caller sets the mode."""
        self._frozen = False
        for p in self.parameters():
            p.requires_grad_(True)
        return self

    def train(self, mode: bool = True) -> Segmentor:
        # A parent's .train() recurses into its children through this method; a frozen segmentor ignores it so
        # that BatchNorm keeps its running statistics and dropout stays off.
        return super().train(mode and not self._frozen)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the segmentor.

        Args:
            image: (B, 3, H, W) float, normalised RGB.

        Returns:
            features: (B, C, ceil(H/4), ceil(W/4)) float, the decode head's fused map before the classifier.
            logits: (B, K, ceil(H/4), ceil(W/4)) float, class scores at the same resolution.
        """
        check_image(image)
        return self._forward(image)

    def _forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, num_classes={self.num_classes}, feature_channels={self.feature_channels}, "
            f"frozen={self._frozen}"
        )
