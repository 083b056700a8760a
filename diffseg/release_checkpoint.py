"""The authors' released DDPS checkpoints (OpenGVLab/DDPS, an mmseg 0.30 plugin) -> a diffseg run folder.

A release file is mmseg's ``{"state_dict": ..., "meta": ...}`` of an ``EncoderDecoderDiffusion``: the frozen base
(``backbone.*``, ``decode_head.convs.*`` / ``decode_head.fusion_conv.*``: mmseg's SegformerHead without its
classifier) and the refiner head (``decode_head.embed`` (K, 16), ``decode_head.unet.*`` (lucidrains' layout),
``decode_head.conv_seg_new`` (K, 256, 1, 1)), the head's schedule buffers ``decode_head.log_*`` and, when saved
during training, the EMA hook's ``ema_*`` copies. Those copies hold the *raw* weights: the hook swaps the EMA
weights into the model before the release evaluates and saves, so the plain keys are what it reported.

Refiner keys map one to one onto ``MaskPriorRefiner.denoiser`` (``_rename``); two facts need more than a name:
- the release concatenates (condition, embedded mask) at the UNet input, diffseg (embedded mask, condition):
  ``init_conv``'s input channels are permuted (``_permute_init_conv``);
- the release's UNet sees the index i = T - t (0 noisiest): the run's config sets ``refiner.release_time``.

The release keeps no base classifier (its ``conv_seg`` is None); diffseg's base rows need one, so the mmseg zoo
checkpoint the release froze gives ``decode_head.conv_seg`` (its 150 ADE20K classes are the release's 1..150).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from diffseg.config import (
    DataConfig,
    DiffusionConfig,
    EvalConfig,
    ExperimentConfig,
    RefinerConfig,
    SegmentorConfig,
    TrainConfig,
    UNetConfig,
    save_config,
)

if (
    TYPE_CHECKING
):  # torch and the segmentor zoo load on first use: `diffseg --help` lists the models without them
    import torch


@dataclass(frozen=True)
class ReleaseModel:
    """One released model: its release config, diffseg's base, T, K and the release's test-time settings."""

    release_config: str
    segmentor: str
    width: int
    num_steps: int
    num_evals: int  # the release's inference_timesteps (its grid then ends at the cleanest level)
    guidance: (
        float  # diffseg's w of (1 + w) cond - w uncond; the release's guidance_scale (1 means off there)
    )


RELEASE_MODELS: dict[str, ReleaseModel] = {
    # the multistep config as trained: T = 100, every level evaluated, no guidance
    "ade20k-b2-multistep": ReleaseModel(
        "configs/ade20k/segformer_b2_ade20k_multistep.py", "segformer-b2-mmseg", 256, 100, 100, 0.0
    ),
    # its inference config: T = 20, steps [0, 10, 19] (diffseg's t = 20, 10, 1), guidance 0.4
    "ade20k-b2-multistep-t20": ReleaseModel(
        "configs/ade20k/segformer_b2_ade20k_multistep_inference.py", "segformer-b2-mmseg", 256, 20, 2, 0.4
    ),
}
EMBED_DIM = 16  # the release's cat_embedding_dim
_BASE_HEAD = ("decode_head.convs.", "decode_head.fusion_conv.")
_SCHEDULE = ("log_cumprod_at", "log_cumprod_bt", "log_at", "log_bt")
# release unet key -> diffseg UNet key, applied in order to the part after "decode_head.unet."
_UNET_RULES = (
    (r"^final_res_block\.", "final_block."),
    (r"\.mlp\.1\.", ".time_mlp.1."),  # a ResNet block's time MLP (the top-level time_mlp keeps its name)
    (r"\.block([12])\.proj\.", r".block\1.conv."),
    (r"\.fn\.fn\.", "."),  # Residual(PreNorm(dim, attention)): the attention's own parameters
    (r"\.fn\.norm\.", ".norm."),  # ... and the pre-norm's gain
)


def _rename(key: str) -> str | None:
    """diffseg denoiser key of a release ``decode_head.*`` refiner key (None: not a refiner key)."""
    if key == "decode_head.embed.weight":
        return "embedding.weight"
    if key.startswith("decode_head.conv_seg_new."):
        return "unet.head.1." + key.removeprefix("decode_head.conv_seg_new.")
    if not key.startswith("decode_head.unet."):
        return None
    name = key.removeprefix("decode_head.unet.")
    for pattern, repl in _UNET_RULES:
        name = re.sub(pattern, repl, name)
    return "unet." + name


def _permute_init_conv(weight: torch.Tensor, embed_dim: int) -> torch.Tensor:
    """(O, C + e, k, k) with inputs (condition C, embedding e) -> (O, e + C, k, k) with (embedding, condition)."""
    import torch

    cond = weight.shape[1] - embed_dim
    return torch.cat((weight[:, cond:], weight[:, :cond]), dim=1)


def _fail(path: Path, what: str, keys: list[str]) -> ValueError:
    return ValueError(f"release checkpoint {path}: {len(keys)} {what} (e.g. {', '.join(keys[:3])})")


def split_release_state(
    state: dict[str, torch.Tensor], path: Path
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(base mmseg keys, refiner keys, schedule buffers)`` of a release state dict; anything else is an error.

    The EMA hook's ``ema_<key with _ for .>`` copies are dropped after checking that each shadows a plain key.
    """
    if not any(k.startswith("decode_head.unet.") for k in state):
        raise ValueError(
            f"{path} is not a DDPS release checkpoint: it has no decode_head.unet.* keys (expected an mmseg "
            f"EncoderDecoderDiffusion with a SegformerHeadUnetFCHead*, e.g. best_mIoU_iter_144000.pth)"
        )
    plain = {k.replace(".", "_") for k in state if not k.startswith("ema_")}
    base, refiner, schedule, unknown = {}, {}, {}, []
    for key, value in state.items():
        if key.startswith("ema_"):
            if key.removeprefix("ema_") not in plain:
                unknown.append(key)
        elif key.startswith("backbone.") or key.startswith(_BASE_HEAD):
            base[key] = value
        elif key.removeprefix("decode_head.") in _SCHEDULE:
            schedule[key.removeprefix("decode_head.")] = value
        elif _rename(key) is not None:
            refiner[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise _fail(path, "keys left unmapped", unknown)
    return base, refiner, schedule


def convert_refiner_state(
    refiner: dict[str, torch.Tensor], own: dict[str, torch.Tensor], path: Path
) -> dict[str, torch.Tensor]:
    """The release's refiner keys as ``MaskPriorRefiner.denoiser`` state (``own``: its state dict), checked one
    to one: a release key without a target, a target left over or a shape that differs is one ValueError."""
    from diffseg.segmentors.weights import fit_problems

    out: dict[str, torch.Tensor] = {}
    for key, value in refiner.items():
        target = _rename(key)
        if target in out or target not in own:
            raise _fail(path, "refiner keys with no diffseg module of that name", [key])
        if target == "unet.init_conv.weight":
            value = _permute_init_conv(value, own["embedding.weight"].shape[1])
        out[target] = value
    problems = fit_problems(out, own)
    if problems:
        raise ValueError(f"release checkpoint {path} does not fit diffseg's refiner: {'; '.join(problems)}")
    return out


def check_schedule(schedule: dict[str, torch.Tensor], cfg: ExperimentConfig, path: Path) -> None:
    """The head's buffers must be diffseg's uniform kernel on the linear schedule of the config's T and K.

    The release's ``log_cumprod_at`` is (T + 1,): abar_1..abar_T then a trailing log 1; ``log_cumprod_bt`` is
    log((1 - abar) / K) of the same. A file of another T (or K) fails here, naming both.
    """
    import torch

    from diffseg.diffusion import get_schedule

    if set(schedule) != set(_SCHEDULE):
        raise _fail(path, "schedule buffers missing", sorted(set(_SCHEDULE) - set(schedule)))
    steps = schedule["log_at"].shape[0]
    if steps != cfg.diffusion.num_steps:
        raise ValueError(
            f"release checkpoint {path} was trained with T = {steps} diffusion steps, the chosen model has "
            f"T = {cfg.diffusion.num_steps}; choose the release model with T = {steps}"
        )
    abar = get_schedule(cfg.diffusion.schedule, steps)[1:]
    expected_at = torch.log(abar).float()
    got_at = schedule["log_cumprod_at"][:steps].float()
    if not torch.allclose(got_at, expected_at, rtol=0, atol=1e-3):  # the release computes them in float32
        raise ValueError(
            f"release checkpoint {path}: its schedule buffer log_cumprod_at is not the {cfg.diffusion.schedule} "
            f"schedule of T = {steps} (max difference {float((got_at - expected_at).abs().max()):.3g})"
        )


def schedule_num_classes(schedule: dict[str, torch.Tensor]) -> int:
    """K from the buffers: at the noisiest level (1 - abar_T) / K = bt_T."""
    at, bt = schedule["log_cumprod_at"][-2].double().exp(), schedule["log_cumprod_bt"][-2].double().exp()
    return round(float((1 - at) / bt))


def release_config(model: str, name: str, data_root: str) -> ExperimentConfig:
    """The diffseg config of a released model: its base, UNet, kernel and test settings (ADE20K, 151 classes)."""
    if model not in RELEASE_MODELS:
        raise ValueError(f"unknown release model {model!r}; valid: {', '.join(RELEASE_MODELS)}")
    m = RELEASE_MODELS[model]
    return ExperimentConfig(
        name=name,
        data=DataConfig(dataset="ade20k", root=data_root, reduce_zero_label=False),
        segmentor=SegmentorConfig(name=m.segmentor),  # weights: base.safetensors in the run folder
        diffusion=DiffusionConfig(kernel="uniform", schedule="linear", num_steps=m.num_steps),
        unet=UNetConfig(
            width=m.width,
            dim_mults=(1, 1, 1),
            weight_standardized=True,
            attention_scale_v=True,
            head_channels=256,
            head_dropout=0.1,
        ),
        refiner=RefinerConfig(condition="features", embed_dim=EMBED_DIM, release_time=True),
        train=TrainConfig(stage1_iterations=0, stage2_iterations=1),  # nothing to train: a finished run
        eval=EvalConfig(sampler="free_renoise", num_evals=m.num_evals, grid="release", guidance=m.guidance),
    )


def _base_classifier(path: Path, num_classes: int) -> dict[str, torch.Tensor]:
    """``decode_head.conv_seg`` (K, 256, 1, 1) / (K,) from the mmseg zoo file the release froze.

    A 150-class ADE20K zoo head scores the release's classes 1..150; class 0 ("other", which the metrics ignore)
    gets a zero filter and a bias of -1e4, so the base never predicts it, as the zoo model never could.
    """
    import torch

    from diffseg.segmentors.mmseg_convert import read_mmseg_checkpoint

    state = read_mmseg_checkpoint(path)
    weight, bias = state.get("decode_head.conv_seg.weight"), state.get("decode_head.conv_seg.bias")
    if weight is None or bias is None:
        raise ValueError(
            f"base classifier file {path} has no decode_head.conv_seg (expected an mmseg zoo file)"
        )
    if weight.shape[0] == num_classes - 1:
        weight = torch.cat((torch.zeros_like(weight[:1]), weight))
        bias = torch.cat((torch.full_like(bias[:1], -1e4), bias))
    if weight.shape[0] != num_classes:
        raise ValueError(
            f"base classifier file {path} has {weight.shape[0]} classes; expected {num_classes} or {num_classes - 1}"
        )
    return {"decode_head.conv_seg.weight": weight, "decode_head.conv_seg.bias": bias}


def convert_release_checkpoint(
    path: str | os.PathLike[str],
    model: str,
    out: str | os.PathLike[str],
    base_classifier: str | os.PathLike[str],
    data_root: str = "data/ade20k",
) -> Path:
    """Write the run folder ``out`` (config.yaml, base.safetensors, checkpoints/, release.json) of a release file.

    Everything is checked before anything is written; each file is written atomically; an existing run folder
    is never overwritten. ``diffseg eval --run out`` then evaluates it.
    """
    from diffseg.atomic import atomic_write_text
    from diffseg.engines.checkpoints import refiner_signature, save_checkpoint
    from diffseg.models import build_refiner
    from diffseg.segmentors import build_segmentor, save_segmentor
    from diffseg.segmentors.mmseg_convert import convert_mmseg_state_dict, read_mmseg_checkpoint
    from diffseg.segmentors.weights import fit_problems

    path, out = Path(path).expanduser(), Path(out)
    if (out / "config.yaml").exists():
        raise ValueError(f"{out} already holds a run (config.yaml); choose a new --out folder")
    cfg = release_config(model, out.name, data_root)
    num_classes = 151
    state = read_mmseg_checkpoint(path)
    base, refiner_keys, schedule = split_release_state(state, path)
    check_schedule(schedule, cfg, path)
    if schedule_num_classes(schedule) != num_classes:
        raise ValueError(
            f"release checkpoint {path} has {schedule_num_classes(schedule)} classes; {model} has {num_classes}"
        )

    segmentor = build_segmentor(cfg.segmentor.name, num_classes, frozen=True)
    converted, unknown = convert_mmseg_state_dict(base, segmentor)
    if unknown:
        raise _fail(path, "base keys of another architecture", unknown)
    converted.update(_base_classifier(Path(base_classifier).expanduser(), num_classes))
    problems = fit_problems(converted, segmentor.state_dict())
    if problems:
        raise ValueError(
            f"release checkpoint {path}: its base does not fit {cfg.segmentor.name}: {'; '.join(problems)}"
        )
    segmentor.load_state_dict(converted, strict=True)
    refiner = build_refiner(cfg, segmentor)
    denoiser = convert_refiner_state(refiner_keys, refiner.denoiser.state_dict(), path)
    refiner.denoiser.load_state_dict(denoiser, strict=True)

    out.mkdir(parents=True, exist_ok=True)
    save_segmentor(segmentor, out / "base.safetensors")
    iteration = cfg.train.stage1_iterations + cfg.train.stage2_iterations
    payload = {
        "iteration": iteration,
        "denoiser": refiner.denoiser.state_dict(),
        "ema": None,  # the release's plain keys already hold its EMA weights
        "optimizer": {},
        "model_signature": refiner_signature(refiner),
    }
    save_checkpoint(out / "checkpoints", iteration, payload)
    provenance = {"release_checkpoint": str(path), "release_model": model, **RELEASE_MODELS[model].__dict__}
    atomic_write_text(out / "release.json", json.dumps(provenance, indent=1))
    save_config(cfg, out / "config.yaml")  # last: a folder with config.yaml is a complete run folder
    return out
