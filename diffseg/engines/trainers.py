"""The ignite trainers: one ``Engine`` per training step function (base segmentor; refiner, both stages)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import ignite.distributed as idist
import torch
import torch.nn.functional as F
from ignite.engine import Engine
from torch import nn

from diffseg.config import ExperimentConfig
from diffseg.engines.common import (
    STREAM_GLOBAL,
    STREAM_REFINER,
    NanLossError,
    autocast_context,
    iteration_seed,
    make_generator,
    to_device,
)
from diffseg.engines.schedule import Stages, attach_lr_schedule


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
        model.train()
        batch = to_device(batch, device, cfg.train.channels_last)
        with autocast_context(device, cfg.train.amp):
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

    trainer = Engine(step)
    attach_lr_schedule(trainer, optimizer, lr, cfg, lambda it: (0, total_iters))
    return trainer


def global_pixel_mean(loss_sum: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """This rank's share of the loss averaged over the valid pixels of *all* ranks' batches.

    DDP averages gradients over ranks; scaled by the world size, the sum over ranks of ``loss_sum / total`` has the
    gradient of the one-process loss over the global batch (a per-rank mean would weight ranks, not pixels, equally).
    One scalar all-reduce per step; in one process, ``loss_sum / count``.
    """
    world = idist.get_world_size()
    if world == 1:
        return loss_sum / count.clamp_min(1)
    total = idist.all_reduce(count.detach().clone().float())
    return loss_sum * world / total.clamp_min(1)


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
        batch = to_device(batch, device, cfg.train.channels_last)
        # One generator per item, keyed by its position in the global batch: rank r's item j draws the timestep and
        # noise that item r * B + j draws in one process with the global batch.
        b = batch["image"].shape[0]
        first = idist.get_rank() * b
        gens = [
            make_generator(iteration_seed(cfg.seed, it, STREAM_REFINER, first + j), device) for j in range(b)
        ]
        # Modules that draw from torch's global RNG (the release head's Dropout2d, no generator argument) draw a
        # pure function of (seed, iteration, rank) too, so a resumed run replays them exactly.
        torch.manual_seed(iteration_seed(cfg.seed, it, STREAM_GLOBAL, idist.get_rank()))
        refiner.denoiser.train()
        single_step = stages.stage_of(it) == 1
        micro = cfg.train.micro_batch
        optimizer.zero_grad(set_to_none=True)
        # One pass over the whole batch: the path every stored run took, kept as it was so that their numbers
        # stay bit for bit (`_accumulate` sums the same loss in another order).
        if not micro or micro >= b:
            with autocast_context(device, cfg.train.amp):
                with torch.no_grad():
                    base = refiner.base_outputs(batch["image"])
                out = refiner.loss(
                    batch,
                    noise_object=cfg.refiner.noise_object,
                    single_step=single_step,
                    generator=gens,
                    base=base,
                )
            loss = global_pixel_mean(out["ce_sum"], out["valid"])
            _check_finite(loss, engine)
            loss.backward()
        else:
            out = _accumulate(refiner, batch, gens, micro, cfg, device, single_step, engine)
        if cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(refiner.denoiser.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        # The logged loss is this rank's batch mean (the global one in one process).
        return {
            "loss": out["loss"].item(),
            "lr": optimizer.param_groups[0]["lr"],
            "stage": stages.stage_of(it),
        }

    trainer = Engine(step)
    # a single-stage training (no stage 1) is all stage 2, and decays as one
    attach_lr_schedule(
        trainer, optimizer, lr, cfg, stages.bounds, lambda it: cfg.optim.decay_every[stages.stage_of(it) - 1]
    )
    return trainer


def _accumulate(
    refiner: nn.Module,
    batch: dict[str, Any],
    gens: list[torch.Generator],
    micro: int,
    cfg: ExperimentConfig,
    device: torch.device,
    single_step: bool,
    engine: Engine,
) -> dict[str, torch.Tensor]:
    """One step's gradient over this process's batch in micro-batches of ``micro`` images (``train.micro_batch``).

    Every item keeps its own generator and the loss is still normalised by the valid pixels of the whole global
    batch (counted from the masks before any forward pass), so the summed gradient is the one-pass gradient up to
    float summation order; the frozen base runs per micro-batch too (eval mode: items are independent). Under DDP
    the gradients are all-reduced once, on the last micro-batch. Returns the batch's ``loss`` (mean over its valid
    pixels, for the log)."""
    # here, not at the top: the models package imports transformers, which `diffseg.experiments` (every notebook's
    # first cell) must not pay for, nor its progress-bar import warning in a kernel
    from diffseg.models.refiner import IGNORE_INDEX

    b = batch["image"].shape[0]
    valid = (batch["mask"] != IGNORE_INDEX).sum()
    world = idist.get_world_size()
    total = idist.all_reduce(valid.detach().clone().float()) if world > 1 else valid
    ce = torch.zeros((), device=device)
    for lo in range(0, b, micro):
        part = {k: v[lo : lo + micro] for k, v in batch.items()}
        last = lo + micro >= b
        sync = nullcontext() if last or world == 1 else refiner.denoiser.no_sync()
        with sync, autocast_context(device, cfg.train.amp):
            out = refiner.loss(
                part,
                noise_object=cfg.refiner.noise_object,
                single_step=single_step,
                generator=gens[lo : lo + micro],
                base=refiner.base_outputs(part["image"]),
            )
            loss = out["ce_sum"] * world / total.clamp_min(1)
            _check_finite(loss, engine)
            loss.backward()
        ce = ce + out["ce_sum"].detach()
    return {"loss": ce / valid.clamp_min(1)}


def resume_at(trainer: Engine, start: int, total: int) -> None:
    """Make ``trainer.run`` continue at iteration ``start`` of one ``total``-iteration epoch.

    The state is restored through ignite's ``Engine.load_state_dict``; the loader's sampler already starts at
    ``start`` (``IterationSampler``), so nothing is skipped or replayed. (Model, optimiser and EMA states are
    restored from the checkpoint by the runner.)
    """
    if start > 0:
        trainer.load_state_dict({"iteration": start, "epoch_length": total, "max_epochs": 1})
