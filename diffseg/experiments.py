"""The study: every table and figure of paper.md as a named experiment, per profile.

An experiment is a list of arms; an arm is one training config (``ExperimentConfig``) plus the evaluations it needs
(``EvalSpec``: sampler, number of steps, single- or multi-scale). ``run_or_load`` evaluates an arm only when the
results store lacks it, training only when its run folder is not complete (and resuming it when interrupted).
Arms that share a training config share the trained model (e.g. every sampler of finding 3 reuses the main model),
and arms that share (dataset, base segmentor, seed) share the trained base segmentor.

Identity: a training is named by the hash of its config without the ``eval`` section; an evaluation (one file of
rows) by the hash of that and the evaluation settings. Rows carry their arm labels, so a table is a groupby.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from diffseg import profiles
from diffseg.config import ExperimentConfig, apply_overrides, config_hash, replace, to_dict
from diffseg.profiles import DATASETS, PROFILES, SEGMENTORS, data_config, profile_config
from diffseg.results import ResultsStore, git_commit, metrics_to_rows

log = logging.getLogger("diffseg")

__all__ = [
    "DATASETS", "EXPERIMENTS", "PROFILES", "PUBLISHED", "Arm", "EvalSpec", "Experiment", "data_config",
    "dataset_info", "load_artifacts", "load_results", "profile_notes", "run_experiment", "run_or_load",
]  # fmt: skip


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation of a trained arm: eval-section overrides, the test kind, and extra row labels."""

    overrides: tuple[tuple[str, Any], ...] = ()
    test: str = "ss"
    labels: tuple[tuple[str, str], ...] = ()
    last_only: bool = False


@dataclass
class Arm:
    """One ablation arm: its labels (table factors), training config and evaluations."""

    labels: dict[str, str]
    cfg: ExperimentConfig
    evals: list[EvalSpec] = field(default_factory=lambda: [EvalSpec()])
    artifacts: bool = False
    latency: bool = False  # also time base and base + refiner per image (rows with metric "latency_ms")


@dataclass
class Experiment:
    name: str
    title: str
    finding: str
    description: str
    arms: Callable[[str, tuple[str, ...], tuple[str, ...] | None, tuple[int, ...]], list[Arm]]
    default_seeds: dict[str, int]
    default_datasets: dict[str, tuple[str, ...]]


# ----------------------------------------------------------------------------------------------------------------
# arms


def _cfg(profile: str, dataset: str, segmentor: str | None, seed: int, **overrides: Any) -> ExperimentConfig:
    return apply_overrides(profile_config(profile, dataset, segmentor, seed), overrides)


def _one_stage(cfg: ExperimentConfig) -> dict[str, Any]:
    """Single-stage training with the same total iterations (the textbook setup, and an ablation arm)."""
    total = cfg.train.stage1_iterations + cfg.train.stage2_iterations
    return {"train.stage1_iterations": 0, "train.stage2_iterations": total}


def _segs(profile: str, segmentors: tuple[str, ...] | None) -> tuple[str, ...]:
    return tuple(segmentors) if segmentors else SEGMENTORS[profile]


def _main_arms(profile, datasets, segmentors, seeds) -> list[Arm]:
    arms = []
    for ds in datasets:
        for seg in _segs(profile, segmentors):
            for seed in seeds:
                cfg = _cfg(profile, ds, seg, seed)
                arms.append(
                    Arm(
                        {"arm": "DDPS"},
                        cfg,
                        [
                            EvalSpec(test="ss"),
                            EvalSpec(overrides=(("multi_scale", True),), test="ms", last_only=True),
                        ],
                    )
                )
    return arms


def _naive_arms(profile, datasets, segmentors, seeds) -> list[Arm]:
    arms = []
    seg = _segs(profile, segmentors)[0]
    for ds in datasets:
        for seed in seeds:
            base = _cfg(profile, ds, seg, seed)
            one = _one_stage(base)
            strict = (("sampler", "strict"),)
            arms += [
                Arm(
                    {"arm": "textbook: noise on GT, strict posterior, one stage"},
                    _cfg(profile, ds, seg, seed, **{"refiner.noise_object": "gt", **one}),
                    [EvalSpec(strict)],
                ),
                Arm(
                    {"arm": "textbook: Gaussian on analog bits, DDIM, one stage"},
                    _cfg(
                        profile,
                        ds,
                        seg,
                        seed,
                        **{"refiner.noise_object": "gt", "diffusion.kernel": "gaussian", **one},
                    ),
                    [EvalSpec(strict)],
                ),
                Arm({"arm": "DDPS: first prediction, free re-noising, two stages"}, base, [EvalSpec()]),
                # the same method trained in one stage: isolates what the two stages add (a key contrast)
                Arm(
                    {"arm": "DDPS: first prediction, free re-noising, one stage"},
                    _cfg(profile, ds, seg, seed, **one),
                    [EvalSpec()],
                ),
            ]
    return arms


