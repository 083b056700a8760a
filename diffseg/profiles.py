"""Profiles: one study, three sizes (design.md). A profile changes sizes and data, never code paths.

- ``smoke``: seconds; the tests run every notebook on it.
- ``cpu``: the whole study on the synthetic datasets (written in the real ADE20K / Cityscapes layouts), small
  SegFormer and DeepLabV3+ presets trained from scratch, on a 2-core CPU.
- ``paper``: ADE20K and Cityscapes with the six pretrained base segmentors and the release's settings, on GPUs.
- ``paper-dry``: the ``paper`` study's code paths at its sizes, two iterations a stage, on synthetic scenes written
  at the real image sizes, with the real base architectures kept at random weights: run it (``make reproduce
  PROFILE=paper DRY_RUN=1``) before spending GPU hours. Its numbers are noise.
"""

from __future__ import annotations

import os

from diffseg.config import (
    DataConfig,
    DiffusionConfig,
    EvalConfig,
    ExperimentConfig,
    OptimConfig,
    RefinerConfig,
    SegmentorConfig,
    TrainConfig,
    UNetConfig,
    replace,
)

PROFILES = ("smoke", "cpu", "paper", "paper-dry")
# the profiles with the paper's arms, models and settings (the dry run at two iterations a stage)
PAPER_PROFILES = ("paper", "paper-dry")
DATASETS = ("ade20k", "cityscapes")

# Base segmentors of each profile (the paper's six; CPU presets of both families otherwise).
SEGMENTORS = {
    "smoke": ("segformer-tiny",),
    "cpu": ("segformer-tiny", "deeplabv3plus-tiny"),
    # the release's frozen bases as mmseg 0.30 built them, loaded from its model-zoo files (segmentors.zoo)
    "paper": (
        "deeplabv3plus-m-v2-d8",
        "segformer-b0-mmseg",
        "deeplabv3plus-r50-d8",
        "segformer-b2-mmseg",
        "deeplabv3plus-r101-d8",
        "segformer-b5-mmseg",
    ),
}
SEGMENTORS["paper-dry"] = SEGMENTORS["paper"]

# Iterations of the synthetic profiles' bases, trained from scratch (lr 4e-3, decays at 1/2 and 3/4): a pilot
# SegFormer-tiny (ADE20K layout) is still rising at 1200 (17.9 curve-subset mIoU) and flat at 1600 (19.7 -> 19.9),
# where DeepLabV3+-tiny was flat at 800 in the previous study (20.6 -> 20.5); a segmentor not named here trains 800.
BASE_ITERATIONS = {"segformer-tiny": 1600, "deeplabv3plus-tiny": 800}

# The UNet width the release pairs with each base segmentor (paper.md, "Parameter counts").
PAPER_WIDTH = {
    "deeplabv3plus-m-v2-d8": 128,
    "segformer-b0-mmseg": 128,
    "deeplabv3plus-r50-d8": 128,
    "segformer-b2-mmseg": 256,
    "deeplabv3plus-r101-d8": 256,
    "segformer-b5-mmseg": 256,
}

_PAPER_NOTE = (
    "**Profile `paper`**: ADE20K and Cityscapes, the release's six frozen bases (mmseg 0.30 model-zoo "
    "checkpoints), the release's settings (T = 100, UNet width 128 / 256, 80k + 160k iterations, batch 4 per GPU "
    "x 8 GPUs)."
)
_DRY_NOTE = (
    "**Profile `paper-dry`**: the paper study's code paths at the paper's sizes (512x512 / 512x1024 crops, T = 100, "
    "UNet width 128 / 256, the six base architectures at random weights) for two iterations a stage, on synthetic "
    "scenes written at ADE20K ({ade}) and Cityscapes ({cs}) image sizes; one arm of each kind, the ablations on "
    "the first base (DeepLabV3+ MobileNetV2-D8), Cityscapes on SegFormer-B0 (sliding windows). A check that the paper study runs end to end before GPU hours are spent: its numbers "
    "are noise."
)


