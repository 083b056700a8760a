"""diffseg.benchmarking helpers and tiny CPU dry runs of the benchmark scripts (no timing claims: those live in the
scripts' tables). The GPU path is exercised by benchmarks/gpu_check.sh; here only its no-CUDA refusal."""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from diffseg import benchmarking as bm

ROOT = Path(__file__).resolve().parents[1]
K = 5
TINY = shlex.split(f"--device cpu --segmentor segformer-tiny --width 16 --classes {K} --num-steps 10")


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def refiner():
    return bm.bench_refiner("segformer-tiny", K, width=16, num_steps=10, seed=0).eval()


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_time_fn_and_peak_memory_are_positive() -> None:
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    calls = []

    def fn() -> None:
        calls.append(1)
        x @ x

    assert bm.time_fn(fn, warmup=2, repeats=3, device="cpu") > 0
    assert len(calls) == 5  # warmup calls are made, not timed
    assert bm.peak_memory("cpu") > 0


def test_time_fn_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="repeats"):
        bm.time_fn(lambda: None, repeats=0)


def test_flops_of_counts_a_matmul_exactly() -> None:
    a, b = torch.ones(4, 8), torch.ones(8, 16)
    assert bm.flops_of(lambda: a @ b) == 2 * 4 * 8 * 16


def test_peak_flops_table_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(bm.PEAK_ENV, raising=False)
    assert bm.peak_bf16_flops("cpu") is None
    assert bm.PEAK_BF16_FLOPS["H100"] == bm.PEAK_BF16_FLOPS["H200"] == 989e12
    assert bm.PEAK_BF16_FLOPS["A100"] == 312e12
    monkeypatch.setenv(bm.PEAK_ENV, "500")
    assert bm.peak_bf16_flops("cpu") == 500e12
    monkeypatch.setenv(bm.PEAK_ENV, "fast")
    with pytest.raises(ValueError, match=bm.PEAK_ENV):
        bm.peak_bf16_flops("cpu")


def test_latencies_are_positive(refiner, image) -> None:
    assert bm.base_latency(refiner.segmentor, image, repeats=1, warmup=0) > 0
    for sampler in ("strict", "free_renoise", "single_step"):
        assert bm.refine_latency(refiner, image, sampler, 2, repeats=1, warmup=0) > 0


def test_bf16_error_is_small_but_not_zero(refiner, image) -> None:
    err = bm.bf16_relative_error(refiner, image)
    assert 0 < err < 5e-2  # zero would mean autocast did nothing
    assert bm.bf16_relative_error(refiner, image) == err  # same x_t and t every call


def test_train_step_dry_run() -> None:
    rows = _script("train_step").main(
        TINY
        + shlex.split(
            "--crop 32 32 --batch 2 --iters 1 --warmup 1 --variants fp32 --mfu --max-bf16-error 5e-2"
        )
    )
    assert [r["variant"] for r in rows] == ["fp32"]
    assert rows[0]["img_s"] > 0 and rows[0]["mem"] > 0


def test_train_step_fails_on_a_bf16_error_above_the_limit() -> None:
    with pytest.raises(SystemExit, match="bf16 relative error"):
        _script("train_step").main(
            TINY
            + shlex.split("--crop 32 32 --batch 1 --iters 1 --warmup 0 --variants fp32 --max-bf16-error 0")
        )


def test_refine_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    results = _script("refine").main(TINY + shlex.split("--size 32 32 --repeats 1 --steps 1 2 20"))
    # steps above T are dropped; single step listed once
    expected = {"base", "single_step@1"} | {
        f"{s}@{n}" for s in ("strict", "strict_release", "free_renoise") for n in (1, 2)
    }
    assert set(results) == expected
    assert all(ms > 0 for ms in results.values())
    assert "target free_renoise@2" in capsys.readouterr().out


def test_refine_quick_keeps_the_target_rows(capsys: pytest.CaptureFixture[str]) -> None:
    args = "--size 32 32 --repeats 1 --quick --bf16 --channels-last"
    results = _script("refine").main(TINY + shlex.split(args))
    assert set(results) == {"base", "single_step@1", "free_renoise@2"}
    out = capsys.readouterr().out
    assert "bf16 autocast, channels_last" in out
    assert "condition projected once" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_check_fails_fast_without_cuda() -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr


def test_loss_over_pixel_rows_equals_cross_entropy_over_channels(refiner) -> None:
    # The speed path of MaskPriorRefiner.loss (cross-entropy over (pixels, K) rows of a channels-last output)
    # must give the plain dim-1 cross-entropy. It belongs with tests/test_refiner.py; kept here by file ownership.
    captured = []
    hook = refiner.denoiser.register_forward_hook(lambda m, a, out: captured.append(out.detach()))
    g = torch.Generator().manual_seed(1)
    mask = torch.randint(0, K, (2, 32, 32), generator=g)
    mask[:, :4] = 255
    batch = {"image": torch.randn(2, 3, 32, 32, generator=g), "mask": mask}
    try:
        loss = refiner.loss(batch, noise_object="gt", generator=torch.Generator().manual_seed(0))["loss"]
    finally:
        hook.remove()
    (pred,) = captured  # noise object gt: one denoiser call
    assert not pred.is_contiguous()  # SegFormer's features make the output channels-last: the rows path ran
    up = torch.nn.functional.interpolate(
        pred.contiguous(), size=(32, 32), mode="bilinear", align_corners=False
    )
    ref = torch.nn.functional.cross_entropy(up, mask, ignore_index=255, reduction="sum") / (mask != 255).sum()
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-6, atol=0)
