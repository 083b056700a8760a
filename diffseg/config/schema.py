"""The config schema: one typed, frozen dataclass per component and the experiment config that names a run.

Defaults live in one place (the release's settings where paper.md gives them). Every config checks itself when
built (``__post_init__``): enumerated values against the registries that define them, and ranges, each error
naming the key, the value and what is valid. The dict / YAML round trip is ``diffseg.config.serialize``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the key and what was expected."""


# --------------------------------------------------------------------------------------------------------------
# checked when a config is built: a typo in an enumerated value or an impossible number fails here, before any
# base segmentor or refiner has trained (and before a run folder exists)


@functools.cache
def _choices() -> dict[str, tuple[str, ...]]:
    """Enumerated settings, from the registries that define them (imported on first use: they import torch, not the model zoos)."""
    from diffseg.diffusion import KERNELS, SAMPLERS, SCHEDULES, STEP_GRIDS
    from diffseg.models.options import CONDITIONS, NOISE_OBJECTS

    return {
        "data.dataset": ("ade20k", "cityscapes"),
        "diffusion.kernel": tuple(KERNELS),
        "diffusion.schedule": tuple(SCHEDULES),
        "refiner.condition": tuple(CONDITIONS),
        "refiner.noise_object": tuple(NOISE_OBJECTS),
        "eval.sampler": tuple(SAMPLERS),
        "eval.mode": ("whole", "slide"),
        "eval.grid": tuple(STEP_GRIDS),
        "eval.select": ("final", "best_val"),
        "optim.policy": ("step", "cosine"),
    }


def _check_choice(key: str, value: str) -> None:
    valid = _choices()[key]
    if value not in valid:
        raise ConfigError(f"config key '{key}' = {value!r} is not valid; valid values: {', '.join(valid)}")


