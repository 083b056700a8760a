"""Timing helpers shared by ``benchmarks/``: wall time, peak memory, FLOP counts, refine / base latency, bf16 error.

Every timer synchronises the device before reading the clock (CUDA kernels are asynchronous) and reports the
median over ``repeats`` calls after ``warmup`` untimed ones (allocator, cuDNN autotuning, lazy init, compilation).
Performance *claims* live in the scripts' printed tables (design.md), never in timed tests.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from diffseg.config import replace
from diffseg.memory import peak_memory, reset_peak_memory  # noqa: F401 (the benchmarks' import)
from diffseg.models import MaskPriorRefiner, build_refiner
from diffseg.profiles import profile_config
from diffseg.segmentors import build_segmentor

# Dense bf16 tensor-core peaks in FLOP/s (vendor datasheets, without sparsity), matched against
# torch.cuda.get_device_name in order: the first key contained in the name wins, so "H100 PCIe" precedes "H100".
PEAK_BF16_FLOPS: dict[str, float] = {
    "H100 PCIe": 756e12,
    "H100": 989e12,  # SXM
    "H200": 989e12,
    "A100": 312e12,
}
PEAK_ENV = "DIFFSEG_PEAK_TFLOPS"  # override, in TFLOP/s, for cards not in the table


def as_device(device: torch.device | str) -> torch.device:
    """``torch.device(device)``; ``cuda`` without an index means the current CUDA device."""
    return device if isinstance(device, torch.device) else torch.device(device)


def bench_refiner(
    segmentor: str,
    num_classes: int,
    width: int,
    num_steps: int = 100,
    device: torch.device | str = "cpu",
    seed: int = 0,
    profile: str = "paper",
) -> MaskPriorRefiner:
    """A random-weight refiner as ``profile`` builds it (default ``paper``: uniform kernel, features condition, the
    release's UNet with ``dim_mults`` (1, 1, 1) and attention; ``cpu``: the embedded study's smaller UNet) over a
    frozen random-init ``segmentor``, with the UNet width and T given.

    Latency and throughput do not depend on the weights, so nothing is downloaded.
    """
    cfg = profile_config(profile, "ade20k", segmentor)
    cfg = replace(
        cfg, unet=replace(cfg.unet, width=width), diffusion=replace(cfg.diffusion, num_steps=num_steps)
    )
    torch.manual_seed(seed)
    seg = build_segmentor(segmentor, num_classes, weights=None, frozen=True)
    return build_refiner(cfg, seg).to(as_device(device))


def synchronize(device: torch.device | str) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU)."""
    if as_device(device).type == "cuda":
        torch.cuda.synchronize(as_device(device))


def time_fn(
    fn: Callable[[], Any], warmup: int = 2, repeats: int = 5, device: torch.device | str = "cpu"
) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` timed calls, after ``warmup`` untimed calls."""
    if repeats < 1 or warmup < 0:
        raise ValueError(
            f"time_fn needs repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}"
        )
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flops_of(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` counted by ``torch.utils.flop_counter.FlopCounterMode``.

    Counts matmuls, convolutions and attention (forward and backward if ``fn`` calls ``backward``), i.e. the
    "model FLOPs" of MFU; element-wise ops and norms are not counted. Runs ``fn`` once, on any device.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def peak_bf16_flops(device: torch.device | str) -> float | None:
    """Dense bf16 peak FLOP/s of a CUDA device from :data:`PEAK_BF16_FLOPS`, or ``$DIFFSEG_PEAK_TFLOPS`` * 1e12.

    None on CPU or for a card not in the table (MFU is then not reported). A bad override raises ValueError.
    """
    override = os.environ.get(PEAK_ENV)
    if override:
        try:
            value = float(override)
        except ValueError:
            raise ValueError(f"${PEAK_ENV}={override!r} is not a number of TFLOP/s") from None
        if value <= 0:
            raise ValueError(f"${PEAK_ENV} must be positive, got {override!r}")
        return value * 1e12
    device = as_device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def base_latency(segmentor: torch.nn.Module, image: torch.Tensor, repeats: int = 5, warmup: int = 1) -> float:
    """Median latency in ms of the frozen segmentor alone on ``image`` (B, 3, H, W) float, under inference mode."""

    def run() -> None:
        with torch.inference_mode():
            segmentor(image)

    return 1000.0 * time_fn(run, warmup=warmup, repeats=repeats, device=image.device)


def refine_latency(
    refiner: torch.nn.Module,
    image: torch.Tensor,
    sampler: str,
    steps: int,
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
) -> float:
    """Median latency in ms of ``refiner.refine(image, sampler, steps)``: base segmentor + ``steps`` denoiser
    evaluations (one for ``single_step``), the sampler's noise, keeping only the last prediction.

    ``image``: (B, 3, H, W) float on the refiner's device. The generator is re-seeded per call (same work each time).
    """

    def run() -> None:
        gen = torch.Generator(device=image.device).manual_seed(seed)
        refiner.refine(image=image, sampler=sampler, steps=steps, generator=gen, collect="last")

    return 1000.0 * time_fn(run, warmup=warmup, repeats=repeats, device=image.device)


def bf16_relative_error(
    refiner: torch.nn.Module, image: torch.Tensor, t: int | None = None, seed: int = 0
) -> float:
    """``||bf16 - fp32|| / ||fp32||`` (Frobenius) of the refiner's x0 logits (B, K, h, w) on ``image``.

    The bf16 path runs the base segmentor and the denoiser under ``torch.autocast(bfloat16)``, as training does
    with ``train.amp``; both paths see the same x_t (the kernel's prior sample from ``seed``) and the same ``t``
    (default T), in eval mode (the release head's dropout would otherwise differ between the two passes). Works on
    CPU and CUDA.
    """
    t = refiner.kernel.num_steps if t is None else t
    was_training = refiner.training
    refiner.eval()
    try:
        return _relative_error(refiner, image, t, seed)
    finally:
        refiner.train(was_training)


def _relative_error(refiner: torch.nn.Module, image: torch.Tensor, t: int, seed: int) -> float:
    device, kernel = image.device, refiner.kernel
    with torch.inference_mode():
        features, logits = refiner.base_outputs(image)
        b, _, h, w = logits.shape
        gen = torch.Generator(device=device).manual_seed(seed)
        x_t = kernel.prior_sample((b, h, w), generator=gen, device=device)
        t_vec = torch.full((b,), t, dtype=torch.long, device=device)
        ref = refiner.denoise(x_t, t_vec, refiner.make_condition(features, logits)).float()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            features16, logits16 = refiner.base_outputs(image)
            low = refiner.denoise(x_t, t_vec, refiner.make_condition(features16, logits16)).float()
    return float(torch.linalg.vector_norm(low - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-12))
