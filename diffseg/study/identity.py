"""Identity of trainings and evaluations: a training is named by the hash of its config without the ``eval``
section, an evaluation by that and its settings; a shared stage 1 and a base segmentor by what they read."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from diffseg.config import ExperimentConfig, config_hash, identity_dict, replace, to_dict
from diffseg.study.arms import EvalSpec


def train_id(cfg: ExperimentConfig) -> str:
    """Identity of a training: the config hash with the eval section at its defaults."""
    return config_hash(replace(cfg, eval=type(cfg.eval)()))


def eval_id(cfg: ExperimentConfig, spec: EvalSpec, experiment: str, labels: dict[str, str]) -> str:
    """Identity of one file of rows: the training, the evaluation settings, and the experiment and arm labels
    (an evaluation is cheap next to a training, so experiments share trainings but label their own rows)."""
    blob = json.dumps(
        {
            "train": train_id(cfg),
            "eval": identity_dict(evaluation_config(cfg, spec))["eval"],
            "test": spec.test,
            "last_only": spec.last_only,
            "experiment": experiment,
            "labels": {**labels, **dict(spec.labels)},
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def evaluation_config(cfg: ExperimentConfig, spec: EvalSpec) -> ExperimentConfig:
    return replace(cfg, eval=replace(cfg.eval, **dict(spec.overrides))) if spec.overrides else cfg


def base_run_id(cfg: ExperimentConfig) -> str:
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


def is_two_stage(cfg: ExperimentConfig) -> bool:
    return cfg.train.stage1_iterations > 0 and cfg.train.stage2_iterations > 0


def stage1_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """The stage-1-only training a two-stage config starts from; settings stage 1 never reads are normalised,
    so arms that differ only in them (noise object, EMA, stage-2 length, evaluation, the strict curve: stage 1
    samples in a single step) share it."""
    defaults = type(cfg.refiner)()
    return replace(
        cfg,
        name="stage1",
        refiner=replace(cfg.refiner, noise_object=defaults.noise_object),
        train=replace(cfg.train, stage2_iterations=0, ema=False, curve_strict=True),
        # evaluation settings at their defaults but the batch: the stage-1 learning curve batches as the arm does
        eval=type(cfg.eval)(batch_size=cfg.eval.batch_size),
    )


def base_weights_path(cfg: ExperimentConfig, runs: Path) -> Path:
    return runs / "base" / base_run_id(cfg) / "base.safetensors"
