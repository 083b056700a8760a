#!/usr/bin/env bash
# One-shot GPU check of the refiner, under 8 minutes on an H100 / H200 / A100:
#   1. bf16 autocast vs fp32 agreement of the refiner's x0 logits (fails above MAX_BF16_ERROR);
#   2. refiner training throughput, peak memory and MFU for SegFormer-B2 + a width-256 UNet at 512x512, batch 8:
#      fp32 eager vs bf16 autocast + channels-last vs the same under torch.compile;
#   3. per-image refine latency of SegFormer-B0 + a width-128 UNet at 512x512, T = 100, all samplers and steps,
#      in fp32 (the evaluator's precision), under bf16 autocast, and bf16 + channels-last.
# Usage: bash benchmarks/gpu_check.sh            (PYTHON=... to pick the interpreter; default .venv/bin/python)
#        DIFFSEG_PEAK_TFLOPS=756 bash benchmarks/gpu_check.sh   (dense bf16 peak of a card not in the table)
# Every section runs under its own timeout; the script carries on after a failure and exits non-zero at the end.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
MAX_BF16_ERROR=${MAX_BF16_ERROR:-5e-2}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA device (torch.cuda.is_available() is False for $PY); run this on a GPU machine" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
start=$SECONDS
failed=()

echo
echo "== 1+2/3: bf16 agreement, training throughput and MFU (SegFormer-B2 + UNet-256, 512x512, batch 8)"
timeout 270 "$PY" -u benchmarks/train_step.py --device cuda --segmentor segformer-b2 --width 256 \
    --crop 512 512 --batch 8 --classes 150 --iters 10 --warmup 3 --mfu --max-bf16-error "$MAX_BF16_ERROR" \
    || failed+=("train_step (rc $?)")

echo
# Batch-1 refinement is latency-bound (an H200 took 13-18 ms a width-128 denoiser evaluation in fp32 and bf16 alike),
# so one round of every sampler and step count is ~6-8 s: 3 timed rounds after 2 warm-ups fit 90 s (5 did not fit 75).
echo "== 3/3: refine latency (SegFormer-B0 + UNet-128, 512x512, T=100, batch 1): fp32, bf16, bf16 + channels-last"
for precision in "" "--bf16" "--bf16 --channels-last"; do
    timeout 90 "$PY" -u benchmarks/refine.py --device cuda --segmentor segformer-b0 --width 128 \
        --size 512 512 --classes 150 --num-steps 100 --repeats 3 $precision \
        || failed+=("refine ${precision:-fp32} (rc $?)")
done

echo
echo "gpu_check: $((SECONDS - start)) s"
if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu_check FAILED: ${failed[*]} (rc 124: timed out)" >&2
    exit 1
fi
echo "gpu_check OK"
