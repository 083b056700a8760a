"""The ignite evaluator: one pass over a split scores the base and every collected step of the refiner
(the predictions themselves come from ``diffseg.prediction``)."""

from __future__ import annotations

from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn
from torch.utils.data import DataLoader, Dataset

from diffseg.config import ExperimentConfig
from diffseg.engines.common import STREAM_EVAL, image_seed, make_generator, to_device
from diffseg.engines.dataflow import metric_ignore_index
from diffseg.metrics import SegMetrics, all_reduce_
from diffseg.prediction import predict


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
        batch = to_device(batch, device)
        # One generator per image, keyed by its id: an image's sampling noise is the same whatever the batch
        # size, the number of processes and the subset (curve points score the first images of the split).
        gens = [make_generator(image_seed(seed, STREAM_EVAL, item_id), device) for item_id in batch["id"]]
        base, collected = predict(refiner, segmentor, batch, cfg, gens, multi_scale, steps)
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
