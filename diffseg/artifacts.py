"""Arrays for the figure notebooks (qualitative grids, denoising trajectories, samples of the mask prior).

Computed once per run by the experiments and kept in the results store, so notebooks never read checkpoints.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from diffseg.config import ExperimentConfig
from diffseg.data.transforms import pad_to_multiple
from diffseg.diffusion.samplers import STEP_GRIDS, get_sampler
from diffseg.prediction import resize_bilinear, to_input_size


def _to_uint8_image(image: torch.Tensor) -> np.ndarray:
    from diffseg.data import denormalize

    x = denormalize(image.cpu()).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


@torch.inference_mode()
def trace(
    refiner: nn.Module,
    cond: torch.Tensor,
    shape: tuple[int, int, int],
    grid: list[int],
    sampler: str,
    generator: torch.Generator,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The sampler's loop, keeping its inputs: (x_t per step (B,h,w), x0 logits per step (B,K,h,w)).

    Consumes the sampler's own loop (``Sampler.steps``), so the trajectory is exactly what ``refine`` computes.
    """
    x_T = refiner.kernel.prior_sample(shape, generator=generator, device=cond.device)
    cond_projection = refiner.denoiser.project_condition(cond)  # as refine() does

    def denoise_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return refiner.denoise(x_t, t, cond, cond_projection)

    xs, logits_all = [], []
    for _, x_t, logits in get_sampler(sampler).steps(denoise_fn, refiner.kernel, x_T, grid, generator):
        xs.append(x_t)
        logits_all.append(logits)
    return xs, logits_all


def _as_labels(x: torch.Tensor, refiner: nn.Module) -> torch.Tensor:
    """A continuous x_t shown as the nearest class code's label; a discrete one as is ([MASK] = num_classes)."""
    if x.is_floating_point():
        decode = getattr(refiner.kernel, "decode", None)
        return decode(x) if decode is not None else x.argmax(1)
    return x


@torch.inference_mode()
def make_artifacts(
    refiner: nn.Module,
    segmentor: nn.Module,
    cfg: ExperimentConfig,
    dataset: Dataset,
    device: torch.device,
    num_images: int = 6,
    num_prior_samples: int = 6,
) -> dict[str, Any]:
    """Predictions, trajectories and mask-prior samples for the first ``num_images`` validation images.

    Keys (uint8 label maps, 255 = ignore; 1/4-resolution maps are h, w):
    image (N,H,W,3), gt (N,H,W), base (N,H,W), refined_steps (S,N,H,W), t_steps (S,), x_t_steps (S,N,h,w),
    prior_gt (N,h,w), prior_levels (L,), prior_noised (L,N,h,w), prior_denoised (L,N,h,w), prior_samples (M,h,w).
    """
    from diffseg.data import collate

    refiner.eval()
    n = min(num_images, len(dataset))
    batch = collate([dataset[i] for i in range(n)])
    image = batch["image"].to(device)
    gt = batch["mask"]
    if "valid_hw" in batch:
        vh, vw = (int(v) for v in batch["valid_hw"][0])
        image = image[..., :vh, :vw]
    h0, w0 = gt.shape[-2:]
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 123)
    padded = pad_to_multiple(image)
    features, logits = refiner.base_outputs(padded)
    cond = refiner.make_condition(features, logits)
    h, w = logits.shape[-2:]
    vh4, vw4 = -(-image.shape[-2] // 4), -(-image.shape[-1] // 4)

    def to_full(lg: torch.Tensor) -> np.ndarray:  # as the evaluator brings logits back (diffseg.prediction)
        up = resize_bilinear(to_input_size(lg, padded.shape[-2:], image.shape[-2:]), (h0, w0))
        return up.argmax(1).to(torch.uint8).cpu().numpy()

    T = refiner.kernel.num_steps
    grid = STEP_GRIDS[cfg.eval.grid](T, min(cfg.eval.num_evals, T))  # the run's grid, even for single step
    sampler = cfg.eval.sampler if cfg.eval.sampler != "single_step" else "free_renoise"
    xs, step_logits = trace(refiner, cond, (n, h, w), grid, sampler, gen)
    out: dict[str, Any] = {
        "image": np.stack([_to_uint8_image(image[i : i + 1])[0] for i in range(n)]),
        "gt": gt.to(torch.uint8).numpy() if gt.max() <= 255 else gt.clamp(max=255).to(torch.uint8).numpy(),
        "base": to_full(logits),
        "refined_steps": np.stack([to_full(lg) for lg in step_logits]),
        "t_steps": np.asarray(grid, dtype=np.int64),
        "x_t_steps": np.stack(
            [_as_labels(x, refiner)[..., :vh4, :vw4].to(torch.int16).cpu().numpy() for x in xs]
        ),
    }

    # The mask prior: ground truth at 1/4 resolution, noised to several levels and denoised in one step.
    small = F.interpolate(gt[:, None].float(), size=(h, w), mode="nearest-exact")[:, 0].long().to(device)
    small = torch.where(small == 255, logits.argmax(1), small)
    T = refiner.kernel.num_steps
    levels = sorted({max(1, round(f * T)) for f in (0.1, 0.3, 0.5, 0.7, 0.9)})
    noised, denoised = [], []
    for t in levels:
        t_vec = torch.full((n,), t, dtype=torch.long, device=device)
        x_t = refiner.kernel.q_sample(small, t_vec, gen)
        noised.append(_as_labels(x_t, refiner)[..., :vh4, :vw4].to(torch.int16).cpu().numpy())
        denoised.append(
            refiner.denoise(x_t, t_vec, cond).argmax(1)[..., :vh4, :vw4].to(torch.int16).cpu().numpy()
        )
    out["prior_gt"] = small[..., :vh4, :vw4].to(torch.int16).cpu().numpy()
    out["prior_levels"] = np.asarray(levels, dtype=np.int64)
    out["prior_noised"] = np.stack(noised)
    out["prior_denoised"] = np.stack(denoised)

    # Samples from pure noise with the condition zeroed: what the denoiser produces with no image evidence.
    m = num_prior_samples
    null = torch.zeros((m, *cond.shape[1:]), device=device, dtype=cond.dtype)
    _, sample_logits = trace(refiner, null, (m, h, w), grid, "free_renoise", gen)
    out["prior_samples"] = sample_logits[-1].argmax(1)[..., :vh4, :vw4].to(torch.int16).cpu().numpy()
    return out
