"""The continuous arm: Gaussian diffusion on an analog-bit map or a fixed random class embedding, DDIM steps.

As in Bit Diffusion / DDP: a mask (B, H, W) long is encoded to a real map (B, C, H, W) (class index in binary,
bits in {-1, 1} * scale; or a fixed random embedding row * scale), noised with
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, abar from the same schedules as the discrete kernels (abar_0 = 1).
The network still predicts K class logits for x_0; a DDIM step (eta = 0) turns them into the expected encoding
(softmax-weighted codebook) and moves deterministically to level s.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from diffseg.diffusion.kernels import check_generator, check_labels, check_times
from diffseg.diffusion.schedules import get_schedule

ENCODINGS = ("analog_bits", "embedding")


class Gaussian(nn.Module):
    """Gaussian diffusion over encoded masks.

    Args:
        num_classes: K.
        num_steps: T.
        schedule: abar schedule name (``linear`` | ``cosine``).
        encoding: ``analog_bits`` (C = ceil(log2 K) channels, at least 1) or ``embedding`` (C = embed_dim).
        scale: signal scale of the encoding (Bit Diffusion's scale factor; 1.0 = bits in {-1, 1}).
        embed_dim: channels of the random class embedding (``embedding`` only).
        seed: seed of the fixed random embedding, so every run with the same config sees the same codebook.
        dtype: dtype of the continuous maps (float32).

    Shapes: ``x0`` (B, H, W) long; ``x_t`` (B, C, H, W) float; ``t`` (B,) long in [1, T]; logits (B, K, H, W).
    """

    is_continuous = True
    mask_index = None

    def __init__(
        self,
        num_classes: int,
        num_steps: int,
        schedule: str = "linear",
        encoding: str = "analog_bits",
        scale: float = 1.0,
        embed_dim: int = 16,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; valid encodings: {', '.join(ENCODINGS)}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        abar = get_schedule(schedule, num_steps)
        self.num_classes = num_classes
        self.num_states = num_classes
        self.num_steps = num_steps
        self.schedule = schedule
        self.encoding = encoding
        self.scale = float(scale)
        self.dtype = dtype
        if encoding == "analog_bits":
            bits = max(1, math.ceil(math.log2(num_classes)))
            codes = (torch.arange(num_classes).unsqueeze(1) >> torch.arange(bits - 1, -1, -1)) & 1
            codebook = (codes.to(torch.float64) * 2 - 1) * scale
        else:
            if embed_dim < 1:
                raise ValueError(f"embed_dim must be >= 1, got {embed_dim!r}")
            gen = torch.Generator().manual_seed(seed)
            codebook = torch.randn(num_classes, embed_dim, generator=gen, dtype=torch.float64) * scale
        self.input_channels = codebook.shape[1]
        self.register_buffer("codebook", codebook, persistent=False)  # (K, C) float64
        self.register_buffer("abar", abar, persistent=False)  # (T + 1,) float64

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, num_steps={self.num_steps}, schedule={self.schedule!r}, "
            f"encoding={self.encoding!r}, channels={self.input_channels}, scale={self.scale}"
        )

    def _coef(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        abar = self.abar[t]
        return abar.sqrt().to(self.dtype).view(-1, 1, 1, 1), (1 - abar).sqrt().to(self.dtype).view(
            -1, 1, 1, 1
        )

    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        """Class indices (B, H, W) long -> encoded map (B, C, H, W) float."""
        check_labels(x0, self.num_classes, "x0")
        return self.codebook.to(self.dtype)[x0].permute(0, 3, 1, 2).contiguous()

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Encoded map (B, C, H, W) float -> class indices (B, H, W) long of the nearest code."""
        if not x.is_floating_point() or x.dim() != 4 or x.shape[1] != self.input_channels:
            raise ValueError(
                f"x must be (B, {self.input_channels}, H, W) float, got {tuple(x.shape)} {x.dtype}"
            )
        codebook = self.codebook.to(x.dtype)
        dist = (x.unsqueeze(1) - codebook.view(1, *codebook.shape, 1, 1)).pow(2).sum(dim=2)
        return dist.argmin(dim=1)

    def expected_x0(self, x0_logits: torch.Tensor) -> torch.Tensor:
        """Softmax over the K logits, then the expected code: (B, K, H, W) -> (B, C, H, W)."""
        if (
            not x0_logits.is_floating_point()
            or x0_logits.dim() != 4
            or x0_logits.shape[1] != self.num_classes
        ):
            raise ValueError(
                f"x0_logits must be (B, {self.num_classes}, H, W) float, got {tuple(x0_logits.shape)} "
                f"{x0_logits.dtype}"
            )
        probs = x0_logits.to(self.dtype).softmax(dim=1)
        return torch.einsum("bkhw,kc->bchw", probs, self.codebook.to(self.dtype))

    def q_sample(
        self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x_t = sqrt(abar_t) encode(x0) + sqrt(1 - abar_t) eps: (B, C, H, W) float."""
        x = self.encode(x0)
        check_times(t, x0.shape[0], self.num_steps)
        check_generator(generator, x.device)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        signal, sigma = self._coef(t)
        return signal * x + sigma * noise

    def prior_sample(
        self,
        shape: tuple[int, int, int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """x_T ~ N(0, I): (B, C, H, W) float (the abar_T signal, 9e-6 for the linear schedule, is dropped)."""
        if len(shape) != 3:
            raise ValueError(f"shape must be (B, H, W), got {tuple(shape)}")
        device = torch.device(device) if device is not None else self.abar.device
        check_generator(generator, device)
        b, h, w = shape
        return torch.randn(
            (b, self.input_channels, h, w), generator=generator, device=device, dtype=self.dtype
        )

    def ddim_step(
        self,
        x_t: torch.Tensor,
        x0_logits: torch.Tensor,
        t: torch.Tensor,
        s: torch.Tensor | int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) from level t to level s < t with x0 estimated from the logits.

        ``x_t`` (B, C, H, W) float; ``x0_logits`` (B, K, H, W); ``t`` (B,) long; ``s`` int or (B,) long in
        [0, t). Returns x_s (B, C, H, W); at s = 0 this is the expected encoding itself. ``generator`` is unused
        (eta = 0) and accepted so every step function has one signature.
        """
        if not x_t.is_floating_point() or x_t.dim() != 4 or x_t.shape[1] != self.input_channels:
            raise ValueError(f"x_t must be (B, {self.input_channels}, H, W) float, got {tuple(x_t.shape)}")
        check_times(t, x_t.shape[0], self.num_steps)
        if isinstance(s, int):
            s = torch.full_like(t, s)
        check_times(s, x_t.shape[0], self.num_steps, name="s", low=0)
        if bool((s >= t).any()):
            raise ValueError(f"s must be < t elementwise, got s={s.tolist()} and t={t.tolist()}")
        x0_hat = self.expected_x0(x0_logits)
        signal_t, sigma_t = self._coef(t)
        signal_s, sigma_s = self._coef(s)
        eps_hat = (x_t.to(self.dtype) - signal_t * x0_hat) / sigma_t
        return signal_s * x0_hat + sigma_s * eps_hat

    # The strict sampler's step from level t to s < t, the discrete kernels' contract: here a DDIM step.
    posterior_step = ddim_step
