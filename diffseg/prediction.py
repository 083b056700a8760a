"""Prediction of base and refiner at the masks' resolution: whole image, sliding window, multi-scale + flip.

The one owner of how a test image reaches the networks (padding to 32, windows, scales, flips) and how their 1/4
resolution logits come back (bilinear to the padded input, cropped to the valid region, resized to the mask).
The evaluator (``diffseg.engines.evaluation``), ``diffseg refine`` and the artifacts all call it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffseg.config import ExperimentConfig
from diffseg.data.transforms import pad_to_multiple
from diffseg.diffusion import STEP_GRIDS
from diffseg.diffusion.generators import Generators


def to_input_size(
    logits: torch.Tensor, padded_hw: tuple[int, int] | torch.Size, valid_hw: tuple[int, int]
) -> torch.Tensor:
    """(B, K, h, w) logits of a padded input -> (B, K, H, W) on the input's valid (unpadded) pixels."""
    return resize_bilinear(logits.float(), padded_hw)[..., : valid_hw[0], : valid_hw[1]]


def _windows(
    h: int, w: int, crop: tuple[int, int], stride: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    ch, cw = min(crop[0], h), min(crop[1], w)
    rows = max(1, math.ceil((h - ch) / stride[0]) + 1)
    cols = max(1, math.ceil((w - cw) / stride[1]) + 1)
    out = []
    for r in range(rows):
        for c in range(cols):
            y0 = min(r * stride[0], h - ch)
            x0 = min(c * stride[1], w - cw)
            out.append((y0, x0, ch, cw))
    return out


STEP_SELECTIONS = ("all", "last", "ends")


def _select_steps(steps: list[Any], which: str) -> list[Any]:
    """The collected steps an evaluation keeps: every one, the final one, or the first and the final one."""
    if which == "all" or len(steps) <= 1:
        return steps
    if which == "last":
        return steps[-1:]
    if which == "ends":
        return [steps[0], steps[-1]]
    raise ValueError(f"steps must be one of {', '.join(STEP_SELECTIONS)}, got '{which}'")


def resize_bilinear(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize (align_corners=False) that skips the identity: at equal size it returns ``x`` itself,
    which is what the interpolation computes there (source index = destination index), without the cost."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _forward_full(
    refiner: nn.Module | None,
    segmentor: nn.Module,
    image: torch.Tensor,
    cfg: ExperimentConfig,
    generator: Generators,
    which: str = "all",
) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
    """Base logits and refined logits per collected step, at the image's resolution.

    image: (B,3,H,W) float. Returns base (B,K,H,W) and [(t, (B,K,H,W))] for the steps ``which`` selects
    (`_select_steps`; only those are upsampled). Whole-image or sliding-window.
    """
    ev = cfg.eval
    h, w = image.shape[-2:]

    def infer(crop: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
        ch, cw = crop.shape[-2:]
        padded = pad_to_multiple(crop)
        if refiner is None:
            base_logits = segmentor(padded)[1]
            steps: list[tuple[int, torch.Tensor]] = []
        else:
            base = refiner.base_outputs(padded)
            base_logits = base[1]
            steps = refiner.refine(
                base=base,
                sampler=ev.sampler,
                steps=step_grid(cfg),
                generator=generator,
                guidance=ev.guidance,
            )
            steps = _select_steps(steps, which)

        def up(x: torch.Tensor) -> torch.Tensor:
            return to_input_size(x, padded.shape[-2:], (ch, cw))

        return up(base_logits), [(t, up(lg)) for t, lg in steps]

    if ev.mode == "whole":
        return infer(image)
    if ev.mode != "slide":
        raise ValueError(f"eval.mode must be 'whole' or 'slide', got '{ev.mode}'")
    base_sum: torch.Tensor | None = None
    step_sums: list[list[Any]] = []
    count = torch.zeros((1, 1, h, w), device=image.device)
    for y0, x0, ch, cw in _windows(h, w, ev.slide_crop, ev.slide_stride):
        b, steps = infer(image[..., y0 : y0 + ch, x0 : x0 + cw])
        if base_sum is None:
            base_sum = image.new_zeros((image.shape[0], b.shape[1], h, w))
            step_sums = [[t, image.new_zeros((image.shape[0], b.shape[1], h, w))] for t, _ in steps]
        base_sum[..., y0 : y0 + ch, x0 : x0 + cw] += b
        for acc, (_, lg) in zip(step_sums, steps):
            acc[1][..., y0 : y0 + ch, x0 : x0 + cw] += lg
        count[..., y0 : y0 + ch, x0 : x0 + cw] += 1
    assert base_sum is not None
    return base_sum / count, [(t, s / count) for t, s in step_sums]


def step_grid(cfg: ExperimentConfig) -> list[int]:
    """The levels an evaluation visits: ``eval.grid``'s rule for ``eval.num_evals`` (capped at T); [T] for the
    single-step sampler."""
    T = cfg.diffusion.num_steps
    if cfg.eval.sampler == "single_step":
        return [T]
    return STEP_GRIDS[cfg.eval.grid](T, min(cfg.eval.num_evals, T))


@torch.inference_mode()
def predict(
    refiner: nn.Module | None,
    segmentor: nn.Module,
    batch: dict[str, Any],
    cfg: ExperimentConfig,
    generator: Generators = None,
    multi_scale: bool = False,
    steps: str = "all",
) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
    """Predictions of base and refiner for a test batch, at the masks' (original) resolution.

    ``steps`` selects the collected steps returned (`STEP_SELECTIONS`; multi-scale always keeps the last only).

    batch: image (B,3,Hp,Wp) padded test image, valid_hw (B,2) its unpadded size, mask (B,H0,W0).
    Returns base scores (B,K,H0,W0) and [(t, scores (B,K,H0,W0))] for every collected step (single-scale: logits;
    multi-scale + flip: softmax probabilities averaged over the augmentations, final step only).
    """
    image = batch["image"]
    out_hw = batch["mask"].shape[-2:]
    valid = batch.get("valid_hw")
    if valid is not None:
        if bool((valid != valid[0]).any()):
            raise ValueError("a test batch mixes image sizes; use eval.batch_size=1 for this dataset")
        vh, vw = (int(v) for v in valid[0])
        image = image[..., :vh, :vw]
    scales = cfg.eval.scales if multi_scale else (1.0,)
    flips = (False, True) if (multi_scale and cfg.eval.flip) else (False,)

    def to_out(x: torch.Tensor, flipped: bool) -> torch.Tensor:
        x = resize_bilinear(x, out_hw)
        return x.flip(-1) if flipped else x

    base_acc: torch.Tensor | None = None
    step_acc: list[list[Any]] = []
    for s in scales:
        scaled = (
            image if s == 1.0 else F.interpolate(image, scale_factor=s, mode="bilinear", align_corners=False)
        )
        for flipped in flips:
            inp = scaled.flip(-1) if flipped else scaled
            base, collected = _forward_full(
                refiner, segmentor, inp, cfg, generator, which="last" if multi_scale else steps
            )
            if not multi_scale:
                return to_out(base, False), [(t, to_out(lg, False)) for t, lg in collected]
            b = to_out(base, flipped).softmax(1)
            base_acc = b if base_acc is None else base_acc + b
            if not step_acc:
                step_acc = [[t, torch.zeros_like(b)] for t, _ in collected]
            for acc, (_, lg) in zip(step_acc, collected):
                acc[1] += to_out(lg, flipped).softmax(1)
    n = len(scales) * len(flips)
    assert base_acc is not None
    return base_acc / n, [(t, a / n) for t, a in step_acc]
