"""The time-conditioned UNet denoiser (paper.md "Architecture"), in the style of lucidrains' 2022 ``Unet``.

It knows nothing of diffusion beyond a time embedding: ``forward(x, t) -> y`` with ``x: (B, Cin, h, w)`` and
``t: (B,)`` step indices. Structure, per level: ``blocks`` FiLM-conditioned ResNet blocks (the release: two), linear
attention, then a strided 4x4 conv down (a 3x3 conv on the last level); full attention between two ResNet blocks
in the middle; the mirror image going up with skip connections; a 7x7 init conv whose output also skips to a final ResNet block;
a 1x1 conv to ``out_channels`` (the class-logit "classifier"). Time: sinusoidal embedding of width ``width``, then
an MLP to ``4 * width``. Attention: 4 heads of 32 channels. With ``dim_mults=(1, 1, 1)``, 150 classes and
256 + 16 input channels this gives 40.9 M parameters at width 256 and 11.4 M at width 128, the release's scale.

Maps whose sides are not multiples of ``2 ** (len(dim_mults) - 1)`` (the 1/4 map of a 512x683 image is 128x171)
are padded by edge replication and the output is cropped back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SinusoidalTimeEmbedding(nn.Module):
    """``t: (B,)`` -> ``(B, dim)`` sin / cos features of geometrically spaced frequencies (base 10000)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding width must be even, got {dim}")
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(
            -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / (half - 1)
        )
        args = t.float()[:, None] * freqs[None, :]
        return torch.cat((args.sin(), args.cos()), dim=-1)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map, with a per-channel gain (lucidrains' ``LayerNorm``)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) * (var + self.eps).rsqrt() * self.g


class WeightStandardizedConv2d(nn.Conv2d):
    """A conv whose weight is standardised per output channel before use (Qiao et al. 2019, paired with GroupNorm
    in the release's UNet): ``(w - mean) / sqrt(var + eps)`` over each filter, eps 1e-5 in float32 (1e-3 below)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), unbiased=False, keepdim=True)
        weight = (self.weight - mean) * (var + eps).rsqrt()
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ConvNormAct(nn.Module):
    """3x3 conv (weight-standardised if asked), GroupNorm, optional FiLM ``x * (1 + scale) + shift``, SiLU."""

    def __init__(self, dim_in: int, dim_out: int, groups: int, weight_standardized: bool = False) -> None:
        super().__init__()
        conv = WeightStandardizedConv2d if weight_standardized else nn.Conv2d
        self.conv = conv(dim_in, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out)

    def forward(
        self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = self.norm(self.conv(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return F.silu(x)


class ResnetBlock(nn.Module):
    """Two conv blocks; the time embedding gives the first one's FiLM scale and shift; 1x1 residual if widths differ."""

    def __init__(
        self, dim_in: int, dim_out: int, time_dim: int, groups: int, weight_standardized: bool = False
    ) -> None:
        super().__init__()
        self.time_mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, dim_out * 2))
        self.block1 = ConvNormAct(dim_in, dim_out, groups, weight_standardized)
        self.block2 = ConvNormAct(dim_out, dim_out, groups, weight_standardized)
        self.res_conv = nn.Conv2d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        scale_shift = self.time_mlp(time_emb)[:, :, None, None].chunk(2, dim=1)
        h = self.block1(x, scale_shift)
        h = self.block2(h)
        return h + self.res_conv(x)


class LinearAttention(nn.Module):
    """Pre-normed, residual linear attention (softmax over keys' positions and queries' channels): O(h*w).

    ``scale_v``: divide the values by the number of positions h*w, as the release does (it keeps the context
    ``k v^T`` a mean rather than a sum over positions, so its size does not grow with the map)."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32, scale_v: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim_head**-0.5
        self.scale_v = scale_v
        hidden = heads * dim_head
        self.norm = ChannelLayerNorm(dim)
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, dim, 1), ChannelLayerNorm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = (z.reshape(b, self.heads, -1, h * w) for z in self.to_qkv(self.norm(x)).chunk(3, dim=1))
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        if self.scale_v:
            v = v / (h * w)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q).reshape(b, -1, h, w)
        return x + self.to_out(out)


class Attention(nn.Module):
    """Pre-normed, residual full self-attention over all positions (used once, at the lowest resolution)."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32) -> None:
        super().__init__()
        self.heads = heads
        hidden = heads * dim_head
        self.norm = ChannelLayerNorm(dim)
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = (
            z.reshape(b, self.heads, -1, h * w).transpose(-1, -2)
            for z in self.to_qkv(self.norm(x)).chunk(3, dim=1)
        )
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, n, d); memory-efficient kernels on GPU
        return x + self.to_out(out.transpose(-1, -2).reshape(b, -1, h, w))


