"""The arms of the study: an arm is one training config plus the evaluations it needs; one builder per
experiment turns (ablation, datasets, segmentors, seeds) into its arms.

The first argument of a builder is an `Ablation`: the profile, the overrides every arm starts from and the
levels of the experiment's factors (`diffseg.study.ablation`). For the default study (no overrides, no levels)
the builders give the catalogue's arms exactly; with levels they run those instead of the defaults, always
with the profile's default level as the reference."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from diffseg.config import ConfigError, ExperimentConfig, apply_overrides, replace
from diffseg.profiles import PAPER_PROFILES, SEGMENTORS
from diffseg.study.ablation import Ablation


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
    arms: Callable[[Ablation, tuple[str, ...], tuple[str, ...] | None, tuple[int, ...]], list[Arm]]
    default_seeds: dict[str, int]
    default_datasets: dict[str, tuple[str, ...]]


def _cfg(ctx: Ablation, dataset: str, segmentor: str | None, seed: int, **overrides: Any) -> ExperimentConfig:
    """The arm's config: the profile's default run with the ablation's overrides (``ctx.base_config``), then the
    arm's own ``overrides``. Finding 3 compares samplers on the default method's trainings only, so any other
    training skips the strict sampler in its curve points (a third of their cost); an arm whose overrides restate
    the defaults stays that training, shared."""
    base = ctx.base_config(dataset, segmentor, seed)
    cfg = apply_overrides(base, overrides)
    if cfg != base:
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


def main_arms(ctx: Ablation, datasets, segmentors, seeds) -> list[Arm]:
    arms = []
    for ds in datasets:
        for seg in _dataset_segs(ctx.profile, ds, segmentors):
            for seed in seeds:
                cfg = _cfg(ctx, ds, seg, seed)
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


def naive_arms(ctx: Ablation, datasets, segmentors, seeds) -> list[Arm]:
    arms = []
    seg = _segs(ctx.profile, segmentors)[0]
    for ds in datasets:
        for seed in seeds:
            base = _cfg(ctx, ds, seg, seed)
            one = _one_stage(base)
            strict = (("sampler", "strict"),)
            arms += [
                Arm(
                    {"arm": "textbook: noise on GT, strict posterior, one stage"},
                    _cfg(ctx, ds, seg, seed, **{"refiner.noise_object": "gt", **one}),
                    [EvalSpec(strict)],
                ),
                Arm(
                    {"arm": "textbook: Gaussian on analog bits, DDIM, one stage"},
                    _cfg(
                        ctx,
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
                    _cfg(ctx, ds, seg, seed, **one),
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


def noise_grid(profile: str, ctx: Ablation | None = None) -> list[tuple[str, str]]:
    """The (noise object, kernel) arms of finding 2: the full grid for the paper profiles, the L through
    `CORNER` for the others; over the levels of ``ctx`` where it gives them (the corner always runs)."""
    ctx = ctx or Ablation("noise_object_and_type", profile)
    obj0, kernel0 = CORNER
    paper = profile in PAPER_PROFILES
    objects = ctx.levels_of("noise_object", NOISE_OBJECTS, obj0)
    kernels = ctx.levels_of("kernel", KERNELS if paper else SYNTHETIC_KERNELS, kernel0)
    if paper:
        return [(obj, kernel) for obj in objects for kernel in kernels]
    return [(obj, kernel0) for obj in objects] + [(obj0, k) for k in kernels if k != kernel0]


def noise_arms(ctx: Ablation, datasets, segmentors, seeds) -> list[Arm]:
    arms = []
    seg = _segs(ctx.profile, segmentors)[0]
    for ds in datasets:
        for seed in seeds:
            for obj, kernel in noise_grid(ctx.profile, ctx):
                cfg = _cfg(ctx, ds, seg, seed, **{"refiner.noise_object": obj, "diffusion.kernel": kernel})
                arms.append(Arm({"arm": f"{obj} / {kernel}", "noise_object": obj, "kernel": kernel}, cfg))
    return arms


SAMPLER_NAMES = ("strict", "strict_release", "free_renoise", "single_step")


def step_counts(num_steps: int, profile: str = "cpu") -> tuple[int, ...]:
    """The step grid sizes of finding 3 (1, 2, 5, 10, 20, 100 as the release), capped at T; the dry run tries
    two sizes (every size is the same code path, and the larger ones only add paper-size network evaluations)."""
    counts = tuple(n for n in (2, 5, 10, 20, 100) if n <= num_steps)
    return counts[:2] if profile == "paper-dry" else counts


def _num_evals(ctx: Ablation, default: tuple[int, ...], num_steps: int) -> tuple[int, ...]:
    """The evaluation counts to run: ``default`` or the ablation's levels, which must lie in [1, T]."""
    counts = ctx.levels_of("num_evals", default)
    bad = [n for n in counts if not 1 <= n <= num_steps] if "num_evals" in ctx.levels else []
    if bad:
        raise ConfigError(
            f"levels['num_evals'] = {bad}: must be between 1 and T = {num_steps} (diffusion.num_steps)"
        )
    return counts


