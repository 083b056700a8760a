"""PyTorch-Ignite engines: training (base segmentor, refiner stage 1 and 2), evaluation, and `run(config)`.

Shaped like ignite's own examples: ``get_dataflow``, ``initialize``, ``create_trainer``, ``create_evaluator`` and
``training`` run under ``idist.Parallel``, so one code path serves one process, ``torchrun --nproc_per_node N`` and
several nodes. Rank 0 alone writes files.

Reproducibility and resume. Every random draw of a training iteration comes from generators seeded by
(seed, iteration), and the data order is a pure function of (seed, iteration) (``IterationSampler``), so nothing
stateful needs saving besides the weights, the optimiser, the LR schedule, the EMA weights and the iteration counter:
a run killed at any point and restarted from its last checkpoint ends with the same weights as an uninterrupted run.

Run folder::

    run_dir/config.yaml        the resolved config (a changed config refuses to resume)
    run_dir/base.safetensors   the trained base segmentor (job (a)), when the config trains one
    run_dir/checkpoints/       refiner checkpoints (two newest kept, written to a temp file and renamed)
    run_dir/log.csv            iteration, stage, loss, lr (+ tensorboard/ events)
    run_dir/metrics.json       final validation metrics of base and refiner: its presence marks the run complete
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from diffseg.config import ExperimentConfig, config_hash, load_config, save_config, to_dict
from diffseg.metrics import SegMetrics, all_reduce_

log = logging.getLogger("diffseg")

CHECKPOINT_PREFIX = "checkpoint_"


class NanLossError(RuntimeError):
    """Training produced a non-finite loss; the message names the iteration and the last good checkpoint."""


# ----------------------------------------------------------------------------------------------------------------
# small utilities


def resolve_device(name: str = "auto") -> torch.device:
    """ "auto" -> this process's CUDA device if there is one, else CPU."""
    if name == "auto":
        return idist.device() if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but CUDA is not available here; use device=cpu or auto")
    return torch.device(name)


def iteration_seed(seed: int, iteration: int, stream: int = 0) -> int:
    """A seed for (run seed, iteration, stream): every random draw of an iteration is a pure function of these."""
    return (seed * 1_000_003 + iteration * 7_919 + stream * 104_729) % (2**62)


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------------
# data


class IterationSampler(Sampler[list[int]]):
    """Batches of dataset indices as a pure function of (seed, iteration), resumable at any iteration.

    The infinite stream of indices is the concatenation of per-epoch permutations seeded by (seed, epoch);
    iteration i takes the global batch at positions [i * B * world, (i + 1) * B * world) and this rank its slice.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        total_iters: int,
        seed: int,
        start_iter: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_items < 1:
            raise ValueError("the training split is empty")
        self.n, self.bs, self.total, self.seed = num_items, batch_size, total_iters, seed
        self.start, self.rank, self.world = start_iter, rank, world_size
        self._perm_cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perm_cache:
            self._perm_cache = {
                epoch: torch.randperm(
                    self.n,
                    generator=make_generator(iteration_seed(self.seed, epoch, stream=1), torch.device("cpu")),
                )
            }
        return self._perm_cache[epoch]

    def batch(self, iteration: int) -> list[int]:
        global_bs = self.bs * self.world
        start = iteration * global_bs + self.rank * self.bs
        out = []
        for pos in range(start, start + self.bs):
            epoch, k = divmod(pos, self.n)
            out.append(int(self._perm(epoch)[k]))
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(self.start, self.total):
            yield [(idx, iteration_seed(self.seed, i, stream=2 + j)) for j, idx in enumerate(self.batch(i))]

    def __len__(self) -> int:
        return max(0, self.total - self.start)


class SeededItems(Dataset):
    """Fetch item ``idx`` with the transform's generator reseeded by ``item_seed``: augmentations are a function of
    (seed, iteration, position in batch), whatever the number of workers, and replay exactly on resume."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        idx, item_seed = key
        transform = getattr(self.dataset, "transform", None)
        if transform is not None and hasattr(transform, "reseed"):
            transform.reseed(item_seed)
        return self.dataset[idx]