def notes(profile: str) -> str:
    """What a profile trades, written from its actual configs (so it cannot drift from them)."""
    _check(profile=profile)
    if profile == "paper":
        return _PAPER_NOTE
    if profile == "paper-dry":
        a, c = data_config("ade20k", profile), data_config("cityscapes", profile)
        return _DRY_NOTE.format(
            ade=f"{a.synth_size[0]}x{a.synth_size[1]}", cs=f"{c.synth_size[0]}x{c.synth_size[1]}"
        )
    a, c = profile_config(profile, "ade20k"), profile_config(profile, "cityscapes")
    base_iters = ", ".join(
        f"{seg} for {profile_config(profile, 'ade20k', seg).segmentor.train_iterations} iterations"
        for seg in SEGMENTORS[profile]
    )
    purpose = (
        "a plumbing check; its numbers are noise"
        if profile == "smoke"
        else "the whole study on a 2-core CPU (the README gives its measured time)"
    )
    return (
        f"**Profile `{profile}`**: {purpose}. Synthetic scenes written in the real on-disk layouts: ADE20K-style "
        f"rooms of {a.data.synth_size[0]}x{a.data.synth_size[1]} ({a.data.synth_n_train} train / "
        f"{a.data.synth_n_val} val, {a.data.crop_size[0]}x{a.data.crop_size[1]} crops, 150-class label space) and "
        f"Cityscapes-style streets of {c.data.synth_size[0]}x{c.data.synth_size[1]} (19 classes). Base segmentors "
        f"are trained from scratch ({base_iters}; one fixed base per dataset and segmentor; seeds vary the "
        f"refiner). Refiner: UNet width {a.unet.width}, "
        f"dim_mults {a.unet.dim_mults}, {a.unet.blocks} ResNet block(s) per level, attention heads of "
        f"{a.unet.attention_head_channels} channels, T = {a.diffusion.num_steps}, {a.train.stage1_iterations} stage-1 + "
        f"{a.train.stage2_iterations} stage-2 iterations at batch {a.data.batch_size}, EMA momentum "
        f"{a.train.ema_momentum} every {a.train.ema_interval} iteration(s), {a.eval.num_evals} network evaluations "
        f"at test time; a learning-curve point every {a.train.eval_every} iterations (report 10). Traded for time "
        f"against the release: image size, iterations, widths, UNet depth, T and the number of "
        f"test scales ({len(a.eval.scales)}); the findings are tested at this scale only."
    )


def scale(profile: str) -> str:
    """One sentence for the top of every report page: what data and scale a profile's numbers come from."""
    _check(profile=profile)
    if profile == "paper":
        return (
            "Profile paper: ADE20K and Cityscapes (the real datasets), the release's six frozen bases and its "
            "settings."
        )
    if profile == "paper-dry":
        return (
            "Profile paper-dry: a dry run of the paper study (two iterations a stage, random-weight bases, "
            "synthetic scenes at the real image sizes). Its numbers are noise: it checks that the code runs."
        )
    a, c = profile_config(profile, "ade20k"), profile_config(profile, "cityscapes")
    return (
        f"Profile {profile}: synthetic scenes written in the ADE20K layout ({a.data.synth_size[0]}x"
        f"{a.data.synth_size[1]} px) and the Cityscapes layout ({c.data.synth_size[0]}x{c.data.synth_size[1]} px), "
        f"small models trained from scratch on CPU. Its numbers test the method at this scale: they are not "
        f"ADE20K or Cityscapes results"
        + (", and the smoke profile's are noise." if profile == "smoke" else ".")
    )


