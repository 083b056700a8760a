"""Running one arm: base segmentor, shared stage 1 and its own training (each reused or resumed), then the
evaluations the results store lacks, its learning curves and latencies written as rows."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from diffseg.config import ExperimentConfig, config_hash
from diffseg.engines.run_lock import hold
from diffseg.results import ResultsStore, git_commit, metrics_to_rows
from diffseg.study.ablation import ABLATION_COLUMN
from diffseg.study.arms import Arm, EvalSpec
from diffseg.study.identity import (
    base_run_id,
    base_weights_path,
    eval_id,
    evaluation_config,
    is_two_stage,
    stage1_config,
    train_id,
)
from diffseg.study.store import open_store, runs_folder


def train_base(cfg: ExperimentConfig, runs: Path, progress: bool = False) -> str | None:
    """Train (or reuse) the base segmentor of ``cfg``; None when the config brings its own weights."""
    from diffseg.engines import train_base_segmentor

    if cfg.segmentor.weights is not None or cfg.segmentor.train_iterations <= 0:
        return None
    return str(train_base_segmentor(cfg, base_weights_path(cfg, runs), progress=progress))


def train_stage1(cfg: ExperimentConfig, runs: Path, progress: bool = False) -> Path | None:
    """Train (or reuse) the shared stage 1 of a two-stage config; None for one-stage configs."""
    from diffseg.engines import training

    if cfg.train.stage1_iterations <= 0 or cfg.train.stage2_iterations <= 0:
        return None
    s1 = stage1_config(cfg)
    run_dir = runs / "stage1" / train_id(s1)
    training(
        s1, run_dir, progress=progress, evaluate_at_end=False, base_weights=train_base(cfg, runs, progress)
    )
    return run_dir


def ensure_trained(cfg: ExperimentConfig, runs: Path, progress: bool = False) -> tuple[Path, dict[str, Any]]:
    """Base segmentor -> shared stage 1 -> this config's training; each step reused or resumed when present."""
    from diffseg.engines import training

    run_dir = runs / train_id(cfg)
    base = train_base(cfg, runs, progress)
    stage1 = None if (run_dir / "metrics.json").exists() else train_stage1(cfg, runs, progress)
    res = training(
        cfg, run_dir, progress=progress, evaluate_at_end=False, base_weights=base, init_from=stage1
    )
    return run_dir, res


def missing_rows(arm: Arm, experiment: str, store: ResultsStore) -> list[tuple[str, EvalSpec]]:
    ids = [eval_id(arm.cfg, spec, experiment, arm.labels) for spec in arm.evals]
    missing = [(i, s) for i, s in zip(ids, arm.evals) if not store.has(i)]
    if arm.artifacts and not store.has_artifacts(ids[0]):
        missing = missing or [(ids[0], arm.evals[0])]
    return missing


def run_or_load(
    arm: Arm, experiment: str, profile: str, results_dir: str | Path = "results", progress: bool = False
) -> list[str]:
    """Evaluate ``arm`` where the store lacks it (training or resuming only what is needed); return its run ids."""
    store = open_store(results_dir, profile)
    ids = [eval_id(arm.cfg, spec, experiment, arm.labels) for spec in arm.evals]
    if not missing_rows(arm, experiment, store):
        return ids
    # One evaluator per arm at a time: a second sweep waits for the first, then finds its rows in the store.
    with hold(runs_folder(results_dir, profile) / "locks" / f"eval-{ids[0]}.lock"):
        missing = missing_rows(arm, experiment, store)
        if missing:
            _evaluate(arm, experiment, profile, results_dir, progress, store, ids, missing)
    return ids


def _evaluate(
    arm: Arm,
    experiment: str,
    profile: str,
    results_dir: str | Path,
    progress: bool,
    store: ResultsStore,
    ids: list[str],
    missing: list[tuple[str, EvalSpec]],
) -> None:
    """`run_or_load`'s work, with the arm's lock held: train what is needed, write the ``missing`` rows."""
    from diffseg.engines import evaluate_models, get_dataflow, load_refiner_from_run

    cfg = arm.cfg
    t0 = time.time()
    run_dir, train_res = ensure_trained(cfg, runs_folder(results_dir, profile), progress)
    _, refiner, segmentor = load_refiner_from_run(run_dir, cfg_device(cfg))
    device = next(refiner.parameters()).device
    for rid, spec in missing:
        ecfg = evaluation_config(cfg, spec)
        _, val_loader, val_ds = get_dataflow(ecfg, 0)
        te = time.time()
        res = evaluate_models(refiner, segmentor, ecfg, val_loader, val_ds, device)
        labels = {**arm.labels, **dict(spec.labels)}
        rows = metrics_to_rows(res, val_ds.class_names, test=spec.test, last_only=spec.last_only)
        if ecfg.eval.select == "best_val":
            rows += _best_val_rows(refiner, segmentor, ecfg, val_loader, val_ds, device, run_dir, spec)
        if arm.latency:
            rows += _latency_rows(refiner, segmentor, ecfg, val_ds, device, len(res["refined"]))
        for r in rows:
            r.update(labels)
        store.write_rows(
            rid,
            rows,
            {
                "experiment": experiment,
                "dataset": cfg.data.dataset,
                "segmentor": cfg.segmentor.name,
                "seed": cfg.seed,
                "profile": profile,
                "train_id": train_id(cfg),
                "sampler": ecfg.eval.sampler,
                "num_evals": ecfg.eval.num_evals,
                "num_steps": cfg.diffusion.num_steps,
                "params_base": int(train_res.get("params_base", 0)),
                "params_refiner": int(train_res.get("params_refiner", 0)),
                "train_time_s": float(train_res.get("train_time_s", 0.0)),
                "eval_time_s": round(time.time() - te, 2),
                "wall_time_s": round(time.time() - t0, 2),
                "device": str(device),
                "git_commit": git_commit(),
                "config_hash": config_hash(ecfg),
            }
            | {k: v for k, v in labels.items() if k != "arm"}
            | {"arm": labels.get("arm", "")},
        )
        if arm.artifacts and rid == ids[0]:
            from diffseg.artifacts import make_artifacts

            store.save_artifacts(rid, make_artifacts(refiner, segmentor, ecfg, val_ds, device))
    # once per training, not per evaluation: the curves belong to the training all of these rows share
    ablation = arm.labels.get(ABLATION_COLUMN, "")
    _store_curves(cfg, run_dir, runs_folder(results_dir, profile), store, profile, str(device), ablation)