def _check_at_least(key: str, value: float | None, low: float, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value < low:
        raise ConfigError(f"config key '{key}' must be >= {low:g}, got {value!r}")


def _check_positive(key: str, values: Any) -> None:
    for v in values if isinstance(values, tuple) else (values,):
        if not v > 0:
            raise ConfigError(f"config key '{key}' must be > 0, got {values!r}")


@dataclass(frozen=True)
class DataConfig:
    """Dataset, its on-disk root and the train / test pipelines (paper.md, "Training" and "Data conventions")."""

    dataset: str = "ade20k"  # ade20k | cityscapes
    root: str = "data/ade20k"
    reduce_zero_label: bool = True  # ADE20K only: 150 classes (True) or the release's 151-class mode (False)
    # Train pipeline: resize to `scale` (long, short side bound, as mmseg's img_scale) times a random ratio,
    # random crop with cat_max_ratio, flip, photometric distortion, normalise, pad with ignore.
    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    crop_size: tuple[int, int] = (512, 512)  # (H, W)
    cat_max_ratio: float = 0.75
    photometric: bool = True
    # Test pipeline: keep-ratio resize into `test_scale`.
    test_scale: tuple[int, int] = (2048, 512)
    # The global batch of a training step, over every process: N processes take batch_size / N images each, so
    # the config describes the training and the process count only how it runs (the lr scales with this number)
    batch_size: int = 4
    num_workers: int = 2
    # Synthetic data: written to `root` when it is missing and `synthetic` is true (the embedded default).
    synthetic: bool = False
    synth_n_train: int = 200
    synth_n_val: int = 50
    synth_size: tuple[int, int] = (128, 128)
    synth_seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("data.dataset", self.dataset)
        _check_at_least("data.batch_size", self.batch_size, 1)
        _check_at_least("data.num_workers", self.num_workers, 0)
        for key in ("scale", "crop_size", "test_scale", "ratio_range"):
            _check_positive(f"data.{key}", getattr(self, key))
        if self.ratio_range[0] > self.ratio_range[1]:
            raise ConfigError(
                f"config key 'data.ratio_range' must be (low, high) with low <= high, got {self.ratio_range}"
            )
        if self.synthetic:
            _check_at_least("data.synth_n_train", self.synth_n_train, 1)
            _check_at_least("data.synth_n_val", self.synth_n_val, 1)


@dataclass(frozen=True)
class SegmentorConfig:
    """The frozen base segmentor: a registry name and where its weights come from."""

    name: str = "segformer-b2"
    weights: str | None = None  # hub id, local folder or state-dict file; None = random init (or train it)
    # Training the base segmentor (job (a) of the engines): used when `weights` is None and iterations > 0.
    train_iterations: int = 0
    lr: float = 6e-4
    weight_decay: float = 0.01
    seed: int = 0  # the base training's seed, independent of the run's (refiner) seed
    # True: keep a frozen base at its random initialisation on purpose (the paper profile's dry run); otherwise
    # no weights and no base training is an error, since it would silently refine noise features
    random_init: bool = False

    def __post_init__(self) -> None:
        _check_at_least("segmentor.train_iterations", self.train_iterations, 0)
        _check_positive("segmentor.lr", self.lr)


@dataclass(frozen=True)
class DiffusionConfig:
    """The noise process: kernel, schedule and number of steps (t = 0 clean ... t = T pure noise)."""

    kernel: str = "uniform"  # uniform | absorbing | mask_replace | gaussian
    schedule: str = "linear"  # linear | cosine
    num_steps: int = 100

    def __post_init__(self) -> None:
        _check_choice("diffusion.kernel", self.kernel)
        _check_choice("diffusion.schedule", self.schedule)
        _check_at_least("diffusion.num_steps", self.num_steps, 1)


@dataclass(frozen=True)
class UNetConfig:
    """The time-conditioned UNet denoiser (paper.md: three levels of one width, dim_mults (1, 1, 1))."""

    width: int = 256
    dim_mults: tuple[int, ...] = (1, 1, 1)
    attention: bool = True
    groups: int = 8
    # the release's UNet (on in the paper profile): weight-standardised convs, linear-attention values / (h*w),
    # and its head: a 1x1 conv to head_channels, Dropout2d(head_dropout), a 1x1 conv to K (0: straight to K)
    weight_standardized: bool = False
    attention_scale_v: bool = False
    head_channels: int = 0
    head_dropout: float = 0.1
    blocks: int = 2  # ResNet blocks per level on each side (the release: 2)
    attention_head_channels: int = 32  # per head, 4 heads (the release: 32)

    def __post_init__(self) -> None:
        _check_at_least("unet.width", self.width, 1)
        _check_at_least("unet.head_channels", self.head_channels, 0)
        _check_at_least("unet.blocks", self.blocks, 1)
        _check_at_least("unet.attention_head_channels", self.attention_head_channels, 1)
        if not 0 <= self.head_dropout < 1:
            raise ConfigError(f"config key 'unet.head_dropout' must be in [0, 1), got {self.head_dropout!r}")
        _check_at_least("unet.groups", self.groups, 1)
        _check_positive("unet.dim_mults", self.dim_mults)


@dataclass(frozen=True)
class RefinerConfig:
    """What the denoiser sees and what noise is added to during training."""

    condition: str = "features"  # features | logits | mask
    embed_dim: int = 16
    embed_trainable: bool = False
    noise_object: str = "first"  # gt | base | first (Diffusion-on-First-Prediction)
    # the time embedding sees T - t, the release's index (0 noisiest, T - 1 cleanest), not t: only to run the
    # release's checkpoints (diffseg.release_checkpoint); the diffusion itself keeps t = 0 clean ... T noise
    release_time: bool = False

    def __post_init__(self) -> None:
        _check_choice("refiner.condition", self.condition)
        _check_choice("refiner.noise_object", self.noise_object)
        _check_at_least("refiner.embed_dim", self.embed_dim, 1)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup, then per stage either (``policy="step"``) step decay: x ``decay_gamma`` at
    fractions ``decay_at`` of each stage, or, with ``decay_every`` = (stage 1, stage 2) iterations, every that many
    iterations of the stage, floored at ``min_lr`` (the release: halved every 10k in stage 1 and every 20k or 50k in
    stage 2, floored at 1e-6; mmcv's ``step`` policy); or (``policy="cosine"``) a half cosine from ``lr`` to
    ``min_lr`` over each stage (``decay_*`` unused)."""

    lr: float = 1.5e-4
    betas: tuple[float, float] = (0.9, 0.96)
    weight_decay: float = 0.045
    warmup_iters: int = 1000
    decay_at: tuple[float, ...] = (0.5, 0.75)  # fractions of the stage's iterations where lr is multiplied
    decay_gamma: float = 0.5
    decay_every: tuple[int, int] = (0, 0)  # > 0: decay every N iterations of stage 1 / stage 2 (not decay_at)
    min_lr: float = 0.0  # floor of the decayed lr (before the warmup factor)
    policy: str = "step"  # "step" (decay_at / decay_every) or "cosine" (lr -> min_lr over each stage)
    grad_clip: float | None = None
    reference_batch: int = 32  # the batch the lr is tuned for; lr scales with the effective batch

    def __post_init__(self) -> None:
        _check_positive("optim.lr", self.lr)
        _check_at_least("optim.warmup_iters", self.warmup_iters, 0)
        _check_positive("optim.decay_gamma", self.decay_gamma)
        _check_at_least("optim.reference_batch", self.reference_batch, 1)
        if self.grad_clip is not None:
            _check_positive("optim.grad_clip", self.grad_clip)
        if len(self.decay_every) != 2 or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in self.decay_every
        ):
            raise ConfigError(
                f"config key 'optim.decay_every' must be two iteration counts >= 0 (stage 1, stage 2; 0: use "
                f"optim.decay_at), got {self.decay_every!r}"
            )
        _check_at_least("optim.min_lr", self.min_lr, 0)
        _check_choice("optim.policy", self.policy)
        if any(not 0 < f <= 1 for f in self.decay_at):
            raise ConfigError(
                f"config key 'optim.decay_at' must hold fractions in (0, 1], got {self.decay_at}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Two-stage refiner training (stage 1: single-step from a random mask; stage 2: multi-step, DFP)."""

    stage1_iterations: int = 80_000
    stage2_iterations: int = 160_000
    ema: bool = True
    ema_momentum: float = 0.01
    ema_interval: int = 25
    checkpoint_every: int = 2000
    eval_every: int = 0  # 0: evaluate only at the end
    # a free re-noising arm's curve points also score the strict sampler (finding 3's budget curve)
    curve_strict: bool = True
    log_every: int = 50
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    channels_last: bool = True  # on CUDA
    compile: bool = False  # torch.compile the denoiser (worth it on CUDA: benchmarks/train_step.py)
    # Images per forward/backward of the refiner in one process (0: the process's whole share of the batch); a
    # smaller value accumulates gradients over its micro-batches, so a global batch too large for one GPU's
    # memory still trains as one step. How a step runs, like the process count, not what it computes.
    micro_batch: int = 0

    def __post_init__(self) -> None:
        for key in ("stage1_iterations", "stage2_iterations", "checkpoint_every", "eval_every", "log_every"):
            _check_at_least(f"train.{key}", getattr(self, key), 0)
        _check_at_least("train.ema_interval", self.ema_interval, 1)
        _check_at_least("train.micro_batch", self.micro_batch, 0)
        if not 0 < self.ema_momentum <= 1:
            raise ConfigError(f"config key 'train.ema_momentum' must be in (0, 1], got {self.ema_momentum!r}")


@dataclass(frozen=True)
class EvalConfig:
    """Inference: sampler, step grid, test-time augmentation."""

    sampler: str = "free_renoise"  # strict | strict_release | free_renoise | single_step
    num_evals: int = 10  # network evaluations; the grid spreads them evenly from T down to 1
    # even: num_evals levels from T down (T, T - T/n, ...); release: the release's grid, which also evaluates
    # the cleanest level t = 1 (num_evals + 1 evaluations unless the stride reaches it)
    grid: str = "even"
    mode: str = "whole"  # whole | slide
    slide_crop: tuple[int, int] = (512, 512)
    slide_stride: tuple[int, int] = (341, 341)
    multi_scale: bool = False
    scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    flip: bool = True  # only with multi_scale
    guidance: float = 0.0
    batch_size: int = 1  # >1 only when every evaluated image has the same size (the synthetic data)
    max_images: int | None = None
    # final: the last (EMA) weights; best_val: those too, and beside them the weights of the best learning-curve
    # point (the release reports its best val checkpoint; diffseg.engines.best_val). Needs train.eval_every > 0
    select: str = "final"

    def __post_init__(self) -> None:
        _check_choice("eval.sampler", self.sampler)
        _check_choice("eval.mode", self.mode)
        _check_choice("eval.grid", self.grid)
        _check_choice("eval.select", self.select)
        _check_at_least("eval.num_evals", self.num_evals, 1)
        _check_at_least("eval.batch_size", self.batch_size, 1)
        _check_at_least("eval.guidance", self.guidance, 0)
        _check_at_least("eval.max_images", self.max_images, 1, allow_none=True)
        _check_positive("eval.scales", self.scales)
        if self.mode == "slide":
            _check_positive("eval.slide_crop", self.slide_crop)
            _check_positive("eval.slide_stride", self.slide_stride)


@dataclass(frozen=True)
class ExperimentConfig:
    """One run: everything needed to train and evaluate a base segmentor and its refiner."""

    name: str = "run"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    data: DataConfig = field(default_factory=DataConfig)
    segmentor: SegmentorConfig = field(default_factory=SegmentorConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    refiner: RefinerConfig = field(default_factory=RefinerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.eval.select == "best_val" and self.train.eval_every <= 0:
            raise ConfigError(
                "config key 'eval.select' = 'best_val' selects among learning-curve points, but "
                f"train.eval_every is {self.train.eval_every}; set train.eval_every > 0"
            )