def get_dataflow(
    cfg: ExperimentConfig, total_iters: int, start_iter: int = 0, seed_offset: int = 0
) -> tuple[DataLoader, DataLoader, Dataset]:
    """Train loader (``IterationSampler``, resumable), val loader (this rank's shard) and the val dataset."""
    from diffseg.data import build_dataset, collate, ensure_synthetic

    if cfg.data.synthetic:
        if idist.get_rank() == 0:
            ensure_synthetic(cfg.data)
        idist.barrier()
    train_ds = build_dataset(cfg.data, "train", train=True)
    val_ds = build_dataset(cfg.data, "val", train=False)
    pin = torch.cuda.is_available()
    workers = cfg.data.num_workers
    sampler = IterationSampler(
        len(train_ds),
        cfg.data.batch_size,
        total_iters,
        cfg.seed + seed_offset,
        start_iter,
        idist.get_rank(),
        idist.get_world_size(),
    )
    train_loader = DataLoader(
        SeededItems(train_ds),
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin,
        # The iteration sampler covers the whole run in one pass (one "epoch"), so workers start once either way.
        persistent_workers=False,
    )
    val_indices = list(range(idist.get_rank(), len(val_ds), idist.get_world_size()))
    if cfg.eval.max_images is not None:
        val_indices = [i for i in val_indices if i < cfg.eval.max_images]
    val_loader = DataLoader(
        torch.utils.data.Subset(val_ds, val_indices),
        batch_size=cfg.eval.batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin,
    )
    return train_loader, val_loader, val_ds


def metric_ignore_index(dataset: Dataset) -> int:
    """The label the metrics ignore (ADE20K's 151-class mode ignores class 0, everything else 255)."""
    return int(getattr(dataset, "metric_ignore_index", getattr(dataset, "ignore_index", 255)))


# ----------------------------------------------------------------------------------------------------------------
# optimisation


def scaled_lr(cfg: ExperimentConfig) -> float:
    """The learning rate scaled linearly with the effective batch (per-process batch x processes)."""
    effective = cfg.data.batch_size * idist.get_world_size()
    lr = cfg.optim.lr * effective / cfg.optim.reference_batch
    if effective != cfg.optim.reference_batch and idist.get_rank() == 0:
        log.info(
            "effective batch %d differs from optim.reference_batch %d: lr scaled %.3g -> %.3g",
            effective,
            cfg.optim.reference_batch,
            cfg.optim.lr,
            lr,
        )
    return lr


def stage_lr_factor(
    it: int, stage_start: int, stage_len: int, warmup: int, decay_at: tuple[float, ...], gamma: float
) -> float:
    """Linear warmup over ``warmup`` iterations, then x gamma at each fraction of the stage in ``decay_at``."""
    local = it - stage_start
    warm = min(1.0, (local + 1) / max(1, warmup)) if warmup > 0 else 1.0
    decays = sum(1 for f in decay_at if local >= int(f * stage_len))
    return warm * gamma**decays


def build_optimizer(params: list[nn.Parameter], cfg: ExperimentConfig, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# ----------------------------------------------------------------------------------------------------------------
# trainers


@dataclass
class Stages:
    """Iteration layout of refiner training: [0, s1) stage 1 (single step), [s1, s1 + s2) stage 2 (multi step)."""

    stage1: int
    stage2: int

    @property
    def total(self) -> int:
        return self.stage1 + self.stage2

    def stage_of(self, it: int) -> int:
        return 1 if it < self.stage1 else 2

    def bounds(self, it: int) -> tuple[int, int]:
        return (0, self.stage1) if it < self.stage1 else (self.stage1, self.stage2)


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Any]:
    out = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
    if channels_last and device.type == "cuda":
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


def _check_finite(loss: torch.Tensor, engine: Engine) -> None:
    if not torch.isfinite(loss):
        raise NanLossError(f"non-finite loss ({loss.item()}) at iteration {engine.state.iteration}")


