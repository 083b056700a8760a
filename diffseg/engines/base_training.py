"""Training the base segmentor from scratch (the synthetic profiles' frozen bases), with its learning curve."""

from __future__ import annotations

from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

from diffseg.config import ExperimentConfig
from diffseg.engines import rng_state
from diffseg.engines.checkpoints import load_latest_checkpoint, save_checkpoint
from diffseg.engines.common import STREAM_BASE_INIT, iteration_seed, resolve_device
from diffseg.engines.dataflow import get_dataflow
from diffseg.engines.evaluation import evaluate_models
from diffseg.engines.run_folder import owned_run_folder
from diffseg.engines.run_log import attach_logging, record_attempt
from diffseg.engines.trainers import create_base_trainer, resume_at


def train_base_segmentor(
    cfg: ExperimentConfig,
    out_path: Path,
    progress: bool = True,
    device: torch.device | None = None,
    stop_after: int | None = None,
) -> Path:
    """Job (a): train the base segmentor of ``cfg`` from scratch and save it to ``out_path`` (safetensors).

    Resumable through ``out_path.parent / 'base_checkpoints'``; returns the weights path (reused when present).
    ``stop_after`` ends the training after that iteration (its learning-curve point and checkpoint written, the
    schedule still the full one's) without saving weights: `diffseg verify` re-trains a base only up to its first
    curve point.
    """
    out_path = Path(out_path)
    if out_path.exists():
        return out_path
    # One owner at a time (re-entrant: a refiner run folder that trains its own base holds it already).
    with owned_run_folder(out_path.parent):
        if not out_path.exists():  # another owner may have finished it while this one waited
            _train_base(cfg, out_path, progress, device, stop_after)
    return out_path


def _train_base(
    cfg: ExperimentConfig,
    out_path: Path,
    progress: bool,
    device: torch.device | None,
    stop_after: int | None = None,
) -> None:
    """`train_base_segmentor` in a folder this process owns."""
    from diffseg.config import replace
    from diffseg.segmentors import build_segmentor, save_segmentor

    # The base has its own seed: a study's seeds vary the refiner on top of one fixed base, as with a published one.
    cfg = replace(cfg, seed=cfg.segmentor.seed)
    device = device or resolve_device(cfg.device)
    iters = cfg.segmentor.train_iterations
    ckpt_dir = out_path.parent / "base_checkpoints"
    state, state_path = load_latest_checkpoint(ckpt_dir) if ckpt_dir.exists() else (None, None)
    start = int(state["iteration"]) if state else 0
    train_loader, _, val_ds = get_dataflow(cfg, iters, start_iter=start, seed_offset=17)
    torch.manual_seed(iteration_seed(cfg.seed, 0, STREAM_BASE_INIT))
    seg = build_segmentor(cfg.segmentor.name, val_ds.num_classes, weights=None, frozen=False).to(device)
    lr = cfg.segmentor.lr * cfg.data.batch_size / cfg.optim.reference_batch  # the global batch
    # the multi-tensor path, as the refiner's (`schedule.build_optimizer`): the same numbers, fewer ops
    opt = torch.optim.AdamW(seg.parameters(), lr=lr, weight_decay=cfg.segmentor.weight_decay, foreach=True)
    if state:
        seg.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    trainer = create_base_trainer(seg, opt, cfg, device, lr, iters)
    resume_at(trainer, start, iters)
    # The step draws SegFormer's dropout / drop-path from torch's global stream (no per-iteration seed, so that
    # uninterrupted bases stay as they were): a resumed base puts back the streams its checkpoint saved.
    saved_rng = state.get("rng") if state else None
    rng_state.restore_before_first_step(trainer, start, saved_rng, str(state_path), device.type == "cpu")

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

    every = max(1, cfg.train.checkpoint_every)

    # Attached last: the checkpoint of iteration k is taken after k's log row, curve point and random draws, so a
    # run killed before it redoes them from the previous one and a run killed after it has them all.
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
                    "rng": rng_state.capture(),
                },
            )

    if stop_after is not None:  # registered last: the point and checkpoint of that iteration come first
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED(event_filter=lambda _, i: i == stop_after), lambda e: e.terminate()
        )
    if start < iters:
        record_attempt(out_path.parent, "base", start, iters)
        trainer.run(train_loader, max_epochs=1, epoch_length=iters)
    if stop_after is not None and stop_after < iters:
        return  # stopped early on purpose (`diffseg verify`): no weights to save
    seg.freeze()
    if idist.get_rank() == 0:
        save_segmentor(seg, out_path)
    idist.barrier()