def data_config(dataset: str, profile: str, root: str | None = None) -> DataConfig:
    """The data section of a profile. ``root`` defaults to $ADE20K_ROOT / $CITYSCAPES_ROOT for ``paper`` and to
    ``$DIFFSEG_DATA/<profile>/<dataset>`` (``data/...``) for the synthetic profiles."""
    _check(dataset=dataset, profile=profile)
    if profile == "paper-dry":
        # the paper's pipeline on scenes of the real sizes: ADE20K's typical 512x683 photos, Cityscapes' 1024x2048
        return replace(
            data_config(dataset, "paper"),
            root=root or f"{os.environ.get('DIFFSEG_DATA', 'data')}/{profile}/{dataset}",
            num_workers=0,
            synthetic=True,
            synth_n_train=4,
            synth_n_val=2,
            synth_size=(512, 683) if dataset == "ade20k" else (1024, 2048),
            synth_seed=0 if dataset == "ade20k" else 1,
        )
    if profile == "paper":
        env = "ADE20K_ROOT" if dataset == "ade20k" else "CITYSCAPES_ROOT"
        root = root or os.environ.get(env) or f"data/{dataset}"
        if dataset == "ade20k":
            return DataConfig(
                dataset=dataset,
                root=root,
                scale=(2048, 512),
                crop_size=(512, 512),
                test_scale=(2048, 512),
                batch_size=32,  # the release's 4 images per GPU x 8 GPUs (the global batch)
                num_workers=4,
            )
        return DataConfig(
            dataset=dataset,
            root=root,
            scale=(2048, 1024),
            crop_size=(512, 1024),
            test_scale=(2048, 1024),
            batch_size=32,
            num_workers=4,
        )
    small = profile == "smoke"
    if dataset == "ade20k":
        size = (48, 48) if small else (64, 64)
        crop = (48, 48)
    else:
        size = (32, 64) if small else (48, 96)
        crop = size
    scale = (size[1], size[0])
    return DataConfig(
        dataset=dataset,
        root=root or f"{os.environ.get('DIFFSEG_DATA', 'data')}/{profile}/{dataset}",
        scale=scale,
        ratio_range=(0.75, 1.5),
        crop_size=crop,
        test_scale=scale,
        batch_size=8,
        num_workers=0,
        synthetic=True,
        synth_n_train=16 if small else 400,
        synth_n_val=4 if small else 100,
        synth_size=size,
        synth_seed=0 if dataset == "ade20k" else 1,
    )


def profile_config(
    profile: str, dataset: str = "ade20k", segmentor: str | None = None, seed: int = 0
) -> ExperimentConfig:
    """The default run (the release's method: uniform kernel, DFP, free re-noising, two stages, EMA) of a profile."""
    _check(dataset=dataset, profile=profile)
    segmentor = segmentor or SEGMENTORS[profile][0]
    if profile == "paper-dry":
        return dry_run(profile_config("paper", dataset, segmentor, seed), data_config(dataset, profile))
    data = data_config(dataset, profile)
    if profile == "paper":
        return ExperimentConfig(
            name=f"{dataset}-{segmentor}",
            seed=seed,
            data=data,
            segmentor=SegmentorConfig(name=segmentor, weights=_paper_weights(dataset, segmentor)),
            diffusion=DiffusionConfig(),
            # the release's UNet: weight-standardised convs, values / (h*w), conv -> 256 -> Dropout2d(0.1) -> K
            unet=UNetConfig(
                width=PAPER_WIDTH.get(segmentor, 256),
                weight_standardized=True,
                attention_scale_v=True,
                head_channels=256,
            ),
            refiner=RefinerConfig(),
            # the release's step policy: halved every 10k (stage 1) / 20k (stage 2) iterations, floored at 1e-6
            optim=OptimConfig(decay_every=(10_000, 20_000), min_lr=1e-6),
            # 15 learning-curve points over 80k + 160k iterations; 4 images a forward pass, as the release's
            # per-GPU batch: 8 GPUs take one micro-batch each, 1 GPU accumulates 8 (the same training)
            train=TrainConfig(eval_every=16_000, micro_batch=4),
            # the release's grid ends at the cleanest level: T = 100, 10 -> [100, 90, ..., 10, 1]
            eval=_paper_eval(dataset, segmentor),
        )
    small = profile == "smoke"
    return ExperimentConfig(
        name=f"{dataset}-{segmentor}",
        seed=seed,
        device="auto",
        data=data,
        segmentor=SegmentorConfig(
            name=segmentor,
            train_iterations=20 if small else BASE_ITERATIONS.get(segmentor, 800),
            lr=4e-3,
            weight_decay=0.01,
        ),
        diffusion=DiffusionConfig(kernel="uniform", schedule="linear", num_steps=10 if small else 20),
        # one ResNet block per level and 4 x 8 attention channels (the release: 2 and 4 x 32, i.e. 4x this width):
        # 1.39x faster a step (benchmarks/sweep_breakdown.py --unet) and no worse in a 700-iteration pilot
        unet=UNetConfig(
            width=16 if small else 32,
            dim_mults=(1, 1, 1),
            attention=True,
            groups=8,
            blocks=1,
            attention_head_channels=8,
        ),
        refiner=RefinerConfig(condition="features", embed_dim=16, noise_object="first"),
        # lr 2e-3 (not 1e-3) and the last decay at 3/4 of a stage, so the last two curve points fall after it and
        # the plateau criterion sees the final learning rate rather than the decay's jump. In one-seed pilots on a
        # 1200-iteration base, lr 2e-3 ended 100 + 500 iterations at 23.2 curve-subset mIoU, last step +0.3 (1e-3:
        # 23.2 after 600, 23.8 after 900; 4e-3: 22.6); the study's own curves, over 3 seeds, still rise by 0.4-2.6
        # over their last 100 iterations (report 10), so this budget is not yet a converged one
        optim=OptimConfig(lr=2e-3, warmup_iters=30, reference_batch=8, decay_at=(0.5, 0.75), grad_clip=1.0),
        train=TrainConfig(
            stage1_iterations=10 if small else 100,
            stage2_iterations=10 if small else 500,
            ema=True,
            ema_momentum=0.05,
            ema_interval=1,
            checkpoint_every=10 if small else 100,
            # a learning-curve point (diffseg.curves) every eval_every iterations, base and refiner alike
            eval_every=5 if small else 100,
            log_every=10 if small else 50,
            amp=False,
            channels_last=False,
        ),
        # Every synthetic image has one size, so evaluation batches; multi-scale uses three scales + flip.
        eval=EvalConfig(
            sampler="free_renoise",
            num_evals=3 if small else 5,
            mode="whole",
            batch_size=8,
            scales=(0.75, 1.0, 1.25),
        ),
    )