def create_base_trainer(
    segmentor: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: ExperimentConfig,
    device: torch.device,
    lr: float,
    total_iters: int,
) -> Engine:
    """Job (a): train a base segmentor with pixel-wise cross-entropy (logits upsampled to the crop, ignore 255)."""
    model = idist.auto_model(segmentor) if idist.get_world_size() > 1 else segmentor

    def step(engine: Engine, batch: dict[str, Any]) -> dict[str, float]:
        it = engine.state.iteration - 1
        set_lr(
            optimizer,
            lr
            * stage_lr_factor(
                it,
                0,
                total_iters,
                min(cfg.optim.warmup_iters, total_iters // 10),
                cfg.optim.decay_at,
                cfg.optim.decay_gamma,
            ),
        )
        model.train()
        batch = _to_device(batch, device, cfg.train.channels_last)
        with _autocast(device, cfg.train.amp):
            _, logits = model(batch["image"])
            logits = F.interpolate(
                logits.float(), size=batch["mask"].shape[-2:], mode="bilinear", align_corners=False
            )
            loss = F.cross_entropy(logits, batch["mask"], ignore_index=255)
        _check_finite(loss, engine)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(segmentor.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        return {"loss": loss.item(), "lr": optimizer.param_groups[0]["lr"], "stage": 0}

    return Engine(step)


def create_refiner_trainer(
    refiner: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: ExperimentConfig,
    device: torch.device,
    lr: float,
    stages: Stages,
) -> Engine:
    """Refiner training: stage 1 (always from a random mask) then stage 2 (multi-step, ``refiner.noise_object``).

    The frozen segmentor runs without autograd once per batch; its outputs are passed to the loss.
    Each stage has its own warmup and step decay, as the release's two trainings; the optimiser state carries over.
    """

    def step(engine: Engine, batch: dict[str, Any]) -> dict[str, float]:
        it = engine.state.iteration - 1
        start, length = stages.bounds(it)
        set_lr(
            optimizer,
            lr
            * stage_lr_factor(
                it,
                start,
                length,
                min(cfg.optim.warmup_iters, length // 10),
                cfg.optim.decay_at,
                cfg.optim.decay_gamma,
            ),
        )
        batch = _to_device(batch, device, cfg.train.channels_last)
        gen = make_generator(iteration_seed(cfg.seed, it, stream=3), device)
        refiner.denoiser.train()
        with _autocast(device, cfg.train.amp):
            with torch.no_grad():
                base = refiner.base_outputs(batch["image"])
            out = refiner.loss(
                batch,
                noise_object=cfg.refiner.noise_object,
                single_step=stages.stage_of(it) == 1,
                generator=gen,
                base=base,
            )
        loss = out["loss"]
        _check_finite(loss, engine)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(refiner.denoiser.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        return {"loss": loss.item(), "lr": optimizer.param_groups[0]["lr"], "stage": stages.stage_of(it)}

    return Engine(step)


# ----------------------------------------------------------------------------------------------------------------
# inference


def _pad_to_multiple(x: torch.Tensor, multiple: int = 32) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(x, (0, pw, 0, ph)) if (ph or pw) else x


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


def _resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
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
    generator: torch.Generator | None,
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
        padded = _pad_to_multiple(crop)
        if refiner is None:
            base_logits = segmentor(padded)[1]
            steps: list[tuple[int, torch.Tensor]] = []
        else:
            base = refiner.base_outputs(padded)
            base_logits = base[1]
            steps = refiner.refine(
                base=base,
                sampler=ev.sampler,
                steps=_num_evals(cfg),
                generator=generator,
                guidance=ev.guidance,
            )
            steps = _select_steps(steps, which)

        def up(x: torch.Tensor) -> torch.Tensor:
            return _resize(x.float(), padded.shape[-2:])[..., :ch, :cw]

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


def _num_evals(cfg: ExperimentConfig) -> int:
    if cfg.eval.sampler == "single_step":
        return 1
    return min(cfg.eval.num_evals, cfg.diffusion.num_steps)


@torch.inference_mode()
def predict(
    refiner: nn.Module | None,
    segmentor: nn.Module,
    batch: dict[str, Any],
    cfg: ExperimentConfig,
    generator: torch.Generator | None = None,
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
        x = _resize(x, out_hw)
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


def create_evaluator(
    refiner: nn.Module | None,
    segmentor: nn.Module,
    cfg: ExperimentConfig,
    num_classes: int,
    ignore_index: int,
    device: torch.device,
    multi_scale: bool = False,
    seed: int = 0,
    steps: str = "all",
) -> Engine:
    """One pass over a split gives mIoU / mAcc / aAcc / mBIoU of the base and of the refiner at every step.

    After ``run``, ``engine.state.results`` = {"base": metrics, "refined": [metrics per step], "t": [t per step]},
    all-reduced across processes. ``steps`` ("all", "last", "ends": first and last) selects the steps measured;
    the sampler runs whole either way, so the kept steps' numbers do not depend on it.
    """
    metrics: dict[str, Any] = {"base": SegMetrics(num_classes, ignore_index), "steps": [], "t": []}

    def step(engine: Engine, batch: dict[str, Any]) -> None:
        batch = _to_device(batch, device)
        gen = make_generator(iteration_seed(seed, engine.state.iteration, stream=5), device)
        base, collected = predict(refiner, segmentor, batch, cfg, gen, multi_scale, steps)
        target = batch["mask"]
        metrics["base"].update(base.argmax(1), target)
        if not metrics["steps"]:
            metrics["steps"] = [SegMetrics(num_classes, ignore_index) for _ in collected]
            metrics["t"] = [int(t) for t, _ in collected]
        for m, (_, lg) in zip(metrics["steps"], collected):
            m.update(lg.argmax(1), target)

    engine = Engine(step)

    @engine.on(Events.STARTED)
    def _reset(_: Engine) -> None:
        metrics["base"].reset()
        metrics["steps"], metrics["t"] = [], []

    @engine.on(Events.COMPLETED)
    def _collect(e: Engine) -> None:
        all_reduce_(metrics["base"])
        for m in metrics["steps"]:
            all_reduce_(m)
        e.state.results = {
            "base": metrics["base"].compute(),
            "refined": [m.compute() for m in metrics["steps"]],
            "t": list(metrics["t"]),
        }

    return engine


# ----------------------------------------------------------------------------------------------------------------
# checkpoints


def _checkpoint_files(ckpt_dir: Path) -> list[Path]:
    files = [p for p in ckpt_dir.glob(f"{CHECKPOINT_PREFIX}*.pt")]
    return sorted(files, key=lambda p: int(p.stem[len(CHECKPOINT_PREFIX) :]), reverse=True)


def load_latest_checkpoint(ckpt_dir: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """The newest checkpoint that loads; a truncated or corrupt one is reported and the previous one used."""
    for path in _checkpoint_files(ckpt_dir):
        try:
            return torch.load(path, map_location="cpu", weights_only=True), path
        except Exception as e:  # noqa: BLE001 - any failure to read means "not usable"
            warnings.warn(
                f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); using the previous one",
                stacklevel=2,
            )
    return None, None


def save_checkpoint(ckpt_dir: Path, iteration: int, state: dict[str, Any], keep: int = 2) -> Path:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"{CHECKPOINT_PREFIX}{iteration}.pt"
    atomic_torch_save(state, path)
    for old in _checkpoint_files(ckpt_dir)[keep:]:
        old.unlink(missing_ok=True)
    return path


# ----------------------------------------------------------------------------------------------------------------
# logging handlers


def attach_logging(trainer: Engine, run_dir: Path, cfg: ExperimentConfig, progress: bool, desc: str) -> None:
    """CSV log (appended, so a resumed run continues it), TensorBoard scalars and a progress bar (rank 0)."""
    if idist.get_rank() != 0:
        return
    csv_path = run_dir / "log.csv"

    @trainer.on(Events.ITERATION_COMPLETED(every=max(1, cfg.train.log_every)) | Events.COMPLETED)
    def _write_csv(engine: Engine) -> None:
        out = engine.state.output or {}
        new = not csv_path.exists()
        with csv_path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["job", "iteration", "stage", "loss", "lr", "time"])
            w.writerow(
                [
                    desc,
                    engine.state.iteration,
                    out.get("stage"),
                    out.get("loss"),
                    out.get("lr"),
                    round(time.time(), 3),
                ]
            )

    try:
        from ignite.handlers.tensorboard_logger import TensorboardLogger

        tb = TensorboardLogger(log_dir=str(run_dir / "tensorboard"))
        tb.attach_output_handler(
            trainer,
            event_name=Events.ITERATION_COMPLETED(every=max(1, cfg.train.log_every)),
            tag=desc,
            output_transform=lambda o: {"loss": o["loss"], "lr": o["lr"]},
        )

        @trainer.on(Events.COMPLETED | Events.TERMINATE)
        def _close(_: Engine) -> None:
            tb.close()

        @trainer.on(Events.EXCEPTION_RAISED)
        def _close_and_reraise(_: Engine, e: BaseException) -> None:
            # ignite hands an exception to its EXCEPTION_RAISED handlers instead of raising it: raise it again
            tb.close()
            raise e
    except ImportError:  # tensorboard is a pinned dependency; keep training if a user removed it
        pass

    if progress:
        from ignite.handlers import ProgressBar

        ProgressBar(desc=desc, persist=False).attach(trainer, output_transform=lambda o: {"loss": o["loss"]})


# ----------------------------------------------------------------------------------------------------------------
# the run


def _resolved_run_dir(run_dir: str | Path, cfg: ExperimentConfig, allow_config_change: bool) -> Path:
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if cfg_path.exists():
        old = load_config(cfg_path)
        if config_hash(old) != config_hash(cfg):
            changed = _diff_keys(to_dict(old), to_dict(cfg))
            if not allow_config_change:
                raise ValueError(
                    f"{run_dir} holds a run with a different config (changed: {', '.join(changed)}); "
                    "use a new run folder, or pass --allow-config-change to continue it with the new config"
                )
            warnings.warn(f"continuing {run_dir} with a changed config: {', '.join(changed)}", stacklevel=2)
    if idist.get_rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, cfg_path)
    return run_dir


def _diff_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _diff_keys(a[k], b[k], prefix + k + ".")
        elif a.get(k) != b.get(k):
            out.append(f"{prefix}{k}: {a.get(k)!r} -> {b.get(k)!r}")
    return out


def train_base_segmentor(
    cfg: ExperimentConfig, out_path: Path, progress: bool = True, device: torch.device | None = None
) -> Path:
    """Job (a): train the base segmentor of ``cfg`` from scratch and save it to ``out_path`` (safetensors).

    Resumable through ``out_path.parent / 'base_checkpoints'``; returns the weights path (reused when present).
    """
    from diffseg.config import replace
    from diffseg.segmentors import build_segmentor, save_segmentor

    out_path = Path(out_path)
    if out_path.exists():
        return out_path
    # The base has its own seed: a study's seeds vary the refiner on top of one fixed base, as with a published one.
    cfg = replace(cfg, seed=cfg.segmentor.seed)
    device = device or resolve_device(cfg.device)
    iters = cfg.segmentor.train_iterations
    ckpt_dir = out_path.parent / "base_checkpoints"
    state, _ = load_latest_checkpoint(ckpt_dir) if ckpt_dir.exists() else (None, None)
    start = int(state["iteration"]) if state else 0
    train_loader, _, val_ds = get_dataflow(cfg, iters, start_iter=start, seed_offset=17)
    torch.manual_seed(iteration_seed(cfg.seed, 0, stream=9))
    seg = build_segmentor(cfg.segmentor.name, val_ds.num_classes, weights=None, frozen=False).to(device)
    lr = cfg.segmentor.lr * cfg.data.batch_size * idist.get_world_size() / cfg.optim.reference_batch
    opt = torch.optim.AdamW(seg.parameters(), lr=lr, weight_decay=cfg.segmentor.weight_decay)
    if state:
        seg.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    trainer = create_base_trainer(seg, opt, cfg, device, lr, iters)
    _resume_at(trainer, start, iters)

    every = max(1, cfg.train.checkpoint_every)

    @trainer.on(Events.ITERATION_COMPLETED(every=every))
    def _ckpt(engine: Engine) -> None:
        if idist.get_rank() == 0:
            save_checkpoint(
                ckpt_dir,
                engine.state.iteration,
                {
                    "iteration": engine.state.iteration,
                    "model": seg.state_dict(),
                    "optimizer": opt.state_dict(),
                },
            )

    if cfg.train.eval_every > 0:
        from diffseg import curves

        loader = curves.subset_loader(cfg, val_ds, idist.get_rank(), idist.get_world_size())

        def _base_point(_: int) -> tuple[int, dict[str, float]]:
            seg.eval()  # the trainer's step puts it back in train mode
            with torch.no_grad():
                res = evaluate_models(None, seg, curves.eval_config(cfg, 0), loader, val_ds, device)
            return 0, {"base": res["base"]["mIoU"]}

        curves.attach(
            trainer,
            out_path.parent,
            cfg.train.eval_every,
            iters,
            _base_point,
            idist.get_rank() == 0,
            curves.BASE_CURVE_FILE,
        )
    attach_logging(trainer, out_path.parent, cfg, progress, "base")
    if start < iters:
        trainer.run(train_loader, max_epochs=1, epoch_length=iters)
    seg.freeze()
    if idist.get_rank() == 0:
        save_segmentor(seg, out_path)
    idist.barrier()
    return out_path


def _stage1_state(stage1_dir: Path, stages: Stages) -> tuple[dict[str, Any], Path]:
    state, path = load_latest_checkpoint(stage1_dir / "checkpoints")
    if state is None or int(state["iteration"]) != stages.stage1:
        got = None if state is None else state["iteration"]
        raise ValueError(
            f"{stage1_dir} holds no finished stage 1 of {stages.stage1} iterations (found {got})"
        )
    state = dict(state)
    state["ema"] = None
    return state, path


def _resume_at(trainer: Engine, start: int, total: int) -> None:
    """Make ``trainer.run`` continue at iteration ``start`` of one ``total``-iteration epoch.

    The loader's sampler already starts at ``start`` (``IterationSampler``), so nothing is skipped or replayed.
    """
    if start > 0:
        trainer.state.iteration = start
        trainer.state.epoch = 0
        trainer.state.max_epochs = 1
        trainer.state.epoch_length = total


def _refiner_state(refiner: nn.Module, ema: EMAHandler | None, opt: torch.optim.Optimizer, it: int) -> dict:
    return {
        "iteration": it,
        "denoiser": refiner.denoiser.state_dict(),
        "ema": ema.ema_model.state_dict() if ema is not None else None,
        "optimizer": opt.state_dict(),
        "model_signature": refiner_signature(refiner),
    }


def refiner_signature(refiner: nn.Module) -> dict[str, Any]:
    """What a checkpoint must match to be loaded into this refiner (names, not just shapes, in the error)."""
    return {
        "num_classes": int(refiner.num_classes),
        "segmentor": str(getattr(refiner.segmentor, "name", type(refiner.segmentor).__name__)),
        "num_parameters": int(sum(p.numel() for p in refiner.denoiser.parameters())),
    }


def check_signature(saved: dict[str, Any] | None, refiner: nn.Module, path: Path | str) -> None:
    """Refuse a checkpoint of another model or number of classes, naming what differs."""
    current = refiner_signature(refiner)
    if saved is None:
        raise ValueError(f"{path} is not a diffseg refiner checkpoint (no model signature)")
    diffs = [
        f"{k}: checkpoint has {saved.get(k)!r}, this model expects {v!r}"
        for k, v in current.items()
        if saved.get(k) != v
    ]
    if diffs:
        raise ValueError(f"checkpoint {path} is for another model: " + "; ".join(diffs))


def _build_models(cfg: ExperimentConfig, device: torch.device, base_weights: str | None, num_classes: int):
    from diffseg.models import build_refiner
    from diffseg.segmentors import build_segmentor

    segmentor = build_segmentor(cfg.segmentor.name, num_classes, weights=base_weights, frozen=True).to(device)
    torch.manual_seed(iteration_seed(cfg.seed, 0, stream=11))  # the denoiser's (and frozen embedding's) init
    refiner = build_refiner(cfg, segmentor).to(device)
    return segmentor, refiner


def training(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    progress: bool = True,
    allow_config_change: bool = False,
    evaluate_at_end: bool = True,
    stop_after: int | None = None,
    base_weights: str | None = None,
    init_from: str | Path | None = None,
) -> dict[str, Any]:
    """Train base segmentor (if the config asks for it) and refiner, then evaluate on val. Resumes automatically.

    Returns the metrics dict also written to ``run_dir/metrics.json``. ``stop_after`` ends training after that many
    refiner iterations without evaluating (used by tests to simulate an interruption). ``base_weights`` hands in an
    already trained base segmentor for this config (the study shares one per dataset, segmentor and seed); it is
    linked into the run folder so the run stays self-contained. ``init_from``: the run folder of a finished
    stage-1-only training of the same config (``train.stage2_iterations=0``); a fresh run starts its stage 2 from
    there. Stage 1 depends on neither the noise object nor EMA, and every draw is a function of (seed, iteration),
    so this gives exactly the weights an unshared run would have: ablation arms share one stage 1, as the release's
    stage-2 trainings all start from one stage-1 checkpoint.
    """
    run_dir = _resolved_run_dir(run_dir, cfg, allow_config_change)
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        log.info("%s is complete; returning its metrics", run_dir)
        return json.loads(metrics_path.read_text())
    device = resolve_device(cfg.device)
    t0 = time.time()

    if base_weights is not None:
        _link_or_copy(Path(base_weights), run_dir / "base.safetensors")
    base_weights = cfg.segmentor.weights
    if base_weights is None and cfg.segmentor.train_iterations > 0:
        base_weights = str(train_base_segmentor(cfg, run_dir / "base.safetensors", progress, device))

    stages = Stages(cfg.train.stage1_iterations, cfg.train.stage2_iterations)
    ckpt_dir = run_dir / "checkpoints"
    state, state_path = load_latest_checkpoint(ckpt_dir) if ckpt_dir.exists() else (None, None)
    if state is None and init_from is not None:
        state, state_path = _stage1_state(Path(init_from), stages)
    start = int(state["iteration"]) if state else 0
    train_loader, val_loader, val_ds = get_dataflow(cfg, stages.total, start_iter=start)
    segmentor, refiner = _build_models(cfg, device, base_weights, val_ds.num_classes)
    lr = scaled_lr(cfg)
    opt = build_optimizer([p for p in refiner.denoiser.parameters() if p.requires_grad], cfg, lr)
    ema = (
        EMAHandler(refiner.denoiser, momentum=cfg.train.ema_momentum)
        if cfg.train.ema and stages.stage2
        else None
    )
    if state:
        check_signature(state.get("model_signature"), refiner, state_path)
        refiner.denoiser.load_state_dict(state["denoiser"])
        opt.load_state_dict(state["optimizer"])
        if ema is not None:
            # A stage-1 state has no EMA yet: EMA starts from the stage-1 weights, as in an unshared run.
            ema.ema_model.load_state_dict(state["ema"] if state.get("ema") is not None else state["denoiser"])
    if idist.get_world_size() > 1:
        refiner.denoiser = idist.auto_model(refiner.denoiser)

    trainer = create_refiner_trainer(refiner, opt, cfg, device, lr, stages)
    _resume_at(trainer, start, stages.total)
    if ema is not None:
        s1, every = stages.stage1, max(1, cfg.train.ema_interval)

        @trainer.on(Events.ITERATION_COMPLETED(event_filter=lambda _, i: i == s1))
        def _start_ema(_: Engine) -> None:  # EMA tracks stage 2 only: restart it from the stage-1 weights
            ema.ema_model.load_state_dict(_unwrap(refiner.denoiser).state_dict())

        ema.attach(
            trainer,
            name="ema_momentum",
            event=Events.ITERATION_COMPLETED(event_filter=lambda _, i: i > s1 and (i - s1) % every == 0),
        )

    def _save(engine: Engine) -> None:
        if idist.get_rank() == 0:
            save_checkpoint(
                ckpt_dir,
                engine.state.iteration,
                _refiner_state(_Unwrapped(refiner), ema, opt, engine.state.iteration),
            )

    if cfg.train.eval_every > 0:
        _attach_refiner_curve(trainer, refiner, segmentor, ema, cfg, stages, run_dir, val_ds, device)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=max(1, cfg.train.checkpoint_every)), _save)
    if stop_after is not None:
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED(event_filter=lambda _, i: i == stop_after), lambda e: e.terminate()
        )
    attach_logging(trainer, run_dir, cfg, progress, "refiner")
    if start < stages.total:
        try:
            trainer.run(train_loader, max_epochs=1, epoch_length=stages.total)
        except NanLossError as e:
            last = _checkpoint_files(ckpt_dir)
            raise NanLossError(
                f"{e}; training stopped. The last good checkpoint is {last[0] if last else 'none'} "
                f"(lower optim.lr or set optim.grad_clip)"
            ) from None
        if stop_after is not None and trainer.state.iteration < stages.total:
            _save(trainer)
            return {"interrupted_at": trainer.state.iteration}
        _save(trainer)
    train_time = time.time() - t0

    if ema is not None:
        _unwrap(refiner.denoiser).load_state_dict(ema.ema_model.state_dict())
    refiner.denoiser = _unwrap(refiner.denoiser)
    results: dict[str, Any] = {
        "train_time_s": round(train_time, 2),
        "params_base": sum(p.numel() for p in segmentor.parameters()),
        "params_refiner": sum(p.numel() for p in refiner.denoiser.parameters()),
    }
    if evaluate_at_end:
        results.update(evaluate_models(refiner, segmentor, cfg, val_loader, val_ds, device))
    results["wall_time_s"] = round(time.time() - t0, 2)
    results["config_hash"] = config_hash(cfg)
    if idist.get_rank() == 0:
        atomic_write_text(metrics_path, json.dumps(results, indent=1))
    return results