NOISE_OBJECTS = ("gt", "base", "first")
KERNELS = ("uniform", "absorbing", "mask_replace", "gaussian")


def _noise_arms(profile, datasets, segmentors, seeds) -> list[Arm]:
    arms = []
    seg = _segs(profile, segmentors)[0]
    for ds in datasets:
        for seed in seeds:
            for obj in NOISE_OBJECTS:
                for kernel in KERNELS:
                    cfg = _cfg(
                        profile, ds, seg, seed, **{"refiner.noise_object": obj, "diffusion.kernel": kernel}
                    )
                    arms.append(Arm({"arm": f"{obj} / {kernel}", "noise_object": obj, "kernel": kernel}, cfg))
    return arms


SAMPLER_NAMES = ("strict", "free_renoise", "single_step")


def step_counts(num_steps: int) -> tuple[int, ...]:
    """The step grid sizes of finding 3 (1, 2, 5, 10, 20, 100 as the release), capped at T."""
    return tuple(n for n in (2, 5, 10, 20, 100) if n <= num_steps)


def _inference_arms(profile, datasets, segmentors, seeds) -> list[Arm]:
    arms = []
    seg = _segs(profile, segmentors)[0]
    for ds in datasets:
        for seed in seeds:
            cfg = _cfg(profile, ds, seg, seed)
            # sampler and num_evals reach the rows as provenance columns of each evaluation
            evals = [EvalSpec((("sampler", "single_step"), ("num_evals", 1)))]
            for sampler in ("strict", "free_renoise"):
                for n in step_counts(cfg.diffusion.num_steps):
                    evals.append(EvalSpec((("sampler", sampler), ("num_evals", n))))
            arms.append(Arm({"arm": "DDPS"}, cfg, evals))
    return arms


def _schedule_arms(profile, datasets, segmentors, seeds) -> list[Arm]:
    arms = []
    seg = _segs(profile, segmentors)[0]
    for ds in datasets:
        for seed in seeds:
            for schedule in ("linear", "cosine"):
                for T in (20, 50, 100):
                    cfg = _cfg(
                        profile, ds, seg, seed, **{"diffusion.schedule": schedule, "diffusion.num_steps": T}
                    )
                    arms.append(
                        Arm({"arm": f"{schedule}, T={T}", "schedule": schedule}, cfg)
                    )  # T: num_steps column
    return arms


def _condition_arms(profile, datasets, segmentors, seeds) -> list[Arm]:
    arms = []
    seg = _segs(profile, segmentors)[0]
    for ds in datasets:
        for seed in seeds:
            base = _cfg(profile, ds, seg, seed)
            default = {"condition": "features", "training": "two-stage", "ema": "on"}
            variants = [
                ("condition", "features", {}),
                ("condition", "logits", {"refiner.condition": "logits"}),
                ("condition", "mask", {"refiner.condition": "mask"}),
                ("training", "one-stage", _one_stage(base)),
                ("ema", "off", {"train.ema": False}),
            ]
            for factor, level, overrides in variants:
                labels = {**default, factor: level, "factor": factor, "arm": f"{factor}: {level}"}
                arms.append(Arm(labels, _cfg(profile, ds, seg, seed, **overrides)))
    return arms


def _artifact_arms(profile, datasets, segmentors, seeds) -> list[Arm]:
    seg = _segs(profile, segmentors)[0]
    return [
        Arm({"arm": "DDPS"}, _cfg(profile, ds, seg, seeds[0]), [EvalSpec()], artifacts=True)
        for ds in datasets
    ]


WIDTHS = (16, 32, 64)
PAPER_WIDTHS = (128, 256)


