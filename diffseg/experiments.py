"""The study: every table and figure of paper.md as a named experiment, per profile.

An experiment is a list of arms; an arm is one training config (``ExperimentConfig``) plus the evaluations it needs
(``EvalSpec``: sampler, number of steps, single- or multi-scale). ``run_or_load`` evaluates an arm only when the
results store lacks it, training only when its run folder is not complete (and resuming it when interrupted).
Arms that share a training config share the trained model (e.g. every sampler of finding 3 reuses the main model),
and arms that share (dataset, base segmentor, seed) share the trained base segmentor.

Identity: a training is named by the hash of its config without the ``eval`` section; an evaluation (one file of
rows) by the hash of that and the evaluation settings. Rows carry their arm labels, so a table is a groupby.

This module is the public face of the study (notebooks read ``ex.run_experiment``, ``ex.EXPERIMENTS``, ...);
the machinery lives in `diffseg.study`, one concept per module.
"""

from diffseg.profiles import DATASETS, PROFILES, data_config
from diffseg.study.arms import (
    KERNELS,
    NOISE_OBJECTS,
    PAPER_WIDTHS,
    SAMPLER_NAMES,
    WIDTHS,
    Arm,
    EvalSpec,
    Experiment,
    step_counts,
)
from diffseg.study.catalogue import (
    EXPERIMENTS,
    profile_notes,
)
from diffseg.study.execution import (
    cfg_device,
    ensure_trained,
    run_or_load,
    train_base,
    train_stage1,
)
from diffseg.study.identity import (
    base_weights_path,
    eval_id,
    train_id,
)
from diffseg.study.published import (
    PUBLISHED,
)
from diffseg.study.store import (
    load_artifacts,
    load_curves,
    load_results,
)
from diffseg.study.sweep import (
    arms_of,
    dataset_info,
    run_experiment,
    sweep,
)

__all__ = [
    "Arm",
    "DATASETS",
    "EXPERIMENTS",
    "EvalSpec",
    "Experiment",
    "KERNELS",
    "NOISE_OBJECTS",
    "PAPER_WIDTHS",
    "PROFILES",
    "PUBLISHED",
    "SAMPLER_NAMES",
    "WIDTHS",
    "arms_of",
    "base_weights_path",
    "cfg_device",
    "data_config",
    "dataset_info",
    "ensure_trained",
    "eval_id",
    "load_artifacts",
    "load_curves",
    "load_results",
    "profile_notes",
    "run_experiment",
    "run_or_load",
    "step_counts",
    "sweep",
    "train_base",
    "train_id",
    "train_stage1",
]