def _attach_refiner_curve(
    trainer: Engine,
    refiner: nn.Module,
    segmentor: nn.Module,
    ema: EMAHandler | None,
    cfg: ExperimentConfig,
    stages: Stages,
    run_dir: Path,
    val_ds: Dataset,
    device: torch.device,
) -> None:
    """Learning curve of a refiner training (`diffseg.curves`): base, first-step and final-step mIoU."""
    from diffseg import curves

    loader = curves.subset_loader(cfg, val_ds, idist.get_rank(), idist.get_world_size())

    def _point(it: int) -> tuple[int, dict[str, float]]:
        stage = stages.stage_of(it - 1)
        wrapped = refiner.denoiser
        denoiser = _unwrap(wrapped)
        refiner.denoiser = denoiser  # inference calls the bare module's methods; no gradient sync is needed
        training_weights = None
        if ema is not None and stage == 2:  # evaluate what the final evaluation will: the EMA weights
            training_weights = {k: v.detach().clone() for k, v in denoiser.state_dict().items()}
            denoiser.load_state_dict(ema.ema_model.state_dict())
        ecfg = curves.eval_config(cfg, stage)
        try:
            with torch.no_grad():  # only the two steps a point records are upsampled and scored
                res = evaluate_models(refiner, segmentor, ecfg, loader, val_ds, device, steps="ends")
        finally:
            if training_weights is not None:
                denoiser.load_state_dict(training_weights)
            refiner.denoiser = wrapped
        refined = res["refined"]
        return stage, {
            "base": res["base"]["mIoU"],
            "first_step": refined[0]["mIoU"],
            "final_step": refined[-1]["mIoU"],
        }

    curves.attach(trainer, run_dir, cfg.train.eval_every, stages.total, _point, idist.get_rank() == 0)


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    if not src.exists():
        raise FileNotFoundError(f"base segmentor weights {src} do not exist")
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def evaluate_models(
    refiner: nn.Module | None,
    segmentor: nn.Module,
    cfg: ExperimentConfig,
    val_loader: DataLoader,
    val_ds: Dataset,
    device: torch.device,
    multi_scale: bool | None = None,
    steps: str = "all",
) -> dict[str, Any]:
    """Run the evaluator over ``val_loader`` and return {"base":..., "refined": [...], "t": [...]}."""
    ms = cfg.eval.multi_scale if multi_scale is None else multi_scale
    evaluator = create_evaluator(
        refiner,
        segmentor,
        cfg,
        val_ds.num_classes,
        metric_ignore_index(val_ds),
        device,
        multi_scale=ms,
        seed=cfg.seed,
        steps=steps,
    )
    if refiner is not None:
        refiner.eval()
    evaluator.run(val_loader)
    return evaluator.state.results