def _performance_arms(profile, datasets, segmentors, seeds) -> list[Arm]:
    arms = []
    seg = _segs(profile, segmentors)[0]
    for ds in datasets:
        for seed in seeds:
            for width in PAPER_WIDTHS if profile == "paper" else WIDTHS:
                cfg = _cfg(profile, ds, seg, seed, **{"unet.width": width})
                evals = [EvalSpec((("sampler", "single_step"), ("num_evals", 1)))]
                evals += [
                    EvalSpec((("sampler", "free_renoise"), ("num_evals", n)))
                    for n in (2, 5)
                    if n <= cfg.diffusion.num_steps
                ]
                arms.append(Arm({"arm": f"width {width}", "width": str(width)}, cfg, evals, latency=True))
    return arms


_ALL = {"smoke": ("ade20k", "cityscapes"), "cpu": ("ade20k", "cityscapes"), "paper": ("ade20k", "cityscapes")}
_ABL = {"smoke": ("ade20k",), "cpu": ("ade20k",), "paper": ("ade20k", "cityscapes")}

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "main_results",
            "Main results: base vs refined, per dataset and base segmentor",
            "",
            "Each base segmentor is frozen; the refiner (uniform kernel, DFP, free re-noising, two stages, EMA) is "
            "trained on top. Single-scale (all steps) and multi-scale + flip (final step).",
            _main_arms,
            {"smoke": 1, "cpu": 3, "paper": 1},
            _ALL,
        ),
        Experiment(
            "naive_integration",
            "Finding 1: naive integrations of diffusion",
            "A simple integration of diffusion into segmentation is not enough; a poorly designed diffusion "
            "process can make mIoU worse than the base segmentor.",
            "Textbook setups (noise on the ground truth, strict posterior sampling, one training stage; and "
            "Gaussian diffusion on analog bits with DDIM) against the base segmentor and DDPS.",
            _naive_arms,
            {"smoke": 1, "cpu": 3, "paper": 1},
            _ABL,
        ),
        Experiment(
            "noise_object_and_type",
            "Finding 2: what noise is added to vs the type of noise",
            "In training, what the noise is added to matters more than the type of noise.",
            "Noise object {ground truth, base prediction, first prediction (DFP)} x noise type {uniform, absorbing, "
            "mask-and-replace, Gaussian}; free re-noising at inference for all.",
            _noise_arms,
            {"smoke": 1, "cpu": 3, "paper": 1},
            _ABL,
        ),
        Experiment(
            "inference_scheme",
            "Finding 3: strict vs relaxed inference",
            "At inference, the strict diffusion denoising scheme is not needed; a relaxed, simpler scheme works "
            "even better.",
            "One trained DDPS model per seed, evaluated with the strict posterior, free re-noising and a single "
            "step, over step grids of several sizes; every evaluation's intermediate steps are recorded.",
            _inference_arms,
            {"smoke": 1, "cpu": 3, "paper": 1},
            _ABL,
        ),
        Experiment(
            "schedule_and_T",
            "Noise schedule and number of steps",
            "",
            "Linear vs cosine cumulative keep-probability, T in {20, 50, 100}.",
            _schedule_arms,
            {"smoke": 1, "cpu": 1, "paper": 1},
            _ABL,
        ),
        Experiment(
            "condition_and_training",
            "Condition, training stages and EMA",
            "",
            "Condition the denoiser on the segmentor's features, its logits or its argmax mask; one vs two training "
            "stages; EMA of the weights on / off. One factor varied at a time from the default.",
            _condition_arms,
            {"smoke": 1, "cpu": 1, "paper": 1},
            _ABL,
        ),
        Experiment(
            "qualitative",
            "Qualitative results and denoising trajectories",
            "",
            "Validation images with ground truth, base and refined masks, boundary errors, and x_t / x0_hat per step.",
            _artifact_arms,
            {"smoke": 1, "cpu": 1, "paper": 1},
            _ALL,
        ),
        Experiment(
            "performance",
            "Gain versus cost",
            "",
            "mIoU gain over the base against the refiner's cost (per-image latency relative to the base segmentor "
            "alone, and parameters), per number of network evaluations and per UNet width.",
            _performance_arms,
            {"smoke": 1, "cpu": 1, "paper": 1},
            _ABL,
        ),
        Experiment(
            "mask_prior",
            "What the mask prior learned",
            "",
            "Ground truth noised to several levels and denoised in one step; samples from pure noise with the "
            "condition zeroed.",
            _artifact_arms,
            {"smoke": 1, "cpu": 1, "paper": 1},
            _ALL,
        ),
    )
}


def profile_notes(profile: str) -> str:
    return profiles.notes(profile)


