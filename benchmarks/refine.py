"""Per-image inference latency: the base segmentor alone vs base + refiner, per sampler and number of steps.

    .venv/bin/python benchmarks/refine.py [--device cuda] [--segmentor segformer-b0 --width 128 --size 512 512]
    .venv/bin/python benchmarks/refine.py --device cpu --quick      # ~2 minutes on a loaded 2-core CPU

``refine`` runs the frozen segmentor once and reuses its outputs at every denoiser evaluation, so a row costs
base + steps x one denoiser evaluation (+ the sampler's noise). Samplers: ``strict`` (ancestral), ``strict_release``
(the release's strict step), ``free_renoise`` (the paper's FR) and ``single_step`` (one evaluation, listed once). Steps default to 1, 2, 5, 10, 20, 100 with
T = 100; ``--quick`` keeps single step and 2-step FR, the figures of the target "within 3x the base segmentor".
Random weights: latency does not depend on them. Ratios are against the base measured in the same process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from diffseg.benchmarking import (  # noqa: E402
    as_device,
    base_latency,
    bench_refiner,
    flops_of,
    refine_latency,
    time_fn,
)
from diffseg.diffusion import SAMPLERS  # noqa: E402

TARGET_RATIO = 3.0  # the target for single step and 2-step FR, relative to the base segmentor


def plan(samplers: list[str], steps: list[int], num_steps: int, quick: bool) -> list[tuple[str, int]]:
    """(sampler, steps) rows; single step once at 1 step; steps above T dropped."""
    if quick:
        return [("single_step", 1), ("free_renoise", min(2, num_steps))]
    rows = []
    for sampler in samplers:
        for s in [1] if sampler == "single_step" else steps:
            if s <= num_steps:
                rows.append((sampler, s))
    return rows


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--segmentor", default="segformer-b0")
    p.add_argument("--width", type=int, default=128, help="UNet width")
    p.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"), help="image size")
    p.add_argument("--classes", type=int, default=150)
    p.add_argument("--num-steps", type=int, default=100, help="diffusion steps T")
    p.add_argument("--batch", type=int, default=1, help="images per call (latency is reported per image)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per row (default: 10 CUDA, 5 CPU)")
    p.add_argument("--samplers", nargs="+", choices=tuple(SAMPLERS), default=list(SAMPLERS))
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10, 20, 100])
    p.add_argument("--quick", action="store_true", help="single step and 2-step FR only")
    p.add_argument("--bf16", action="store_true", help="run base and refiner under bf16 autocast")
    p.add_argument("--channels-last", action="store_true", help="channels_last weights and inputs")
    args = p.parse_args(argv)
    device = as_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch.cuda.is_available() is False")
    repeats = args.repeats or (10 if device.type == "cuda" else 5)
    warmup = 3 if device.type == "cuda" else 2

    refiner = bench_refiner(args.segmentor, args.classes, args.width, args.num_steps, device).eval()
    image = torch.randn(args.batch, 3, *args.size, generator=torch.Generator().manual_seed(0)).to(device)
    if args.channels_last:
        refiner = refiner.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)

    # FLOPs explain the ratios: one base forward vs one denoiser evaluation at the 1/4 map.
    with torch.inference_mode():
        base_flops = flops_of(lambda: refiner.segmentor(image))
        features, logits = refiner.segmentor(image)
        cond = refiner.make_condition(features, logits)
        x_t = torch.zeros(logits.shape[0], *logits.shape[-2:], dtype=torch.long, device=device)
        t = torch.full((logits.shape[0],), args.num_steps, device=device)
        unet_flops = flops_of(lambda: refiner.denoise(x_t, t, cond))

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"{name}, torch {torch.__version__}; {args.segmentor} + UNet width {args.width}, K={args.classes}, "
        f"T={args.num_steps}, {args.size[0]}x{args.size[1]}, batch {args.batch}, "
        f"{'bf16 autocast' if args.bf16 else 'fp32'}{', channels_last' if args.channels_last else ''}, "
        f"median of {repeats}\n"
        f"FLOPs per image: base {base_flops / args.batch / 1e9:.2f} G, one denoiser evaluation "
        f"{unet_flops / args.batch / 1e9:.2f} G\n"
    )
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
        # One step of a multi-step sampler: the full input vs the condition projected once per image (refine()).
        with torch.inference_mode():
            projection = refiner.denoiser.project_condition(cond)
            full_ms = 1000 * time_fn(lambda: refiner.denoise(x_t, t, cond), warmup, repeats, device)
            split_ms = 1000 * time_fn(
                lambda: refiner.denoise(x_t, t, cond, projection), warmup, repeats, device
            )
        print(
            f"one denoiser evaluation: full input {full_ms / args.batch:.1f} ms / image, condition projected once "
            f"{split_ms / args.batch:.1f} ms / image ({full_ms / split_ms:.2f}x fewer ms per step after the first)\n",
            flush=True,
        )
        # Rows are printed as they are measured, so a run cut short by a timeout still reports what it finished.
        print("| model | sampler | steps | ms / image | vs base |")
        print("|---|---|---|---|---|", flush=True)
        base_ms = base_latency(refiner.segmentor, image, repeats=repeats, warmup=warmup) / args.batch
        print(f"| base alone | - | - | {base_ms:.1f} | 1.00x |", flush=True)
        results = {"base": base_ms}
        for sampler, steps in plan(args.samplers, args.steps, args.num_steps, args.quick):
            ms = refine_latency(refiner, image, sampler, steps, repeats=repeats, warmup=warmup) / args.batch
            results[f"{sampler}@{steps}"] = ms
            print(f"| base + refiner | {sampler} | {steps} | {ms:.1f} | {ms / base_ms:.2f}x |", flush=True)
    for key in ("single_step@1", "free_renoise@2"):
        if key in results:
            ratio = results[key] / base_ms
            verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
            print(f"target {key} <= {TARGET_RATIO:.0f}x base: {ratio:.2f}x ({verdict})")
    return results


if __name__ == "__main__":
    main()