class _Unwrapped:
    """A view of the refiner whose ``denoiser`` is the bare module (DDP stripped) for checkpointing."""

    def __init__(self, refiner: nn.Module) -> None:
        self._r = refiner

    def __getattr__(self, name: str) -> Any:
        if name == "denoiser":
            return _unwrap(self._r.denoiser)
        return getattr(self._r, name)


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def _parallel_worker(local_rank: int, cfg: ExperimentConfig, run_dir: str, kwargs: dict[str, Any]) -> None:
    training(cfg, run_dir, **kwargs)


def run(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    nproc_per_node: int | None = None,
    backend: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """``training`` under ``idist.Parallel``: in this process, in N spawned processes, or under torchrun.

    With ``nproc_per_node`` (or a ``backend``), N processes are spawned here; under ``torchrun`` the environment
    already describes the group and ``idist.Parallel`` joins it. Returns rank 0's metrics (``metrics.json``).
    """
    launched = "WORLD_SIZE" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if nproc_per_node is None and backend is None and not launched:
        return training(cfg, run_dir, **kwargs)
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    with idist.Parallel(backend=backend, nproc_per_node=None if launched else nproc_per_node) as parallel:
        parallel.run(_parallel_worker, cfg, str(run_dir), kwargs)
    metrics = Path(run_dir) / "metrics.json"
    return json.loads(metrics.read_text()) if metrics.exists() else {}


def load_refiner_from_run(
    run_dir: str | Path, device: torch.device | str = "cpu"
) -> tuple[ExperimentConfig, nn.Module, nn.Module]:
    """Config, refiner (EMA weights when the run used EMA) and segmentor of a finished or interrupted run."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a diffseg run folder (no config.yaml); train one first")
    cfg = load_config(run_dir / "config.yaml")
    device = torch.device(device)
    state, path = load_latest_checkpoint(run_dir / "checkpoints")
    if state is None:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'} holds no readable checkpoint")
    base_weights = cfg.segmentor.weights
    if base_weights is None and (run_dir / "base.safetensors").exists():
        base_weights = str(run_dir / "base.safetensors")
    from diffseg.data import build_dataset

    num_classes = build_dataset(cfg.data, "val", train=False).num_classes
    segmentor, refiner = _build_models(cfg, device, base_weights, num_classes)
    check_signature(state.get("model_signature"), refiner, path)
    refiner.denoiser.load_state_dict(state["ema"] if state.get("ema") is not None else state["denoiser"])
    refiner.eval()
    return cfg, refiner, segmentor


__all__ = [
    "IterationSampler",
    "NanLossError",
    "create_base_trainer",
    "create_evaluator",
    "create_refiner_trainer",
    "evaluate_models",
    "get_dataflow",
    "load_refiner_from_run",
    "predict",
    "run",
    "train_base_segmentor",
    "training",
]
