"""MaskPriorRefiner: a frozen segmentor + a condition + the noisy-mask embedding + the UNet denoiser (DDPS).

Data flow (paper.md "Architecture"): image -> frozen segmentor -> (features, logits) at 1/4 resolution ->
condition (features | logits | one-hot of the base argmax) -> concatenated with the embedded noisy mask x_t ->
UNet -> x0 logits (B, K, h, w). The trainable part lives in ``refiner.denoiser`` only (class embedding + UNet,
whose last 1x1 conv, or the release head's, is the classifier), so EMA and checkpoints handle that submodule and
nothing else.

Time convention (diffseg.diffusion): t = 0 clean ... t = T pure noise; the denoiser sees t as given.
Training (``loss``): per sample t ~ U{1..T} (``single_step``: t = T, the release's stage 1); at t = T the input is
the kernel's prior sample, at t < T the forward noise is added to the *noise object*:
    ``gt``     the ground truth, nearest-downsampled to the 1/4 map; its ignore pixels take the base argmax there
               (the kernel needs a class everywhere; the loss still ignores them),
    ``base``   the frozen segmentor's argmax,
    ``first``  Diffusion-on-First-Prediction: the argmax of the denoiser's own prediction from the same prior
               sample at t = T, computed without gradient.
The loss is cross-entropy of the x0 logits, bilinearly upsampled to the ground truth's size, ignore index 255
(mmseg's convention). ``forward`` is ``loss`` so that DistributedDataParallel can wrap the refiner.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffseg.config import ExperimentConfig
from diffseg.diffusion import guided, kernel_from_config, sample
from diffseg.diffusion.generators import Generators, draw
from diffseg.models.denoiser import Denoiser, denoiser_in_channels
from diffseg.models.options import NOISE_OBJECTS
from diffseg.models.unet import UNet
from diffseg.segmentors.base import Segmentor, check_image

IGNORE_INDEX = 255


class MaskPriorRefiner(nn.Module):
    """Frozen segmentor + diffusion kernel + denoiser.

    Args:
        segmentor: a frozen :class:`~diffseg.segmentors.Segmentor` (``build_segmentor(..., frozen=True)``).
        kernel: a ``diffseg.diffusion`` kernel (discrete or Gaussian) over ``num_classes`` classes.
        unet: the denoiser network; ``in_channels`` must equal :func:`denoiser_in_channels`, ``out_channels`` K.
        num_classes: K.
        condition: ``features`` | ``logits`` | ``mask``.
        embed_dim: width of the noisy-mask class embedding (discrete kernels).
        embed_trainable: train the embedding (the release keeps it frozen at random init).
        release_time: the time embedding sees T - t (the release's index) instead of t; for its checkpoints.
    """

    def __init__(
        self,
        segmentor: Segmentor,
        kernel: Any,
        unet: UNet,
        num_classes: int,
        condition: str = "features",
        embed_dim: int = 16,
        embed_trainable: bool = False,
        release_time: bool = False,
    ) -> None:
        super().__init__()
        if not getattr(segmentor, "frozen", False):
            raise ValueError(
                f"segmentor {getattr(segmentor, 'name', type(segmentor).__name__)!r} is not frozen; build it with "
                f"frozen=True or call .freeze() after training it (the refiner never trains its base)"
            )
        if segmentor.num_classes != num_classes or kernel.num_classes != num_classes:
            raise ValueError(
                f"num_classes={num_classes} but the segmentor has {segmentor.num_classes} classes and the kernel "
                f"{kernel.num_classes}; all three must agree"
            )
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
        expected_in = denoiser_in_channels(segmentor, kernel, condition, embed_dim)
        if unet.in_channels != expected_in or unet.out_channels != num_classes:
            raise ValueError(
                f"UNet has in_channels={unet.in_channels}, out_channels={unet.out_channels}; expected "
                f"in_channels={expected_in} (x_t + {condition} condition) and out_channels={num_classes}"
            )
        self.segmentor = segmentor
        # Kernels hold only non-persistent buffers: registering them moves them with .to(device) and adds
        # nothing to a state dict.
        self.kernel = kernel
        self.num_classes = num_classes
        self.condition = condition
        self.denoiser = Denoiser(
            unet,
            kernel.num_states,
            embed_dim,
            embed_trainable,
            kernel.input_channels if kernel.is_continuous else None,
            time_from=kernel.num_steps if release_time else None,
        )

    # ----------------------------------------------------------------------------------------------------------
    # pieces

    def base_outputs(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen segmentor's ``(features (B, C, h, w), logits (B, K, h, w))`` for ``image`` (B, 3, H, W).

        Under ``no_grad`` (not inference mode: the outputs feed a graph that is differentiated in training).
        """
        check_image(image)
        with torch.no_grad():
            return self.segmentor(image)

    def make_condition(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The condition map (B, Cc, h, w) for this refiner's ``condition`` mode."""
        if self.condition == "features":
            return features
        if self.condition == "logits":
            return logits
        onehot = F.one_hot(logits.argmax(dim=1), self.num_classes).permute(0, 3, 1, 2)
        return onehot.to(logits.dtype)

    def denoise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor | int,
        cond: torch.Tensor,
        cond_projection: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x0 logits (B, K, h, w) from ``x_t`` (B, h, w) long (or (B, C, h, w) float), ``t`` (B,), ``cond``.

        Guidance evaluates it a second time with ``torch.zeros_like(cond)`` (the null condition). Loops over steps
        pass ``cond_projection = self.denoiser.project_condition(cond)``, computed once (same result, fewer FLOPs).
        """
        return self.denoiser(x_t, t, cond, cond_projection)

    def _check_base(self, base: Any, batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(base, tuple | list) or len(base) != 2:
            raise ValueError("base must be a (features, logits) pair from base_outputs()")
        features, logits = base
        batch = logits.shape[0] if batch is None else batch
        if logits.ndim != 4 or logits.shape[:2] != (batch, self.num_classes):
            raise ValueError(
                f"base logits must be ({batch}, {self.num_classes}, h, w), got {tuple(logits.shape)}"
            )
        if features.ndim != 4 or features.shape[0] != batch or features.shape[-2:] != logits.shape[-2:]:
            raise ValueError(
                f"base features {tuple(features.shape)} do not match the logits {tuple(logits.shape)} "
                f"(batch and h, w)"
            )
        return features, logits

    def _check_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        for key in ("image", "mask"):
            if key not in batch:
                raise ValueError(
                    f"batch has no '{key}'; expected keys image (B, 3, H, W) float, mask (B, H, W) long"
                )
        image, mask = batch["image"], batch["mask"]
        check_image(image)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.long:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"batch['mask'] must be a (B, H, W) long tensor, got {got}")
        if mask.shape != (image.shape[0], *image.shape[-2:]):
            raise ValueError(
                f"batch['mask'] has shape {tuple(mask.shape)}, expected {(image.shape[0], *image.shape[-2:])} "
                f"to match the image"
            )
        bad = ((mask >= self.num_classes) & (mask != IGNORE_INDEX)) | (mask < 0)
        if bool(bad.any()):
            values = torch.unique(mask[bad])[:5].tolist()
            raise ValueError(
                f"batch['mask'] holds values {values} outside [0, {self.num_classes}) and the ignore index "
                f"{IGNORE_INDEX}"
            )
        return image, mask

    def _noise_object(
        self,
        noise_object: str,
        mask: torch.Tensor,
        logits: torch.Tensor,
        x_T: torch.Tensor,
        cond: torch.Tensor,
    ) -> torch.Tensor:
        """The (B, h, w) long map the forward noise is applied to."""
        if noise_object == "base":
            return logits.argmax(dim=1)
        if noise_object == "gt":
            # nearest-exact samples each 4x4 cell near its centre rather than at its top-left pixel
            small = F.interpolate(mask[:, None].float(), size=logits.shape[-2:], mode="nearest-exact")[
                :, 0
            ].long()
            return torch.where(small == IGNORE_INDEX, logits.argmax(dim=1), small)
        t_T = torch.full((x_T.shape[0],), self.kernel.num_steps, dtype=torch.long, device=logits.device)
        with torch.no_grad():
            return self.denoise(x_T, t_T, cond).argmax(dim=1)

    # ----------------------------------------------------------------------------------------------------------
    # training

    def loss(
        self,
        batch: dict[str, torch.Tensor],
        noise_object: str = "first",
        single_step: bool = False,
        generator: Generators = None,
        base: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training loss of one batch.

        Args:
            batch: ``image`` (B, 3, H, W) float, ``mask`` (B, H, W) long in [0, K) or 255 (ignore).
            noise_object: ``gt`` | ``base`` | ``first`` (DFP), see the module docstring.
            single_step: t = T for every sample (stage 1: a decoder from a random mask).
            generator: RNG on the model's device for t, the prior sample and the forward noise; or one per item
                (B of them): item i's draws then depend on its own generator only, so items keyed by their
                position in the global batch draw the same under any number of processes.
            base: precomputed ``base_outputs(image)``, to run the frozen segmentor once per batch.

        Returns:
            dict(loss: scalar float with grad, the mean over valid pixels; ce_sum: its numerator; valid: its
            denominator (long, before clamping at 1); t: (B,) the drawn steps).
        """
        if noise_object not in NOISE_OBJECTS:
            raise ValueError(f"unknown noise_object {noise_object!r}; valid: {', '.join(NOISE_OBJECTS)}")
        image, mask = self._check_batch(batch)
        b = image.shape[0]
        features, logits = self._check_base(base, b) if base is not None else self.base_outputs(image)
        cond = self.make_condition(features, logits)
        h, w = logits.shape[-2:]
        T = self.kernel.num_steps
        device = logits.device

        if single_step:
            t = torch.full((b,), T, dtype=torch.long, device=device)
        else:
            t = draw(generator, b, lambda n, g, _: torch.randint(1, T + 1, (n,), generator=g, device=device))
        x_T = draw(
            generator, b, lambda n, g, _: self.kernel.prior_sample((n, h, w), generator=g, device=device)
        )
        if single_step:
            x_t = x_T
        else:
            obj = self._noise_object(noise_object, mask, logits, x_T, cond)
            x_t = draw(generator, b, lambda _, g, i: self.kernel.q_sample(obj[i], t[i], g))
            at_T = (t == T).view(-1, *([1] * (x_t.ndim - 1)))
            x_t = torch.where(at_T, x_T, x_t)

        pred = self.denoise(x_t, t, cond)
        up = F.interpolate(pred.float(), size=mask.shape[-2:], mode="bilinear", align_corners=False)
        # sum / count instead of the mean: a batch with every pixel ignored gives 0, not NaN, without a host sync
        if up.is_contiguous():
            ce = F.cross_entropy(up, mask, ignore_index=IGNORE_INDEX, reduction="sum")
        else:
            # The UNet's output is channels-last strided when its input is (SegFormer's features, the embedding's
            # permute); cross-entropy over dim 1 would first copy the whole upsampled map to NCHW (a third of the
            # loss's time on CPU), while its (pixels, K) rows are already contiguous. Same sum.
            rows = up.permute(0, 2, 3, 1).reshape(-1, up.shape[1])
            ce = F.cross_entropy(rows, mask.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
        valid = (mask != IGNORE_INDEX).sum()
        return {"loss": ce / valid.clamp_min(1), "ce_sum": ce, "valid": valid, "t": t}

    def forward(self, batch: dict[str, torch.Tensor], **kwargs: Any) -> dict[str, torch.Tensor]:
        """Same as :meth:`loss` (so DistributedDataParallel can wrap the refiner)."""
        return self.loss(batch, **kwargs)

    # ----------------------------------------------------------------------------------------------------------
    # inference

    def refine(
        self,
        image: torch.Tensor | None = None,
        base: tuple[torch.Tensor, torch.Tensor] | None = None,
        sampler: str = "free_renoise",
        steps: int | list[int] = 10,
        generator: Generators = None,
        guidance: float = 0.0,
        collect: str = "all",
    ) -> list[tuple[int, torch.Tensor]]:
        """Refine the base prediction: ``[(t, x0 logits (B, K, h, w)), ...]`` per collected network evaluation.

        Args:
            image: (B, 3, H, W) float; or ``base``: precomputed ``(features, logits)``. Exactly one of the two.
            sampler: ``free_renoise`` (the paper's FR) | ``strict`` | ``strict_release`` | ``single_step``.
            steps: number of network evaluations (spread evenly from T down) or an explicit decreasing grid.
            generator: RNG on the model's device, or one per image (B of them, see ``diffseg.diffusion.generators``);
                the same generator state gives the same result.
            guidance: w of ``(1 + w) * cond - w * uncond`` with a zeroed condition; 0 = no guidance.
            collect: ``all`` (every evaluation) or ``last``.

        The frozen segmentor runs once; its outputs are reused at every step. Runs under inference mode.
        """
        if (image is None) == (base is None):
            raise ValueError("refine() needs exactly one of image (B, 3, H, W) or base (features, logits)")
        with torch.inference_mode():
            if base is None:
                features, logits = self.base_outputs(image)
            else:
                features, logits = self._check_base(base)
            cond = self.make_condition(features, logits)
            # The condition's share of the first conv is the same at every step: project it once.
            cond_projection = self.denoiser.project_condition(cond)

            def cond_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return self.denoise(x_t, t, cond, cond_projection)

            denoise_fn = cond_fn
            if guidance != 0.0:
                null = torch.zeros_like(cond)
                null_projection = self.denoiser.project_condition(null)

                def uncond_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                    return self.denoise(x_t, t, null, null_projection)

                denoise_fn = guided(cond_fn, uncond_fn, guidance)
            b, _, h, w = logits.shape
            return sample(
                denoise_fn,
                self.kernel,
                (b, h, w),
                steps,
                sampler=sampler,
                generator=generator,
                device=logits.device,
                collect=collect,
            )


def build_refiner(cfg: ExperimentConfig, segmentor: Segmentor) -> MaskPriorRefiner:
    """The refiner of an experiment config: kernel from ``cfg.diffusion``, UNet from ``cfg.unet``, the rest from
    ``cfg.refiner``; K is the segmentor's ``num_classes``."""
    k = segmentor.num_classes
    kernel = kernel_from_config(cfg.diffusion, k)
    r = cfg.refiner
    unet = UNet(
        in_channels=denoiser_in_channels(segmentor, kernel, r.condition, r.embed_dim),
        out_channels=k,
        width=cfg.unet.width,
        dim_mults=tuple(cfg.unet.dim_mults),
        attention=cfg.unet.attention,
        groups=cfg.unet.groups,
        weight_standardized=cfg.unet.weight_standardized,
        attention_scale_v=cfg.unet.attention_scale_v,
        head_channels=cfg.unet.head_channels,
        head_dropout=cfg.unet.head_dropout,
        blocks=cfg.unet.blocks,
        attention_head_channels=cfg.unet.attention_head_channels,
    )
    return MaskPriorRefiner(
        segmentor,
        kernel,
        unet,
        k,
        condition=r.condition,
        embed_dim=r.embed_dim,
        embed_trainable=r.embed_trainable,
        release_time=r.release_time,
    )
