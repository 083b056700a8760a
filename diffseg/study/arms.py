"""The arms of the study: an arm is one training config plus the evaluations it needs; one builder per
experiment turns (profile, datasets, segmentors, seeds) into its arms."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from diffseg.config import ExperimentConfig, apply_overrides, replace
from diffseg.profiles import PAPER_PROFILES, SEGMENTORS, profile_config


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


def _cfg(profile: str, dataset: str, segmentor: str | None, seed: int, **overrides: Any) -> ExperimentConfig:
    """The profile's default run with ``overrides``. Finding 3 compares samplers on the default method's trainings
    only, so any other training skips the strict sampler in its curve points (a third of their cost); an arm
    whose overrides restate the defaults stays that training, shared."""
    default = profile_config(profile, dataset, segmentor, seed)
    cfg = apply_overrides(default, overrides)
    if cfg != default:
        cfg = replace(cfg, train=replace(cfg.train, curve_strict=False))
    return cfg


def _one_stage(cfg: ExperimentConfig) -> dict[str, Any]:
    """Single-stage training with the same total iterations (the textbook setup, and an ablation arm)."""
    total = cfg.train.stage1_iterations + cfg.train.stage2_iterations
    return {"train.stage1_iterations": 0, "train.stage2_iterations": total}


def _segs(profile: str, segmentors: tuple[str, ...] | None) -> tuple[str, ...]:
    return tuple(segmentors) if segmentors else SEGMENTORS[profile]


# The dry run's Cityscapes rows: the smallest SegFormer, which slides over the 1024x2048 image as mmseg tests it
# (the six architectures all run on ADE20K; the whole cartesian product would only repeat code paths).
DRY_CITYSCAPES_SEGMENTORS = ("segformer-b0-mmseg",)


def _dataset_segs(profile: str, dataset: str, segmentors: tuple[str, ...] | None) -> tuple[str, ...]:
    if profile == "paper-dry" and dataset == "cityscapes" and not segmentors:
        return DRY_CITYSCAPES_SEGMENTORS
    return _segs(profile, segmentors)


def main_arms(profile, datasets, segmentors, seeds) -> list[Arm]:
    arms = []
    for ds in datasets:
        for seg in _dataset_segs(profile, ds, segmentors):
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


def naive_arms(profile, datasets, segmentors, seeds) -> list[Arm]:
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
# The synthetic profiles test finding 2 on an L-shaped design, not the full grid: the noise object varied under the
# release's (uniform) kernel, and the kernel varied on the release's noise object (the first prediction). It asks
# the paper's own two questions (which object, under the release's kernel; which kernel, with DFP) with 5 arms
# instead of 9, which pays for trainings long enough to flatten. Mask-and-replace (VQ-Diffusion's mix of the
# absorbing and the uniform kernel, so between two kernels already tested) is left out there too.
SYNTHETIC_KERNELS = ("uniform", "absorbing", "gaussian")
CORNER = ("first", "uniform")  # (noise object, kernel) the two arms of the L share


def noise_grid(profile: str) -> list[tuple[str, str]]:
    """The (noise object, kernel) arms of finding 2: the full grid for the paper profiles, the L for the others."""
    if profile in PAPER_PROFILES:
        return [(obj, kernel) for obj in NOISE_OBJECTS for kernel in KERNELS]
    obj0, kernel0 = CORNER
    return [(obj, kernel0) for obj in NOISE_OBJECTS] + [(obj0, k) for k in SYNTHETIC_KERNELS if k != kernel0]


def noise_arms(profile, datasets, segmentors, seeds) -> list[Arm]:
    arms = []
    seg = _segs(profile, segmentors)[0]
    for ds in datasets:
        for seed in seeds:
            for obj, kernel in noise_grid(profile):
                cfg = _cfg(
                    profile, ds, seg, seed, **{"refiner.noise_object": obj, "diffusion.kernel": kernel}
                )
                arms.append(Arm({"arm": f"{obj} / {kernel}", "noise_object": obj, "kernel": kernel}, cfg))
    return arms


SAMPLER_NAMES = ("strict", "strict_release", "free_renoise", "single_step")


def step_counts(num_steps: int, profile: str = "cpu") -> tuple[int, ...]:
    """The step grid sizes of finding 3 (1, 2, 5, 10, 20, 100 as the release), capped at T; the dry run tries
    two sizes (every size is the same code path, and the larger ones only add paper-size network evaluations)."""
    counts = tuple(n for n in (2, 5, 10, 20, 100) if n <= num_steps)
    return counts[:2] if profile == "paper-dry" else counts


def inference_arms(profile, datasets, segmentors, seeds) -> list[Arm]:
    arms = []
    seg = _segs(profile, segmentors)[0]
    for ds in datasets:
        for seed in seeds:
            cfg = _cfg(profile, ds, seg, seed)
            # sampler and num_evals reach the rows as provenance columns of each evaluation
            evals = [EvalSpec((("sampler", "single_step"), ("num_evals", 1)))]
            for sampler in ("strict", "strict_release", "free_renoise"):
                for n in step_counts(cfg.diffusion.num_steps, profile):
                    evals.append(EvalSpec((("sampler", sampler), ("num_evals", n))))
            arms.append(Arm({"arm": "DDPS"}, cfg, evals))
    return arms


def schedule_arms(profile, datasets, segmentors, seeds) -> list[Arm]:
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


def condition_arms(profile, datasets, segmentors, seeds) -> list[Arm]:
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


def artifact_arms(profile, datasets, segmentors, seeds) -> list[Arm]:
    return [
        Arm(
            {"arm": "DDPS"},
            _cfg(profile, ds, _dataset_segs(profile, ds, segmentors)[0], seeds[0]),
            [EvalSpec()],
            artifacts=True,
        )
        for ds in datasets
    ]


WIDTHS = (16, 32, 64)


PAPER_WIDTHS = (128, 256)


def performance_arms(profile, datasets, segmentors, seeds) -> list[Arm]:
    arms = []
    seg = _segs(profile, segmentors)[0]
    for ds in datasets:
        for seed in seeds:
            for width in PAPER_WIDTHS if profile in PAPER_PROFILES else WIDTHS:
                cfg = _cfg(profile, ds, seg, seed, **{"unet.width": width})
                evals = [EvalSpec((("sampler", "single_step"), ("num_evals", 1)))]
                evals += [
                    EvalSpec((("sampler", "free_renoise"), ("num_evals", n)))
                    for n in (2, 5)
                    if n <= cfg.diffusion.num_steps
                ]
                arms.append(Arm({"arm": f"width {width}", "width": str(width)}, cfg, evals, latency=True))
    return arms
