"""PyTorch-Ignite engines: training (base segmentor, refiner stage 1 and 2), evaluation, and `run(config)`.

Shaped like ignite's own examples: ``get_dataflow``, the trainers (``create_base_trainer``,
``create_refiner_trainer``), ``create_evaluator`` and ``training`` run under ``idist.Parallel``, so one code path
serves one process, ``torchrun --nproc_per_node N`` and several nodes. Rank 0 alone writes files.

Reproducibility and resume. Every random draw of a training iteration comes from generators seeded by
(seed, iteration), and the data order is a pure function of (seed, iteration) (``IterationSampler``), so nothing
stateful needs saving besides the weights, the optimiser, the LR schedule, the EMA weights and the iteration counter:
a run killed at any point and restarted from its last checkpoint ends with the same weights as an uninterrupted run.

One concept per module:

- `common`: devices, seeded generators, atomic writes, batches to a device, DDP unwrapping;
- `dataflow`: the seeded iteration sampler, per-item seeds, the train / val loaders;
- `schedule`: learning rate (scaled to the effective batch, stepped per stage), optimiser, the stage layout;
- `trainers`: the ignite ``Engine`` of one training step, base segmentor and refiner;
- `evaluation`: prediction (whole / slide / multi-scale + flip) and the evaluator scoring every collected step;
- `checkpoints`: atomic, newest-first checkpoints and the refiner's signature check;
- `run_log`: ``log.csv``, TensorBoard, the progress bar;
- `run_folder`: a run folder bound to its config; the base weights linked into it;
- `base_training`: the base segmentor trained from scratch (synthetic profiles);
- `runner`: a whole refiner run (resumable, with its learning curve), ``run`` under ``idist.Parallel``, loading.

Run folder::

    run_dir/config.yaml        the resolved config (a changed config refuses to resume)
    run_dir/base.safetensors   the trained base segmentor (job (a)), when the config trains one
    run_dir/checkpoints/       refiner checkpoints (two newest kept, written to a temp file and renamed)
    run_dir/log.csv            iteration, stage, loss, lr (+ tensorboard/ events)
    run_dir/curve.csv          the learning curve (`diffseg.curves`), when ``train.eval_every > 0``
    run_dir/metrics.json       final validation metrics of base and refiner: its presence marks the run complete
"""

from diffseg.engines.base_training import train_base_segmentor
from diffseg.engines.checkpoints import (
    CHECKPOINT_PREFIX,
    check_signature,
    load_latest_checkpoint,
    refiner_signature,
    save_checkpoint,
)
from diffseg.engines.common import NanLossError, iteration_seed, make_generator, resolve_device
from diffseg.engines.dataflow import IterationSampler, SeededItems, get_dataflow, metric_ignore_index
from diffseg.engines.evaluation import create_evaluator, evaluate_models
from diffseg.engines.runner import build_models, check_base_weights, load_refiner_from_run, run, training
from diffseg.engines.schedule import Stages, build_optimizer, scaled_lr, stage_lr_factor
from diffseg.engines.trainers import create_base_trainer, create_refiner_trainer
from diffseg.prediction import STEP_SELECTIONS, predict  # re-exported: evaluation's public face

__all__ = [
    "CHECKPOINT_PREFIX",
    "STEP_SELECTIONS",
    "IterationSampler",
    "NanLossError",
    "SeededItems",
    "Stages",
    "build_models",
    "check_base_weights",
    "build_optimizer",
    "check_signature",
    "create_base_trainer",
    "create_evaluator",
    "create_refiner_trainer",
    "evaluate_models",
    "get_dataflow",
    "iteration_seed",
    "load_latest_checkpoint",
    "load_refiner_from_run",
    "make_generator",
    "metric_ignore_index",
    "predict",
    "refiner_signature",
    "resolve_device",
    "run",
    "save_checkpoint",
    "scaled_lr",
    "stage_lr_factor",
    "train_base_segmentor",
    "training",
]
