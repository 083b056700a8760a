"""Refiner training throughput: images/s and peak memory of one optimiser step, per precision / compile variant.

    .venv/bin/python benchmarks/train_step.py --device cuda [--segmentor segformer-b2 --width 256 --crop 512 512
        --batch 8 --classes 150 --iters 20 --mfu]

One step is the engine's (``engines.create_refiner_trainer``): frozen segmentor under no_grad, ``refiner.loss``
(stage 2: multi-step with Diffusion-on-First-Prediction, or ``--stage 1``), backward, grad clipping, AdamW. Variants:
``fp32`` eager; ``fp32-loop`` the same with AdamW's per-parameter loop (the CPU step before the multi-tensor
optimiser: the previous step path); ``bf16-cl`` bf16 autocast with a channels-last image batch (what ``train.amp`` /
``train.channels_last`` do on CUDA); ``*-compile`` the same with the denoiser under ``torch.compile``.
Defaults: fp32, bf16-cl, bf16-cl-compile on CUDA; fp32-loop, fp32 on CPU (compile is slower there: 0.79x at the
cpu profile's size). Ratios are against the first variant, measured in the same process. ``--mfu`` adds model-FLOPs
utilisation: FLOPs of one step counted by FlopCounterMode, over the device's dense bf16 peak (``diffseg.benchmarking.PEAK_BF16_FLOPS`` or $DIFFSEG_PEAK_TFLOPS).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from diffseg.benchmarking import (  # noqa: E402
    as_device,
    bench_refiner,
    bf16_relative_error,
    flops_of,
    peak_bf16_flops,
    peak_memory,
    reset_peak_memory,
    synchronize,
    time_fn,
)
from diffseg.models import MaskPriorRefiner  # noqa: E402

VARIANTS = ("fp32-loop", "fp32", "bf16-cl", "fp32-compile", "bf16-cl-compile")


def make_batch(
    batch: int, crop: tuple[int, int], classes: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """A random training batch: ``image`` (B, 3, H, W) float, ``mask`` (B, H, W) long in [0, K) with ignore 255."""
    gen = torch.Generator().manual_seed(0)
    mask = torch.randint(0, classes, (batch, *crop), generator=gen)
    mask[:, : max(1, crop[0] // 16)] = 255
    return {"image": torch.randn(batch, 3, *crop, generator=gen).to(device), "mask": mask.to(device)}


def make_step(
    refiner: MaskPriorRefiner, batch: dict[str, torch.Tensor], variant: str, stage: int
) -> Callable[[], None]:
    """One training step of ``variant`` on ``batch``, as the engine runs it (same generator stream per call)."""
    device = batch["image"].device
    bf16 = variant.startswith("bf16")
    if bf16 and device.type == "cuda":
        batch = {**batch, "image": batch["image"].contiguous(memory_format=torch.channels_last)}
    if variant.endswith("compile"):
        refiner.denoiser.compile()  # in place: state-dict keys unchanged; the frozen segmentor stays eager
    params = [p for p in refiner.denoiser.parameters() if p.requires_grad]
    # the engine's AdamW takes the multi-tensor path on every device (`engines.schedule.build_optimizer`);
    # fp32-loop is the step before that change: torch's CPU default, a dozen small ops per parameter
    optimizer = torch.optim.AdamW(params, lr=1e-4, foreach=variant != "fp32-loop")
    it = [0]

    def step() -> None:
        gen = torch.Generator(device=device).manual_seed(it[0])
        it[0] += 1
        refiner.denoiser.train()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            with torch.no_grad():
                base = refiner.base_outputs(batch["image"])
            loss = refiner.loss(batch, noise_object="first", single_step=stage == 1, generator=gen, base=base)
        optimizer.zero_grad(set_to_none=True)
        loss["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> list[dict[str, float | str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--segmentor", default="segformer-b2")
    p.add_argument("--width", type=int, default=256, help="UNet width")
    p.add_argument("--crop", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--classes", type=int, default=150)
    p.add_argument("--num-steps", type=int, default=100, help="diffusion steps T")
    p.add_argument("--stage", type=int, default=2, choices=(1, 2), help="1: single step from x_T; 2: DFP")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--iters", type=int, default=10, help="timed steps per variant")
    p.add_argument(
        "--warmup", type=int, default=3, help="untimed steps per variant (compilation happens here)"
    )
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=None)
    p.add_argument(
        "--profile",
        default="paper",
        choices=("paper", "cpu"),
        help="whose refiner config: the release's UNet (paper) or the embedded study's (cpu)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (a cpu sweep worker uses 1)")
    p.add_argument("--mfu", action="store_true", help="count FLOPs of a step and report MFU")
    p.add_argument(
        "--max-bf16-error",
        type=float,
        default=None,
        help="exit non-zero if the bf16 logits' error exceeds it",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = as_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch.cuda.is_available() is False")
    variants = args.variants or (
        ("fp32", "bf16-cl", "bf16-cl-compile") if device.type == "cuda" else ("fp32-loop", "fp32")
    )
    crop = tuple(args.crop)
    batch = make_batch(args.batch, crop, args.classes, device)

    def fresh() -> MaskPriorRefiner:
        return bench_refiner(
            args.segmentor, args.classes, args.width, args.num_steps, device, profile=args.profile
        )

    refiner = fresh()
    n_params = sum(p.numel() for p in refiner.denoiser.parameters() if p.requires_grad)
    err = bf16_relative_error(refiner, batch["image"][:2])
    step_flops = flops_of(make_step(refiner, batch, "fp32", args.stage)) if args.mfu else 0
    peak = peak_bf16_flops(device)
    del refiner

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"{name}, torch {torch.__version__}; {args.segmentor} (frozen) + UNet width {args.width} "
        f"({n_params / 1e6:.1f} M trainable), K={args.classes}, T={args.num_steps}, crop {crop[0]}x{crop[1]}, "
        f"batch {args.batch}, stage {args.stage}, {args.iters} timed steps after {args.warmup} warm-up\n"
    )
    print(f"bf16 autocast vs fp32, relative error of the x0 logits: {err:.2e}")
    if args.mfu:
        peak_txt = (
            f"{peak / 1e12:.0f} TFLOP/s dense bf16" if peak else "unknown peak (set $DIFFSEG_PEAK_TFLOPS)"
        )
        print(f"model FLOPs of one training step (FlopCounterMode): {step_flops / 1e9:.2f} GFLOP; {peak_txt}")
    mem_label = "peak CUDA alloc GiB" if device.type == "cuda" else "process peak RSS GiB"
    # Rows are printed as they are measured, so a run cut short by a timeout still reports what it finished.
    print(f"\n| variant | step ms | images/s | vs {variants[0]} | {mem_label} | MFU | warm-up s |")
    print("|---|---|---|---|---|---|---|", flush=True)

    rows: list[dict[str, float | str]] = []
    failures: list[str] = []
    base = None
    for variant in variants:
        refiner = fresh()
        try:
            step = make_step(refiner, batch, variant, args.stage)
            reset_peak_memory(device)
            # the warm-up is timed on its own: it holds a compiled variant's compilation, which a training pays once
            t0 = time.perf_counter()
            for _ in range(args.warmup):
                step()
            synchronize(device)
            warmup_s = time.perf_counter() - t0
            seconds = time_fn(step, warmup=0, repeats=args.iters, device=device)
        except Exception as exc:  # one broken variant (a compile error, OOM) must not hide the others
            failures.append(f"{variant}: {type(exc).__name__}: {exc}")
            print(f"| {variant} | failed: {type(exc).__name__} | - | - | - | - | - |", flush=True)
            continue
        finally:
            # drop the model, its optimiser state and graphs before the next variant builds its own
            refiner = step = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
        row = {"variant": variant, "s": seconds, "img_s": args.batch / seconds, "mem": peak_memory(device)}
        row["mfu"] = step_flops / seconds / peak if (peak and step_flops) else float("nan")
        rows.append(row)
        base = base or (row["img_s"] if variant == variants[0] else None)
        ratio = f"{row['img_s'] / base:.2f}x" if base else "-"
        mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] == row["mfu"] else "-"
        print(
            f"| {variant} | {1000 * seconds:.1f} | {row['img_s']:.2f} | {ratio} | {row['mem'] / 2**30:.2f} | {mfu} "
            f"| {warmup_s:.1f} |",
            flush=True,
        )
    if failures:
        raise SystemExit("variants failed:\n  " + "\n  ".join(failures))
    if args.max_bf16_error is not None and not err <= args.max_bf16_error:
        raise SystemExit(f"bf16 relative error {err:.2e} exceeds --max-bf16-error {args.max_bf16_error:.2e}")
    return rows


if __name__ == "__main__":
    main()