# Published numbers of paper.md (percent): DDPS after refinement (ss / ms / mBIoU) and the base segmentors.
_DDPS = {
    ("ade20k", "deeplabv3plus-mobilenetv2"): (38.07, 39.07, 23.47),
    ("ade20k", "segformer-b0"): (41.67, 41.95, 26.77),
    ("ade20k", "deeplabv3plus-r50"): (45.26, 46.01, 30.39),
    ("ade20k", "segformer-b2"): (49.73, 49.96, 33.95),
    ("ade20k", "deeplabv3plus-r101"): (46.32, 46.99, 31.82),
    ("ade20k", "segformer-b5"): (51.11, 51.71, 35.66),
    ("cityscapes", "deeplabv3plus-mobilenetv2"): (78.11, 79.73, 61.14),
    ("cityscapes", "segformer-b0"): (78.19, 79.62, 64.07),
    ("cityscapes", "deeplabv3plus-r50"): (81.39, 82.27, 65.76),
    ("cityscapes", "segformer-b2"): (81.77, 82.22, 67.75),
    ("cityscapes", "deeplabv3plus-r101"): (81.68, 82.51, 65.96),
    ("cityscapes", "segformer-b5"): (82.42, 82.94, 66.45),
}
_BASE = {  # (ss, ms); None where paper.md gives no number
    ("ade20k", "segformer-b0"): (37.41, 38.34), ("cityscapes", "segformer-b0"): (76.54, 78.22),
    ("ade20k", "segformer-b2"): (46.80, None), ("cityscapes", "segformer-b2"): (81.08, 82.18),
    ("ade20k", "segformer-b5"): (49.13, 50.22), ("cityscapes", "segformer-b5"): (82.25, 83.48),
    ("ade20k", "deeplabv3plus-r50"): (43.95, 44.93), ("cityscapes", "deeplabv3plus-r50"): (80.09, 81.13),
    ("ade20k", "deeplabv3plus-r101"): (45.47, 46.35), ("cityscapes", "deeplabv3plus-r101"): (80.97, 82.03),
    ("ade20k", "deeplabv3plus-mobilenetv2"): (34.02, None), ("cityscapes", "deeplabv3plus-mobilenetv2"): (75.20, None),
}  # fmt: skip


def _published() -> pd.DataFrame:
    rows = []
    for (ds, seg), (ss, ms, biou) in _DDPS.items():
        rows += [
            (ds, seg, "refined", "ss", "mIoU", ss),
            (ds, seg, "refined", "ms", "mIoU", ms),
            (ds, seg, "refined", "ss", "mBIoU", biou),
        ]
    for (ds, seg), (ss, ms) in _BASE.items():
        rows.append((ds, seg, "base", "ss", "mIoU", ss))
        if ms is not None:
            rows.append((ds, seg, "base", "ms", "mIoU", ms))
    return pd.DataFrame(rows, columns=["dataset", "segmentor", "method", "test", "metric", "value"])


PUBLISHED = _published()


# ----------------------------------------------------------------------------------------------------------------
# running


def train_id(cfg: ExperimentConfig) -> str:
    """Identity of a training: the config hash with the eval section at its defaults."""
    return config_hash(replace(cfg, eval=type(cfg.eval)()))


