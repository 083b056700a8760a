"""A refiner run: stage 1 and 2 (or one stage), resumable, with its learning curve; ``run`` under
``idist.Parallel``; loading a finished run."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from torch import nn
from torch.utils.data import Dataset

from diffseg.atomic import atomic_write_text
from diffseg.config import ConfigError, ExperimentConfig, config_hash, load_config, replace
from diffseg.engines import best_val, rng_state
from diffseg.engines.base_training import train_base_segmentor
from diffseg.engines.checkpoints import (
    check_signature,
    checkpoint_files,
    load_latest_checkpoint,
    refiner_state,
    save_checkpoint,
)
from diffseg.engines.common import (
    STREAM_REFINER_INIT,
    NanLossError,
    Unwrapped,
    iteration_seed,
    resolve_device,
    unwrap,
)
from diffseg.engines.dataflow import get_dataflow
from diffseg.engines.evaluation import evaluate_models
from diffseg.engines.run_folder import link_or_copy, owned_run_folder, resolved_run_dir
from diffseg.engines.run_log import attach_logging, record_attempt
from diffseg.engines.schedule import Stages, build_optimizer, scaled_lr
from diffseg.engines.trainers import create_refiner_trainer, resume_at

log = logging.getLogger("diffseg")


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


def build_models(cfg: ExperimentConfig, device: torch.device, base_weights: str | None, num_classes: int):
    from diffseg.models import build_refiner
    from diffseg.segmentors import build_segmentor

    segmentor = build_segmentor(cfg.segmentor.name, num_classes, weights=base_weights, frozen=True).to(device)
    torch.manual_seed(iteration_seed(cfg.seed, 0, STREAM_REFINER_INIT))
    refiner = build_refiner(cfg, segmentor).to(device)
    return segmentor, refiner


def check_base_weights(cfg: ExperimentConfig, base_weights: str | None = None) -> None:
    """Refuse a config whose frozen base would keep its random initialisation (no weights, no base training, and
    ``segmentor.random_init`` not set): it would train and report a refiner of noise features without any error.
    A weights file that does not exist is refused here too, before any work, with the zoo folder it comes from."""
    from diffseg.segmentors.weights import is_state_file
    from diffseg.segmentors.zoo import CHECKPOINTS_ENV, missing_checkpoints

    weights = cfg.segmentor.weights
    if base_weights is None and weights is None and cfg.segmentor.train_iterations == 0:
        if cfg.segmentor.random_init:
            return
        raise ConfigError(
            f"segmentor.weights is unset and segmentor.train_iterations is 0: the frozen base "
            f"'{cfg.segmentor.name}' would keep its random initialisation; set segmentor.weights (a hub id, a "
            f"folder or a state-dict file) or segmentor.train_iterations > 0"
        )
    if base_weights is None and weights is not None and is_state_file(weights):
        missing = missing_checkpoints([weights])
        if missing:
            raise ConfigError(
                f"segmentor.weights: base checkpoint {missing[0]} does not exist; download it there, or set "
                f"${CHECKPOINTS_ENV} to the folder that holds the mmseg zoo files"
            )


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
    check_base_weights(cfg, base_weights)  # before a run folder exists
    # One owner at a time: a second sweep (or a requeued job) waits here, then finds metrics.json and returns it.
    with owned_run_folder(run_dir):
        return _owned_training(
            cfg, run_dir, progress, allow_config_change, evaluate_at_end, stop_after, base_weights, init_from
        )


def _owned_training(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    progress: bool,
    allow_config_change: bool,
    evaluate_at_end: bool,
    stop_after: int | None,
    base_weights: str | None,
    init_from: str | Path | None,
) -> dict[str, Any]:
    """`training` in a run folder this process owns."""
    run_dir = resolved_run_dir(run_dir, cfg, allow_config_change)
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        log.info("%s is complete; returning its metrics", run_dir)
        return json.loads(metrics_path.read_text())
    device = resolve_device(cfg.device)
    t0 = time.time()

    if base_weights is not None:
        link_or_copy(Path(base_weights), run_dir / "base.safetensors")
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
    segmentor, refiner = build_models(cfg, device, base_weights, val_ds.num_classes)
    lr = scaled_lr(cfg)
    opt = build_optimizer([p for p in refiner.denoiser.parameters() if p.requires_grad], cfg, lr)
    ema = (
        EMAHandler(refiner.denoiser, momentum=cfg.train.ema_momentum)
        if cfg.train.ema and stages.stage2
        else None
    )
    if state:
        check_signature(state.get("model_signature"), refiner, state_path)
        if device.type == "cpu":
            rng_state.warn_on_thread_change(state.get("num_threads"), str(state_path))
        refiner.denoiser.load_state_dict(state["denoiser"])
        opt.load_state_dict(state["optimizer"])
        if ema is not None:
            # A stage-1 state has no EMA yet: EMA starts from the stage-1 weights, as in an unshared run.
            ema.ema_model.load_state_dict(state["ema"] if state.get("ema") is not None else state["denoiser"])
    if cfg.train.compile:
        refiner.denoiser.compile()  # in place: state-dict keys (EMA, checkpoints) unchanged; the base stays eager
    if idist.get_world_size() > 1:
        refiner.denoiser = idist.auto_model(refiner.denoiser)

    trainer = create_refiner_trainer(refiner, opt, cfg, device, lr, stages)
    resume_at(trainer, start, stages.total)
    if ema is not None:
        s1, every = stages.stage1, max(1, cfg.train.ema_interval)

        @trainer.on(Events.ITERATION_COMPLETED(event_filter=lambda _, i: i == s1))
        def _start_ema(_: Engine) -> None:  # EMA tracks stage 2 only: restart it from the stage-1 weights
            ema.ema_model.load_state_dict(unwrap(refiner.denoiser).state_dict())

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
                refiner_state(Unwrapped(refiner), ema, opt, engine.state.iteration),
            )

    if cfg.train.eval_every > 0:
        _attach_refiner_curve(trainer, refiner, segmentor, ema, cfg, stages, run_dir, val_ds, device)
    attach_logging(trainer, run_dir, cfg, progress, "refiner")
    # After the EMA update, curve point and log row of its iteration: a run killed before the checkpoint redoes
    # them from the previous one (the log drops the rows past it), a run killed after it has them all.
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=max(1, cfg.train.checkpoint_every)), _save)
    if stop_after is not None:
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED(event_filter=lambda _, i: i == stop_after), lambda e: e.terminate()
        )
    if start < stages.total:
        record_attempt(run_dir, "refiner", start, stages.total)
        try:
            trainer.run(train_loader, max_epochs=1, epoch_length=stages.total)
        except NanLossError as e:
            last = checkpoint_files(ckpt_dir)
            hint = "lower optim.lr" if cfg.optim.grad_clip else "lower optim.lr or set optim.grad_clip"
            raise NanLossError(
                f"{e}; training stopped ({hint}). The newest checkpoint is "
                f"{last[0] if last else 'none'}; weights may have diverged before the loss did, so resume from an "
                f"earlier one if it fails again"
            ) from None
        if stop_after is not None and trainer.state.iteration < stages.total:
            _save(trainer)
            return {"interrupted_at": trainer.state.iteration}
        _save(trainer)
    train_time = time.time() - t0

    if ema is not None:
        unwrap(refiner.denoiser).load_state_dict(ema.ema_model.state_dict())
    refiner.denoiser = unwrap(refiner.denoiser)
    results: dict[str, Any] = {
        "train_time_s": round(train_time, 2),
        "params_base": sum(p.numel() for p in segmentor.parameters()),
        "params_refiner": sum(p.numel() for p in refiner.denoiser.parameters()),
    }
    if evaluate_at_end:
        results.update(evaluate_models(refiner, segmentor, cfg, val_loader, val_ds, device))
        if (
            cfg.eval.select == "best_val"
        ):  # the final weights' numbers stay; the selected ones come beside them
            weights, record = best_val.load_weights(run_dir)
            refiner.denoiser.load_state_dict(weights)
            results["best_val"] = {
                **record,
                **evaluate_models(refiner, segmentor, cfg, val_loader, val_ds, device),
            }
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
        denoiser = unwrap(wrapped)
        refiner.denoiser = denoiser  # inference calls the bare module's methods; no gradient sync is needed
        training_weights = None
        if ema is not None and stage == 2:  # evaluate what the final evaluation will: the EMA weights
            training_weights = {k: v.detach().clone() for k, v in denoiser.state_dict().items()}
            denoiser.load_state_dict(ema.ema_model.state_dict())
        ecfg = curves.eval_config(cfg, stage)
        strict = None
        try:
            with torch.no_grad():  # only the steps a point records are upsampled and scored
                res = evaluate_models(refiner, segmentor, ecfg, loader, val_ds, device, steps="ends")
                if curves.records_strict(ecfg):  # finding 3's contrast at equal evaluations, per point
                    ecfg = replace(ecfg, eval=replace(ecfg.eval, sampler="strict"))
                    strict = evaluate_models(refiner, segmentor, ecfg, loader, val_ds, device, steps="last")
            last_stage = 2 if stages.stage2 else 1
            if cfg.eval.select == "best_val" and stage == last_stage and idist.get_rank() == 0:
                best_val.offer(run_dir, it, res["refined"][-1]["mIoU"], denoiser.state_dict())
        finally:
            if training_weights is not None:
                denoiser.load_state_dict(training_weights)
            refiner.denoiser = wrapped
        refined = res["refined"]
        values = {
            "base": res["base"]["mIoU"],
            "first_step": refined[0]["mIoU"],
            "final_step": refined[-1]["mIoU"],
        }
        if strict is not None:
            values["strict_final_step"] = strict["refined"][-1]["mIoU"]
        return stage, values

    curves.attach(trainer, run_dir, cfg.train.eval_every, stages.total, _point, idist.get_rank() == 0)


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
    run_dir: str | Path, device: torch.device | str = "cpu", weights: str = "final"
) -> tuple[ExperimentConfig, nn.Module, nn.Module]:
    """Config, refiner and segmentor of a finished or interrupted run. ``weights``: ``"final"`` (the newest
    checkpoint's EMA weights when the run used EMA) or ``"best_val"`` (`diffseg.engines.best_val`)."""
    if weights not in ("final", "best_val"):
        raise ValueError(f"weights must be 'final' or 'best_val', got {weights!r}")
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
    segmentor, refiner = build_models(cfg, device, base_weights, num_classes)
    check_signature(state.get("model_signature"), refiner, path)
    if weights == "best_val":
        refiner.denoiser.load_state_dict(best_val.load_weights(run_dir)[0])
    else:
        refiner.denoiser.load_state_dict(state["ema"] if state.get("ema") is not None else state["denoiser"])
    refiner.eval()
    return cfg, refiner, segmentor
