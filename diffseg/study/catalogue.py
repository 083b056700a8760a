"""The catalogue: every table and figure of paper.md as a named experiment (title, finding, arms, seeds and
datasets per profile)."""

from __future__ import annotations

from diffseg import profiles
from diffseg.study.arms import (
    Experiment,
    artifact_arms,
    condition_arms,
    inference_arms,
    main_arms,
    naive_arms,
    noise_arms,
    performance_arms,
    schedule_arms,
)

_BOTH = ("ade20k", "cityscapes")
_ALL = {"smoke": _BOTH, "cpu": _BOTH, "paper": _BOTH, "paper-dry": _BOTH}


_ABL = {"smoke": ("ade20k",), "cpu": ("ade20k",), "paper": _BOTH, "paper-dry": ("ade20k",)}


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "main_results",
            "Main results: base vs refined, per dataset and base segmentor",
            "",
            "Each base segmentor is frozen; the refiner (uniform kernel, DFP, free re-noising, two stages, EMA) is "
            "trained on top. Single-scale (all steps) and multi-scale + flip (final step).",
            main_arms,
            {"smoke": 1, "cpu": 3, "paper": 1, "paper-dry": 1},
            _ALL,
        ),
        Experiment(
            "naive_integration",
            "Finding 1: naive integrations of diffusion",
            "A simple integration of diffusion into segmentation is not enough; a poorly designed diffusion "
            "process can make mIoU worse than the base segmentor.",
            "Textbook setups (noise on the ground truth, strict posterior sampling, one training stage; and "
            "Gaussian diffusion on analog bits with DDIM) against the base segmentor and DDPS.",
            naive_arms,
            {"smoke": 1, "cpu": 3, "paper": 1, "paper-dry": 1},
            _ABL,
        ),
        Experiment(
            "noise_object_and_type",
            "Finding 2: what noise is added to vs the type of noise",
            "In training, what the noise is added to matters more than the type of noise.",
            "Noise object {ground truth, base prediction, first prediction (DFP)} x noise type {uniform, absorbing, "
            "mask-and-replace, Gaussian}; free re-noising at inference for all. The paper profile runs the full "
            "grid; the synthetic profiles run an L (the noise object under the uniform kernel, the kernel on the "
            "first prediction, mask-and-replace left out) to pay for trainings long enough to flatten.",
            noise_arms,
            {"smoke": 1, "cpu": 3, "paper": 1, "paper-dry": 1},
            _ABL,
        ),
        Experiment(
            "inference_scheme",
            "Finding 3: strict vs relaxed inference",
            "At inference, the strict diffusion denoising scheme is not needed; a relaxed, simpler scheme works "
            "even better.",
            "One trained DDPS model per seed, evaluated with the strict posterior, free re-noising and a single "
            "step, over step grids of several sizes; every evaluation's intermediate steps are recorded.",
            inference_arms,
            {"smoke": 1, "cpu": 3, "paper": 1, "paper-dry": 1},
            _ABL,
        ),
        Experiment(
            "schedule_and_T",
            "Noise schedule and number of steps",
            "",
            "Linear vs cosine cumulative keep-probability, T in {20, 50, 100}.",
            schedule_arms,
            {"smoke": 1, "cpu": 1, "paper": 1, "paper-dry": 1},
            _ABL,
        ),
        Experiment(
            "condition_and_training",
            "Condition, training stages and EMA",
            "",
            "Condition the denoiser on the segmentor's features, its logits or its argmax mask; one vs two training "
            "stages; EMA of the weights on / off. One factor varied at a time from the default.",
            condition_arms,
            {"smoke": 1, "cpu": 1, "paper": 1, "paper-dry": 1},
            _ABL,
        ),
        Experiment(
            "qualitative",
            "Qualitative results and denoising trajectories",
            "",
            "Validation images with ground truth, base and refined masks, boundary errors, and x_t / x0_hat per step.",
            artifact_arms,
            {"smoke": 1, "cpu": 1, "paper": 1, "paper-dry": 1},
            _ALL,
        ),
        Experiment(
            "performance",
            "Gain versus cost",
            "",
            "mIoU gain over the base against the refiner's cost (per-image latency relative to the base segmentor "
            "alone, and parameters), per number of network evaluations and per UNet width.",
            performance_arms,
            {"smoke": 1, "cpu": 1, "paper": 1, "paper-dry": 1},
            _ABL,
        ),
        Experiment(
            "mask_prior",
            "What the mask prior learned",
            "",
            "Ground truth noised to several levels and denoised in one step; samples from pure noise with the "
            "condition zeroed.",
            artifact_arms,
            {"smoke": 1, "cpu": 1, "paper": 1, "paper-dry": 1},
            _ALL,
        ),
    )
}


def profile_notes(profile: str) -> str:
    return profiles.notes(profile)