def _paper_weights(dataset: str, segmentor: str) -> str | None:
    """The zoo file of a release base (``$DIFFSEG_CHECKPOINTS/<file>``); None for a base the zoo table lacks (a
    name the user passes in), which the sweep then refuses before any work unless its weights are set."""
    from diffseg.segmentors.zoo import ZOO, zoo_weights

    return zoo_weights(dataset, segmentor) if (dataset, segmentor) in ZOO else None


def _paper_eval(dataset: str, segmentor: str) -> EvalConfig:
    """Each base is tested as its zoo figure was: whole images, except mmseg's Cityscapes SegFormers, which slide
    1024x1024 windows with stride 768 over the 1024x2048 image."""
    if dataset == "cityscapes" and segmentor.startswith("segformer"):
        return EvalConfig(
            num_evals=10, mode="slide", slide_crop=(1024, 1024), slide_stride=(768, 768), grid="release"
        )
    return EvalConfig(num_evals=10, mode="whole", grid="release")


def dry_run(cfg: ExperimentConfig, data: DataConfig) -> ExperimentConfig:
    """``cfg`` (a ``paper`` run) cut to a dry run: the same code paths and sizes, two iterations a stage, a
    random-weight base, learning-curve points and checkpoints at every second iteration, and a short test (two
    network evaluations on the release's grid, multi-scale at the smallest and largest of the paper's scales),
    a batch of 2."""
    return replace(
        cfg,
        data=replace(data, batch_size=2),  # half the release's 4 per GPU: a CPU dry run takes ~20 s a step
        segmentor=replace(cfg.segmentor, weights=None, random_init=True),
        optim=replace(cfg.optim, warmup_iters=1),
        train=replace(
            cfg.train,
            stage1_iterations=2,
            stage2_iterations=2,
            eval_every=2,
            checkpoint_every=2,
            log_every=1,
        ),
        eval=replace(cfg.eval, num_evals=2, scales=(0.5, 1.75)),
    )


def _check(dataset: str | None = None, profile: str | None = None) -> None:
    if profile is not None and profile not in PROFILES:
        raise ValueError(f"unknown profile '{profile}'; valid profiles: {', '.join(PROFILES)}")
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"unknown dataset '{dataset}'; valid datasets: {', '.join(DATASETS)}")
