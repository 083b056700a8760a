"""Refinement for users: ``refine`` on tensors (bring your own segmentor's logits) and ``refine_folder`` on files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
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


@dataclass
class RefineReport:
    """What `refine_folder` did: the label maps it wrote and the inputs it skipped, each with the reason."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _output_plan(input_path: Path, out_dir: Path) -> list[tuple[Path, Path, Path]]:
    """(image, label map, overlay) paths; the output tree mirrors the input tree (``sub/x.jpg`` -> ``sub/x.png``).

    Raises before anything is written when the outputs would land on or inside the input, or when two inputs
    would write the same file (``x.jpg`` and ``x.png``).
    """
    if not input_path.exists():
        raise FileNotFoundError(f"input {input_path} does not exist")
    src, out = input_path.resolve(), out_dir.resolve()
    if input_path.is_dir():
        if out == src or out.is_relative_to(src):
            raise ValueError(
                f"--out {out_dir} is the input folder or inside it; refined masks would be mixed with (or written "
                f"over) the inputs. Choose a folder outside {input_path}"
            )
        files = sorted(p for p in input_path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        rel = [p.relative_to(input_path) for p in files]
    else:
        files, rel = [input_path], [Path(input_path.name)]
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {input_path}")
    plan, owner = [], {}
    inputs = {f.resolve() for f in files}
    for f, r in zip(files, rel):
        label = out_dir / r.with_suffix(".png")
        overlay = out_dir / r.parent / f"{r.stem}_overlay.png"
        for target in (label, overlay):
            if target.resolve() in inputs:
                raise ValueError(f"refine would write {target} over an input image; choose another --out")
            if target in owner:
                raise ValueError(
                    f"{owner[target]} and {f} would both write {target}; rename one of them (outputs are named "
                    f"after the input's stem)"
                )
            owner[target] = f
        plan.append((f, label, overlay))
    return plan


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    from diffseg.atomic import atomic_write

    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def refine_folder(
    refiner_path: str | Path,
    input_path: str | Path,
    out_dir: str | Path,
    segmentor: str | None = None,
    weights: str | None = None,
    steps: int | None = None,
    device: str = "auto",
) -> RefineReport:
    """Refine every image under ``input_path`` with the run at ``refiner_path``; write label PNGs and overlays.

    Outputs mirror the input tree under ``out_dir`` and are written atomically; the whole plan is checked first
    (never over or inside the input, no two inputs onto one output). An unreadable image is skipped with one line
    on stderr and reported in the returned `RefineReport`; the rest are still refined. Each image goes through the
    evaluator's test transform (keep-ratio resize with its rounding, then normalisation), so a refined mask here
    equals the evaluator's prediction for the same image.
    """
    import sys

    from PIL import Image
    from tqdm.auto import tqdm

    from diffseg.config import replace
    from diffseg.data.transforms import keep_ratio_size, normalize, resize_image
    from diffseg.engines import load_refiner_from_run, resolve_device
    from diffseg.prediction import predict

    plan = _output_plan(Path(input_path), Path(out_dir))  # every check before any model is loaded
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
    dev = next(refiner.parameters()).device
    palette = _palette(cfg.data.dataset, refiner.num_classes)
    report = RefineReport()
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    for path, label_path, overlay_path in tqdm(plan, desc="refine", unit="img"):
        try:
            with Image.open(path) as pil:
                rgb = np.array(pil.convert("RGB"))  # a writable copy for torch
        except OSError as e:
            print(f"skipped {path}: unreadable image ({e})", file=sys.stderr)
            report.skipped.append((path, str(e)))
            continue
        h0, w0 = rgb.shape[:2]
        x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
        h, w = keep_ratio_size(h0, w0, cfg.data.test_scale)
        x = normalize(resize_image(x, (h, w)))[None].to(dev)
        batch = {"image": x, "valid_hw": torch.tensor([[h, w]]), "mask": torch.zeros((1, h0, w0), device=dev)}
        _, steps_out = predict(refiner, seg, batch, cfg, gen)
        label = steps_out[-1][1].argmax(1)[0].to(torch.uint8).cpu().numpy()
        _save_png(label, label_path)
        _save_png((0.5 * rgb + 0.5 * palette[label]).astype(np.uint8), overlay_path)
        report.written.append(label_path)
    return report