def eval_id(cfg: ExperimentConfig, spec: EvalSpec, experiment: str, labels: dict[str, str]) -> str:
    """Identity of one file of rows: the training, the evaluation settings, and the experiment and arm labels
    (an evaluation is cheap next to a training, so experiments share trainings but label their own rows)."""
    blob = json.dumps(
        {
            "train": train_id(cfg),
            "eval": to_dict(_eval_cfg(cfg, spec).eval),
            "test": spec.test,
            "last_only": spec.last_only,
            "experiment": experiment,
            "labels": {**labels, **dict(spec.labels)},
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _eval_cfg(cfg: ExperimentConfig, spec: EvalSpec) -> ExperimentConfig:
    return replace(cfg, eval=replace(cfg.eval, **dict(spec.overrides))) if spec.overrides else cfg


def _base_id(cfg: ExperimentConfig) -> str:
    """Identity of a base segmentor training: data, segmentor (with its own seed) and the optimiser settings.

    The run seed is not part of it: every seed of an arm refines the same frozen base, as the paper's refiners
    all sit on one published checkpoint; the spread over seeds is the refiner's."""
    blob = json.dumps(
        {
            "data": to_dict(cfg.data),
            "segmentor": to_dict(cfg.segmentor),
            "optim": to_dict(cfg.optim),
            "amp": cfg.train.amp,
            "eval_every": cfg.train.eval_every,  # a base trained with a learning curve is another run
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _store(results_dir: str | Path, profile: str) -> ResultsStore:
    return ResultsStore(Path(results_dir) / profile)


def _runs_dir(results_dir: str | Path, profile: str) -> Path:
    """Run folders (checkpoints; not committed) live beside the results, under runs/<profile>."""
    return Path(results_dir).resolve().parent / "runs" / profile


def _stage1_cfg(cfg: ExperimentConfig) -> ExperimentConfig:
    """The stage-1-only training a two-stage config starts from; settings stage 1 never reads are normalised,
    so arms that differ only in them (noise object, EMA, stage-2 length, evaluation) share it."""
    defaults = type(cfg.refiner)()
    return replace(
        cfg,
        name="stage1",
        refiner=replace(cfg.refiner, noise_object=defaults.noise_object),
        train=replace(cfg.train, stage2_iterations=0, ema=False),
        # evaluation settings at their defaults but the batch: the stage-1 learning curve batches as the arm does
        eval=type(cfg.eval)(batch_size=cfg.eval.batch_size),
    )


def base_weights_path(cfg: ExperimentConfig, runs: Path) -> Path:
    return runs / "base" / _base_id(cfg) / "base.safetensors"


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
    s1 = _stage1_cfg(cfg)
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


def _missing(arm: Arm, experiment: str, store: ResultsStore) -> list[tuple[str, EvalSpec]]:
    ids = [eval_id(arm.cfg, spec, experiment, arm.labels) for spec in arm.evals]
    missing = [(i, s) for i, s in zip(ids, arm.evals) if not store.has(i)]
    if arm.artifacts and not store.has_artifacts(ids[0]):
        missing = missing or [(ids[0], arm.evals[0])]
    return missing


def run_or_load(
    arm: Arm, experiment: str, profile: str, results_dir: str | Path = "results", progress: bool = False
) -> list[str]:
    """Evaluate ``arm`` where the store lacks it (training or resuming only what is needed); return its run ids."""
    from diffseg.engines import evaluate_models, get_dataflow, load_refiner_from_run

    store = _store(results_dir, profile)
    ids = [eval_id(arm.cfg, spec, experiment, arm.labels) for spec in arm.evals]
    missing = _missing(arm, experiment, store)
    if not missing:
        return ids
    cfg = arm.cfg
    t0 = time.time()
    run_dir, train_res = ensure_trained(cfg, _runs_dir(results_dir, profile), progress)
    _, refiner, segmentor = load_refiner_from_run(run_dir, cfg_device(cfg))
    device = next(refiner.parameters()).device
    for rid, spec in missing:
        ecfg = _eval_cfg(cfg, spec)
        _, val_loader, val_ds = get_dataflow(ecfg, 0)
        te = time.time()
        res = evaluate_models(refiner, segmentor, ecfg, val_loader, val_ds, device)
        labels = {**arm.labels, **dict(spec.labels)}
        rows = metrics_to_rows(res, val_ds.class_names, test=spec.test, last_only=spec.last_only)
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
    _store_curves(cfg, run_dir, _runs_dir(results_dir, profile), store, profile, str(device))
    return ids


def _store_curves(
    cfg: ExperimentConfig, run_dir: Path, runs: Path, store: ResultsStore, profile: str, device: str
) -> None:
    """Copy the learning curves of ``cfg``'s training (stage 1 + its own) and of its base into the store.

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
    }
    refiner_dirs = ([runs / "stage1" / train_id(_stage1_cfg(cfg))] if _two_stage(cfg) else []) + [run_dir]
    parts: list[tuple[str, str, list[tuple[Path, str]], dict[str, Any]]] = [
        (
            f"curve-{train_id(cfg)}",
            "refiner",
            [(d, curves.CURVE_FILE) for d in refiner_dirs],
            {"seed": cfg.seed, "train_id": train_id(cfg)},
        )
    ]
    if cfg.segmentor.weights is None and cfg.segmentor.train_iterations > 0:
        base_file = (base_weights_path(cfg, runs).parent, curves.BASE_CURVE_FILE)
        parts.append((f"curve-base-{_base_id(cfg)}", "base", [base_file], {"seed": cfg.segmentor.seed}))
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


def _two_stage(cfg: ExperimentConfig) -> bool:
    return cfg.train.stage1_iterations > 0 and cfg.train.stage2_iterations > 0


def load_curves(profile: str = "cpu", results_dir: str | Path = "results") -> pd.DataFrame:
    """Every learning-curve row of a profile (see `_store_curves`), joined to nothing; empty if none."""
    df = load_results(profile, results_dir)
    return df[df["experiment"] == "learning_curves"] if "experiment" in df.columns else df.iloc[:0]


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


def _init_worker() -> None:
    torch.set_num_threads(1)  # one thread per process: the processes, not threads, fill the cores


def _job_label(cfg: ExperimentConfig, labels: Mapping[str, Any] | None = None) -> str:
    arm = ", ".join(f"{k}={v}" for k, v in (labels or {}).items() if k != "arm")
    name = (labels or {}).get("arm") or arm
    return f"{cfg.data.dataset}/{cfg.segmentor.name} seed {cfg.seed}" + (f" {name}" if name else "")


def _call(job: tuple[str, Any, str]) -> tuple[str, float, int | None]:
    """Run one sweep job; returns (label, seconds, iterations trained or None) for its progress line."""
    kind, args, name = job
    t0 = time.perf_counter()
    cfg = args[0].cfg if kind == "eval" else args[0]
    its: int | None = None
    if kind == "base":
        train_base(*args)
        label, its = f"{cfg.data.dataset}/{cfg.segmentor.name}", cfg.segmentor.train_iterations
    elif kind == "stage1":
        train_stage1(*args)
        label, its = f"{_job_label(cfg)} {name}", cfg.train.stage1_iterations
    elif kind == "train":
        ensure_trained(*args)
        two_stage = cfg.train.stage1_iterations > 0 and cfg.train.stage2_iterations > 0
        its = (
            cfg.train.stage2_iterations
            if two_stage
            else cfg.train.stage1_iterations + cfg.train.stage2_iterations
        )
        label = f"{_job_label(cfg)} {name}"
    else:
        run_or_load(*args)
        label = f"{args[1]}: {_job_label(cfg, args[0].labels)}"
    return label, time.perf_counter() - t0, its


def sweep(
    profile: str = "cpu",
    results_dir: str | Path = "results",
    experiments: list[str] | None = None,
    workers: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """Run everything the store lacks for ``experiments`` (default: all), ``workers`` processes at a time.

    With ``progress``, one line per finished job goes to stderr (`diffseg.progress.JobLog`).

    Phases, each a set of independent jobs: base segmentors, shared stage-1 trainings, full trainings, then
    evaluations. Every job is resumable and idempotent, so an interrupted sweep, started again, redoes only what
    is missing. On CPU the default is one single-threaded process per core; on CUDA one process.
    """
    import multiprocessing as mp

    from diffseg.progress import JobLog

    names = experiments or list(EXPERIMENTS)
    arms = [(name, arm) for name in names for arm in arms_of(name, profile, device=device)]
    store = _store(results_dir, profile)
    runs = _runs_dir(results_dir, profile)
    todo = [(n, a) for n, a in arms if _missing(a, n, store)]
    cfgs = {train_id(a.cfg): a.cfg for _, a in todo if not (runs / train_id(a.cfg) / "metrics.json").exists()}
    bases = {
        _base_id(c): c for c in cfgs.values() if c.segmentor.weights is None and c.segmentor.train_iterations
    }
    bases = {k: c for k, c in bases.items() if not base_weights_path(c, runs).exists()}
    stage1 = {
        train_id(_stage1_cfg(c)): c
        for c in cfgs.values()
        if c.train.stage1_iterations > 0 and c.train.stage2_iterations > 0
    }
    stage1 = {k: c for k, c in stage1.items() if not (runs / "stage1" / k / "metrics.json").exists()}
    if workers is None:
        workers = (
            1
            if (device == "cuda" or (device == "auto" and torch.cuda.is_available()))
            else (os.cpu_count() or 1)
        )
    arm_of = {}  # training -> the first experiment arm that needs it, to name it in the progress lines
    for n, a in todo:
        arm_of.setdefault(
            train_id(a.cfg), f"{n}: {a.labels.get('arm') or ', '.join(map(str, a.labels.values()))}"
        )
    phases = [
        ("base segmentors", [("base", (c, runs), "") for c in bases.values()]),
        ("stage 1", [("stage1", (c, runs), f"stage 1 {k[:8]}") for k, c in stage1.items()]),
        ("refiners", [("train", (c, runs), arm_of.get(k, "")) for k, c in cfgs.items()]),
        ("evaluations", [("eval", (a, n, profile, results_dir), "") for n, a in todo]),
    ]
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(workers, initializer=_init_worker) if workers > 1 else None
    try:
        for title, jobs in phases:
            if not jobs:
                continue
            it = pool.imap_unordered(_call, jobs) if pool else map(_call, jobs)
            log = JobLog(f"[{profile}] {title}", len(jobs), enabled=progress)
            for label, seconds, iterations in it:
                log.finished(label, seconds, iterations)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return store.consolidate()


def cfg_device(cfg: ExperimentConfig) -> torch.device:
    from diffseg.engines import resolve_device

    return resolve_device(cfg.device)


def arms_of(
    name: str,
    profile: str = "cpu",
    datasets: list[str] | None = None,
    segmentors: list[str] | None = None,
    seeds: int | list[int] | None = None,
    device: str = "auto",
) -> list[Arm]:
    """The arms of experiment ``name`` for a profile (datasets / segmentors / seeds default to the profile's)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment '{name}'; valid experiments: {', '.join(EXPERIMENTS)}")
    profiles._check(profile=profile)
    exp = EXPERIMENTS[name]
    ds = tuple(datasets) if datasets else exp.default_datasets[profile]
    for d in ds:
        profiles._check(dataset=d)
    if seeds is None:
        seed_list: tuple[int, ...] = tuple(range(exp.default_seeds[profile]))
    elif isinstance(seeds, int):
        seed_list = tuple(range(seeds))
    else:
        seed_list = tuple(seeds)
    arms = exp.arms(profile, ds, tuple(segmentors) if segmentors else None, seed_list)
    if device != "auto":
        for a in arms:
            a.cfg = replace(a.cfg, device=device)
    return arms


def run_experiment(
    name: str,
    profile: str = "cpu",
    results_dir: str | Path = "results",
    datasets: list[str] | None = None,
    segmentors: list[str] | None = None,
    seeds: int | list[int] | None = None,
    device: str = "auto",
    progress: bool | None = None,
) -> pd.DataFrame:
    """Run what the store lacks for experiment ``name`` and return its rows.

    ``progress``: one line per arm that had work to do; None (the default) prints them only when stderr is a
    terminal, so a notebook's report never carries them (`diffseg.progress.wanted`).
    """
    from diffseg.progress import JobLog, wanted

    arms = arms_of(name, profile, datasets, segmentors, seeds, device)
    store = _store(results_dir, profile)
    log = JobLog(f"[{profile}] {name}", len(arms), enabled=wanted(progress))
    ids: list[str] = []
    for arm in arms:
        todo = bool(_missing(arm, name, store))
        t0 = time.perf_counter()
        ids += run_or_load(arm, name, profile, results_dir)
        if todo:
            log.finished(_job_label(arm.cfg, arm.labels), time.perf_counter() - t0)
        else:
            log.done += 1
    return _store(results_dir, profile).load(list(dict.fromkeys(ids)))


def load_results(profile: str = "cpu", results_dir: str | Path = "results") -> pd.DataFrame:
    """Every stored row of a profile."""
    return _store(results_dir, profile).load()


def load_artifacts(
    run_id: str, results_dir: str | Path = "results", profile: str | None = None
) -> dict[str, np.ndarray]:
    """Arrays stored for a run of the qualitative / mask-prior experiments."""
    for prof in [profile] if profile else list(PROFILES):
        store = _store(results_dir, prof)
        if store.has_artifacts(run_id):
            return store.load_artifacts(run_id)
    raise FileNotFoundError(f"no artifacts for run {run_id} under {results_dir}; run the experiment first")


def dataset_info(name: str) -> dict[str, Any]:
    """Class names and palette of a dataset (no data needed)."""
    from diffseg.data import ADE20K_CLASSES, ADE20K_PALETTE, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

    profiles._check(dataset=name)
    if name == "ade20k":
        return {"class_names": tuple(ADE20K_CLASSES), "palette": np.asarray(ADE20K_PALETTE, dtype=np.uint8)}
    return {
        "class_names": tuple(CITYSCAPES_CLASSES),
        "palette": np.asarray(CITYSCAPES_PALETTE, dtype=np.uint8),
    }
