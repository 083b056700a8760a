"""Refinement for users: ``refine`` on tensors (bring your own segmentor's logits) and ``refine_folder`` on files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@torch.inference_mode()
def refine(
    images: torch.Tensor | None = None,
    refiner: nn.Module | None = None,
    base_logits: torch.Tensor | None = None,
    steps: int = 10,
    sampler: str = "free_renoise",
    generator: torch.Generator | None = None,
    guidance: float = 0.0,
) -> torch.Tensor:
    """Refined label maps from images, or from your own segmentor's logits.

    images: (B,3,H,W) float, normalised as the refiner's segmentor expects; or
    base_logits: (B,K,h,w) float logits of any segmentor at 1/4 of the input resolution (a refiner trained with
    ``refiner.condition`` "logits" or "mask"; a "features" refiner needs the features of its own segmentor).
    Returns (B,h,w) long: the argmax of the last collected step at 1/4 resolution (upsample as you need).
    """
    if refiner is None:
        raise ValueError("refine() needs a trained refiner (see diffseg.engines.load_refiner_from_run)")
    if (images is None) == (base_logits is None):
        raise ValueError("give exactly one of images or base_logits")
    if base_logits is not None:
        condition = getattr(refiner, "condition", "features")
        if condition == "features":
            raise ValueError(
                "this refiner is conditioned on segmentor features; pass images (its own segmentor runs), or use a "
                "refiner trained with refiner.condition=logits or mask for outside logits"
            )
        if base_logits.ndim != 4 or base_logits.shape[1] != refiner.num_classes:
            raise ValueError(
                f"base_logits must be (B,{refiner.num_classes},h,w), got {tuple(base_logits.shape)}"
            )
        # The condition is built from the logits alone; they also stand in for the unused features slot.
        out = refiner.refine(
            base=(base_logits, base_logits),
            sampler=sampler,
            steps=steps,
            generator=generator,
            guidance=guidance,
        )
    else:
        out = refiner.refine(
            image=images, sampler=sampler, steps=steps, generator=generator, guidance=guidance
        )
    return out[-1][1].argmax(1)


def _palette(dataset: str, num_classes: int) -> np.ndarray:
    """The dataset's palette (ADE20K's 151-class mode prepends "other")."""
    from diffseg.data import ADE20K_PALETTE, CITYSCAPES_PALETTE

    pal = np.asarray(ADE20K_PALETTE if dataset == "ade20k" else CITYSCAPES_PALETTE, dtype=np.uint8)
    if len(pal) < num_classes:
        pal = np.concatenate([np.zeros((num_classes - len(pal), 3), dtype=np.uint8), pal])
    return pal


def refine_folder(
    refiner_path: str | Path,
    input_path: str | Path,
    out_dir: str | Path,
    segmentor: str | None = None,
    weights: str | None = None,
    steps: int | None = None,
    device: str = "auto",
) -> list[Path]:
    """Refine every image under ``input_path`` with the run at ``refiner_path``; write label PNGs and overlays."""
    from PIL import Image
    from tqdm.auto import tqdm

    from diffseg.config import replace
    from diffseg.data.transforms import MEAN, STD
    from diffseg.engines import load_refiner_from_run, predict, resolve_device

    refiner_path = Path(refiner_path)
    run_dir = refiner_path.parent.parent if refiner_path.is_file() else refiner_path
    cfg, refiner, seg = load_refiner_from_run(run_dir, resolve_device(device))
    if segmentor is not None and segmentor != cfg.segmentor.name:
        raise ValueError(
            f"--segmentor {segmentor} does not match the refiner's segmentor {cfg.segmentor.name} "
            f"(a refiner is trained on one segmentor's features)"
        )
    if weights is not None:
        from diffseg.segmentors import build_segmentor

        seg = build_segmentor(cfg.segmentor.name, refiner.num_classes, weights=weights, frozen=True)
        seg = seg.to(next(refiner.parameters()).device)
        refiner.segmentor = seg
    if steps is not None:
        cfg = replace(cfg, eval=replace(cfg.eval, num_evals=steps))
    input_path = Path(input_path)
    if not input_path.exists():
        raise FileNotFoundError(f"input {input_path} does not exist")
    files = (
        [input_path]
        if input_path.is_file()
        else sorted(p for p in input_path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    )
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {input_path}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = next(refiner.parameters()).device
    mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
    palette = _palette(cfg.data.dataset, refiner.num_classes)
    written = []
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    for path in tqdm(files, desc="refine", unit="img"):
        try:
            pil = Image.open(path).convert("RGB")
        except OSError as e:
            raise ValueError(f"cannot read image {path}: {e}") from e
        rgb = np.array(pil)  # a writable copy for torch
        h0, w0 = rgb.shape[:2]
        x = torch.from_numpy(rgb).to(dev).permute(2, 0, 1)[None].float() / 255.0
        long_side, short_side = max(cfg.data.test_scale), min(cfg.data.test_scale)
        scale = min(long_side / max(h0, w0), short_side / min(h0, w0))
        h, w = max(1, round(h0 * scale)), max(1, round(w0 * scale))
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        x = (x - mean) / std
        batch = {"image": x, "valid_hw": torch.tensor([[h, w]]), "mask": torch.zeros((1, h0, w0), device=dev)}
        _, steps_out = predict(refiner, seg, batch, cfg, gen)
        label = steps_out[-1][1].argmax(1)[0].to(torch.uint8).cpu().numpy()
        Image.fromarray(label).save(out_dir / f"{path.stem}.png")
        overlay = (0.5 * rgb + 0.5 * palette[label]).astype(np.uint8)
        Image.fromarray(overlay).save(out_dir / f"{path.stem}_overlay.png")
        written.append(out_dir / f"{path.stem}.png")
    return written