def inference_arms(ctx: Ablation, datasets, segmentors, seeds) -> list[Arm]:
    arms = []
    seg = _segs(ctx.profile, segmentors)[0]
    for ds in datasets:
        for seed in seeds:
            cfg = _cfg(ctx, ds, seg, seed)
            counts = _num_evals(
                ctx, step_counts(cfg.diffusion.num_steps, ctx.profile), cfg.diffusion.num_steps
            )
            # sampler and num_evals reach the rows as provenance columns of each evaluation
            evals = [EvalSpec((("sampler", "single_step"), ("num_evals", 1)))]
            for sampler in ctx.levels_of(
                "sampler", ("strict", "strict_release", "free_renoise"), "free_renoise"
            ):
                for n in counts:
                    if n > 1:  # one evaluation is the single-step sampler, above
                        evals.append(EvalSpec((("sampler", sampler), ("num_evals", n))))
            arms.append(Arm({"arm": "DDPS"}, cfg, evals))
    return arms


def schedule_arms(ctx: Ablation, datasets, segmentors, seeds) -> list[Arm]:
    arms = []
    seg = _segs(ctx.profile, segmentors)[0]
    for ds in datasets:
        for seed in seeds:
            ref = _cfg(ctx, ds, seg, seed).diffusion
            grid = [
                (schedule, T)
                for schedule in ctx.levels_of("schedule", ("linear", "cosine"))
                for T in ctx.levels_of("num_steps", (20, 50, 100))
            ]
            if not ctx.is_default and (ref.schedule, ref.num_steps) not in grid:
                grid.insert(0, (ref.schedule, ref.num_steps))  # the reference: the profile's default run
            for schedule, T in grid:
                cfg = _cfg(ctx, ds, seg, seed, **{"diffusion.schedule": schedule, "diffusion.num_steps": T})
                arms.append(
                    Arm({"arm": f"{schedule}, T={T}", "schedule": schedule}, cfg)
                )  # T: num_steps column
    return arms


def condition_arms(ctx: Ablation, datasets, segmentors, seeds) -> list[Arm]:
    arms = []
    seg = _segs(ctx.profile, segmentors)[0]
    default = {"condition": "features", "training": "two-stage", "ema": "on"}
    for ds in datasets:
        for seed in seeds:
            base = _cfg(ctx, ds, seg, seed)
            settings = {
                ("condition", "logits"): {"refiner.condition": "logits"},
                ("condition", "mask"): {"refiner.condition": "mask"},
                ("training", "one-stage"): _one_stage(base),
                ("ema", "off"): {"train.ema": False},
            }
            # one factor varied at a time from the default (the first arm, the reference)
            variants = [("condition", "features", {})]
            for factor, level0 in default.items():
                others = [
                    lv
                    for lv in ctx.levels_of(factor, [lv for f, lv in settings if f == factor])
                    if lv != level0
                ]
                variants += [(factor, lv, settings[(factor, lv)]) for lv in others]
            for factor, level, overrides in variants:
                labels = {**default, factor: level, "factor": factor, "arm": f"{factor}: {level}"}
                arms.append(Arm(labels, _cfg(ctx, ds, seg, seed, **overrides)))
    return arms


def artifact_arms(ctx: Ablation, datasets, segmentors, seeds) -> list[Arm]:
    return [
        Arm(
            {"arm": "DDPS"},
            _cfg(ctx, ds, _dataset_segs(ctx.profile, ds, segmentors)[0], seeds[0]),
            [EvalSpec()],
            artifacts=True,
        )
        for ds in datasets
    ]


WIDTHS = (16, 32, 64)


PAPER_WIDTHS = (128, 256)


def performance_arms(ctx: Ablation, datasets, segmentors, seeds) -> list[Arm]:
    arms = []
    seg = _segs(ctx.profile, segmentors)[0]
    for ds in datasets:
        for seed in seeds:
            ref = _cfg(ctx, ds, seg, seed)
            widths = ctx.levels_of(
                "width", PAPER_WIDTHS if ctx.profile in PAPER_PROFILES else WIDTHS, ref.unet.width
            )
            for width in widths:
                cfg = _cfg(ctx, ds, seg, seed, **{"unet.width": width})
                counts = _num_evals(ctx, (1, 2, 5), cfg.diffusion.num_steps)
                evals = [EvalSpec((("sampler", "single_step"), ("num_evals", 1)))]
                evals += [
                    EvalSpec((("sampler", "free_renoise"), ("num_evals", n)))
                    for n in counts
                    if 1 < n <= cfg.diffusion.num_steps
                ]
                arms.append(Arm({"arm": f"width {width}", "width": str(width)}, cfg, evals, latency=True))
    return arms