class UNet(nn.Module):
    """Time-conditioned UNet: ``(B, in_channels, h, w), t (B,) -> (B, out_channels, h, w)``.

    Args:
        in_channels: input channels (embedded noisy mask + condition in the refiner).
        out_channels: output channels (K class logits in the refiner).
        width: channels of the first level; level i has ``width * dim_mults[i]``.
        dim_mults: one entry per level; ``len(dim_mults) - 1`` down / up-samplings.
        attention: linear attention at every level and full attention in the middle (False: none, for ablations
            and very small CPU models).
        groups: GroupNorm groups; every level width must be divisible by it.
        weight_standardized: weight-standardised 3x3 convs in the ResNet blocks (the release's).
        attention_scale_v: linear attention divides its values by h*w (the release's).
        head_channels: 0: the last 1x1 conv gives the ``out_channels`` logits; > 0: it gives ``head_channels``
            features, then ``Dropout2d(head_dropout)`` and a 1x1 conv to ``out_channels`` (the release's head:
            256 channels, dropout 0.1; in train mode the dropout also makes the no-grad first prediction of DFP
            stochastic, as in the release).
        blocks: ResNet blocks per level on each side (the release: 2). Every block's output is a skip, so an up
            level concatenates one skip per block; the module layout ``downs[i] = [block_1..block_n, attn,
            resample]`` keeps the release's parameter names at ``blocks=2``.
        attention_head_channels: channels per attention head (4 heads; the release: 32, i.e. 128 inner channels,
            half the width of its smaller UNet; at width 32 that would be 4x the width, and attention most of the step).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 256,
        dim_mults: tuple[int, ...] = (1, 1, 1),
        attention: bool = True,
        groups: int = 8,
        weight_standardized: bool = False,
        attention_scale_v: bool = False,
        head_channels: int = 0,
        head_dropout: float = 0.1,
        blocks: int = 2,
        attention_head_channels: int = 32,
    ) -> None:
        super().__init__()
        dim_mults = tuple(dim_mults)
        if head_channels < 0 or not 0 <= head_dropout < 1:
            raise ValueError(
                f"head_channels must be >= 0 and head_dropout in [0, 1), got {head_channels}, {head_dropout}"
            )
        if blocks < 1 or attention_head_channels < 1:
            raise ValueError(
                f"UNet blocks per level and attention head channels must be >= 1, got {blocks}, "
                f"{attention_head_channels}"
            )
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"UNet channels must be positive, got in={in_channels}, out={out_channels}")
        if not dim_mults or any(m < 1 for m in dim_mults):
            raise ValueError(f"dim_mults must be a non-empty tuple of positive ints, got {dim_mults}")
        dims = [width * m for m in dim_mults]
        bad = [d for d in dims if d % groups]
        if width < 2 or width % 2 or bad:
            raise ValueError(
                f"UNet width {width} x dim_mults {dim_mults} gives widths {dims}; each must be divisible by "
                f"groups={groups} (and width even)"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.width = width
        self.dim_mults = dim_mults
        self.downsample_factor = 2 ** (len(dims) - 1)

        time_dim = width * 4
        self.time_mlp = nn.Sequential(
            SinusoidalTimeEmbedding(width),
            nn.Linear(width, time_dim),
            nn.GELU(),
            nn.Linear(time_dim, time_dim),
        )
        self.init_conv = nn.Conv2d(in_channels, width, 7, padding=3)

        def block(a: int, b: int) -> ResnetBlock:
            return ResnetBlock(a, b, time_dim, groups, weight_standardized)

        def attn(d: int) -> nn.Module:
            if not attention:
                return nn.Identity()
            return LinearAttention(d, dim_head=attention_head_channels, scale_v=attention_scale_v)

        in_out = list(zip([width, *dims[:-1]], dims))
        self.downs = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(in_out):
            last = i == len(in_out) - 1
            resample = (
                nn.Conv2d(d_in, d_out, 3, padding=1)
                if last
                else nn.Conv2d(d_in, d_out, 4, stride=2, padding=1)
            )
            self.downs.append(
                nn.ModuleList([*(block(d_in, d_in) for _ in range(blocks)), attn(d_in), resample])
            )

        mid = dims[-1]
        self.mid_block1 = block(mid, mid)
        self.mid_attn = Attention(mid, dim_head=attention_head_channels) if attention else nn.Identity()
        self.mid_block2 = block(mid, mid)

        self.ups = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(reversed(in_out)):
            last = i == len(in_out) - 1
            resample = (
                nn.Conv2d(d_out, d_in, 3, padding=1)
                if last
                else nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(d_out, d_in, 3, padding=1)
                )
            )
            self.ups.append(
                nn.ModuleList([*(block(d_out + d_in, d_out) for _ in range(blocks)), attn(d_out), resample])
            )

        self.final_block = block(width * 2, width)
        self.final_conv = nn.Conv2d(width, head_channels or out_channels, 1)
        self.head = (
            nn.Sequential(nn.Dropout2d(head_dropout), nn.Conv2d(head_channels, out_channels, 1))
            if head_channels
            else None
        )

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Replicate-pad (B, C, h, w) on the bottom / right so that h and w divide by ``downsample_factor``."""
        f = self.downsample_factor
        pad_h, pad_w = -x.shape[-2] % f, -x.shape[-1] % f
        return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x

    def project_input(self, x: torch.Tensor, first_channel: int = 0, bias: bool = True) -> torch.Tensor:
        """The first conv restricted to input channels ``[first_channel, first_channel + C)``, for x (B, C, h, w).

        Returns (B, width, h', w') at the padded size. The conv is linear, so the projection of a concatenation is
        the sum of its parts' projections: the refiner projects its step-invariant condition once per image and
        passes it to :meth:`forward` as ``projected`` at every step (a third of a width-128 denoiser's FLOPs on
        SegFormer features lie in this 7x7 conv).
        """
        last = first_channel + x.shape[1]
        if x.ndim != 4 or first_channel < 0 or last > self.in_channels:
            raise ValueError(
                f"project_input: channels [{first_channel}, {last}) of a (B, C, h, w) input are not within the "
                f"UNet's {self.in_channels} input channels (got shape {tuple(x.shape)})"
            )
        weight = self.init_conv.weight[:, first_channel:last]
        return F.conv2d(
            self._pad(x), weight, self.init_conv.bias if bias else None, padding=self.init_conv.padding
        )

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, projected: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predict ``(B, out_channels, h, w)`` from ``x: (B, in_channels, h, w)`` float and ``t: (B,)`` long or float.

        With ``projected`` (B, width, h', w') from :meth:`project_input` of the trailing input channels, ``x`` holds
        only the leading ``in_channels - C`` channels; the result equals that of the full concatenation.
        """
        channels = x.shape[1] if x.ndim == 4 else -1
        if channels != self.in_channels and not (projected is not None and 0 < channels < self.in_channels):
            leading = " (or fewer leading channels with projected=)" if projected is not None else ""
            raise ValueError(
                f"UNet input must have shape (B, {self.in_channels}, h, w){leading}, got {tuple(x.shape)}"
            )
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"UNet time must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        height, width = x.shape[-2:]
        if projected is None:
            x = self.init_conv(self._pad(x))
        else:
            x = self.project_input(x, 0, bias=False)
            if projected.shape != x.shape:
                raise ValueError(
                    f"projected input {tuple(projected.shape)} does not match the projection of x {tuple(x.shape)}"
                )
            x = x + projected
        residual = x
        temb = self.time_mlp(t)
        skips = []
        for *blocks, attn, downsample in self.downs:
            for i, block in enumerate(blocks):
                x = block(x, temb)
                if i == len(blocks) - 1:  # attention after the level's last block, before its skip
                    x = attn(x)
                skips.append(x)
            x = downsample(x)
        x = self.mid_block2(self.mid_attn(self.mid_block1(x, temb)), temb)
        for *blocks, attn, upsample in self.ups:
            for block in blocks:
                x = block(torch.cat((x, skips.pop()), dim=1), temb)
            x = upsample(attn(x))
        x = self.final_conv(self.final_block(torch.cat((x, residual), dim=1), temb))
        if self.head is not None:
            x = self.head(x)
        return x[..., :height, :width]