def _best_val_rows(
    refiner, segmentor, ecfg, val_loader, val_ds, device, run_dir: Path, spec: EvalSpec
) -> list:
    """Rows of the weights kept at the best learning-curve point (``eval.select=best_val``), labelled with
    ``method = "refined (best val)"`` and the iteration they come from; the final weights' rows stay beside them."""
    from diffseg.engines import best_val, evaluate_models

    final = {k: v.clone() for k, v in refiner.denoiser.state_dict().items()}
    weights, record = best_val.load_weights(run_dir)
    refiner.denoiser.load_state_dict(weights)
    try:
        res = evaluate_models(refiner, segmentor, ecfg, val_loader, val_ds, device)
    finally:
        refiner.denoiser.load_state_dict(final)
    rows = metrics_to_rows(res, val_ds.class_names, test=spec.test, last_only=spec.last_only)
    rows = [r for r in rows if r["method"] == "refined"]  # the base rows are the final evaluation's
    for r in rows:
        r.update(method=best_val.BEST_METHOD, selected_iteration=int(record["iteration"]))
    return rows


def _store_curves(
    cfg: ExperimentConfig,
    run_dir: Path,
    runs: Path,
    store: ResultsStore,
    profile: str,
    device: str,
    ablation: str = "",
) -> None:
    """Copy the learning curves of ``cfg``'s training (stage 1 + its own) and of its base into the store.

    An ablation's copies carry its id (column and file name), so they never enter the default study's curves
    even where the training is shared with it.

    Rows: ``experiment`` "learning_curves", ``method`` "curve", ``test`` "curve", ``step`` the training
    iteration, ``curve`` base | first_step | final_step | strict_final_step (`diffseg.curves`), ``trained``
    refiner | base, ``stage`` 0 (base) / 1 / 2.
    """
    from diffseg import curves

    if cfg.train.eval_every <= 0:
        return
    common = {
        "experiment": "learning_curves",
        "dataset": cfg.data.dataset,
        "segmentor": cfg.segmentor.name,
        "profile": profile,
        "device": device,
        "git_commit": git_commit(),
        "eval_every": cfg.train.eval_every,
    } | ({ABLATION_COLUMN: ablation} if ablation else {})
    suffix = f"-{ablation}" if ablation else ""
    refiner_dirs = ([runs / "stage1" / train_id(stage1_config(cfg))] if is_two_stage(cfg) else []) + [run_dir]
    parts: list[tuple[str, str, list[tuple[Path, str]], dict[str, Any]]] = [
        (
            f"curve-{train_id(cfg)}{suffix}",
            "refiner",
            [(d, curves.CURVE_FILE) for d in refiner_dirs],
            {"seed": cfg.seed, "train_id": train_id(cfg)},
        )
    ]
    if cfg.segmentor.weights is None and cfg.segmentor.train_iterations > 0:
        base_file = (base_weights_path(cfg, runs).parent, curves.BASE_CURVE_FILE)
        parts.append(
            (f"curve-base-{base_run_id(cfg)}{suffix}", "base", [base_file], {"seed": cfg.segmentor.seed})
        )
    for key, trained, files, extra in parts:
        if store.has(key):
            continue
        frame = pd.concat([curves.read(d, name) for d, name in files], ignore_index=True)
        if frame.empty:
            continue
        rows = [
            {
                "method": "curve",
                "step": int(r.iteration),
                "t": 0,
                "test": "curve",
                "metric": "mIoU",
                "class_name": "",
                "value": float(r.value),
                "curve": str(r.curve),
                "stage": int(r.stage),
            }
            for r in frame.drop_duplicates(["iteration", "curve"], keep="last").itertuples()
        ]
        store.write_rows(key, rows, {**common, **extra, "trained": trained})


def _latency_rows(
    refiner, segmentor, cfg: ExperimentConfig, dataset, device: torch.device, last_step: int
) -> list[dict[str, Any]]:
    """Median per-image latency (ms, batch 1) of the base alone and of base + refiner with this eval's sampler."""
    from diffseg.benchmarking import base_latency, refine_latency

    image = dataset[0]["image"][None].to(device)
    base_ms = base_latency(segmentor, image, repeats=5)
    ref_ms = refine_latency(refiner, image, cfg.eval.sampler, cfg.eval.num_evals, repeats=5)
    common = {"test": "ss", "metric": "latency_ms", "class_name": ""}
    return [
        {**common, "method": "base", "step": 0, "t": 0, "value": base_ms},
        {**common, "method": "refined", "step": last_step, "t": 0, "value": ref_ms},
    ]


def cfg_device(cfg: ExperimentConfig) -> torch.device:
    from diffseg.engines import resolve_device

    return resolve_device(cfg.device)
