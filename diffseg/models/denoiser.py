"""The trainable part of the refiner: the noisy mask's class embedding and the UNet, with their channel rules.

``Denoiser(x_t, t, cond) -> x0 logits (B, K, h, w)``; the MaskPriorRefiner (``diffseg.models.refiner``) builds the
condition from the frozen segmentor and owns the diffusion.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from diffseg.models.options import CONDITIONS
from diffseg.models.unet import UNet
from diffseg.segmentors.base import Segmentor


def condition_channels(segmentor: Segmentor, condition: str) -> int:
    """Channels of the condition map: the segmentor's feature channels, or K for ``logits`` / ``mask``."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; valid conditions: {', '.join(CONDITIONS)}")
    return segmentor.feature_channels if condition == "features" else segmentor.num_classes


def denoiser_in_channels(segmentor: Segmentor, kernel: Any, condition: str, embed_dim: int) -> int:
    """UNet input channels: embedded x_t (``embed_dim``; a continuous kernel's ``input_channels``) + condition."""
    x_channels = kernel.input_channels if kernel.is_continuous else embed_dim
    return x_channels + condition_channels(segmentor, condition)


def _time_vector(t: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
    """Broadcast an int / 0-d / (B,) timestep to a (B,) tensor."""
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0:
        return t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
    return t


class Denoiser(nn.Module):
    """The trainable part: class embedding of the noisy mask (frozen by default, as the release) and the UNet.

    ``forward(x_t, t, cond) -> (B, K, h, w)`` with ``x_t`` (B, h, w) long in [0, num_states) (or (B, C, h, w) float
    for a continuous kernel, used as is), ``t`` (B,) long, ``cond`` (B, Cc, h, w) float.

    ``time_from``: None feeds the UNet t as given; T feeds it ``T - t``, the authors' release's network index
    (0 for the noisiest level T, T - 1 for the cleanest t = 1), so that its checkpoints see the times they were
    trained with (``refiner.release_time``).
    """

    def __init__(
        self,
        unet: UNet,
        num_states: int,
        embed_dim: int,
        embed_trainable: bool,
        continuous_channels: int | None,
        time_from: int | None = None,
    ) -> None:
        super().__init__()
        self.continuous_channels = continuous_channels
        self.time_from = time_from
        if continuous_channels is None:
            self.embedding: nn.Embedding | None = nn.Embedding(num_states, embed_dim)
            # The release keeps the embedding at its random initialisation: a fixed random code per class.
            self.embedding.weight.requires_grad_(embed_trainable)
        else:
            self.embedding = None
        self.unet = unet

    def project_condition(self, cond: torch.Tensor) -> torch.Tensor:
        """The UNet's first conv applied to the condition's channels alone: (B, Cc, h, w) -> (B, width, h', w').

        The condition does not change across sampling steps, so samplers project it once per image and pass it to
        :meth:`forward` as ``cond_projection``; the result is that of the full input, up to float rounding.
        """
        # The embedded x_t comes first in the UNet's input; the condition fills the remaining channels exactly.
        x_channels = self.embedding.embedding_dim if self.embedding is not None else self.continuous_channels
        expected = self.unet.in_channels - x_channels
        if cond.ndim != 4 or cond.shape[1] != expected:
            raise ValueError(f"condition must have shape (B, {expected}, h, w), got {tuple(cond.shape)}")
        return self.unet.project_input(cond, first_channel=x_channels)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        cond_projection: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x0 logits (B, K, h, w); ``cond_projection``: :meth:`project_condition` of ``cond``, reused across steps."""
        if self.embedding is not None:
            if x_t.dtype != torch.long or x_t.ndim != 3:
                raise ValueError(f"x_t must be a (B, h, w) long mask, got {tuple(x_t.shape)} {x_t.dtype}")
            x = self.embedding(x_t).permute(0, 3, 1, 2)
        else:
            if not x_t.is_floating_point() or x_t.ndim != 4 or x_t.shape[1] != self.continuous_channels:
                raise ValueError(
                    f"x_t must be a (B, {self.continuous_channels}, h, w) float map, got {tuple(x_t.shape)} {x_t.dtype}"
                )
            x = x_t
        if cond.shape[0] != x.shape[0] or cond.shape[-2:] != x.shape[-2:]:
            raise ValueError(
                f"condition {tuple(cond.shape)} does not match x_t {tuple(x_t.shape)} (batch and h, w)"
            )
        t = _time_vector(t, x.shape[0], x.device)
        if self.time_from is not None:
            t = self.time_from - t
        if cond_projection is not None:
            return self.unet(x.to(cond.dtype), t, projected=cond_projection)
        return self.unet(torch.cat((x.to(cond.dtype), cond), dim=1), t)
