"""Config round trip, overrides and the clear errors on unknown keys."""

from __future__ import annotations

import pytest

from diffseg.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    config_hash,
    from_dict,
    load_config,
    save_config,
    to_dict,
)


def test_round_trip_through_dict_and_yaml(tmp_path) -> None:
    cfg = apply_overrides(
        ExperimentConfig(), ["unet.width=64", "data.crop_size=[32, 48]", "eval.guidance=0.4"]
    )
    assert from_dict(to_dict(cfg)) == cfg
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert cfg.data.crop_size == (32, 48) and cfg.unet.width == 64


def test_unknown_key_names_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unet\.widht.*valid keys under unet: width"):
        from_dict({"unet": {"widht": 3}})
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.iters'.*stage1_iterations"):
        apply_overrides(ExperimentConfig(), ["train.iters=3"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides(ExperimentConfig(), ["train.stage1_iterations"])


def test_bad_value_types_are_named() -> None:
    with pytest.raises(ConfigError, match=r"'unet\.width' expects an integer"):
        from_dict({"unet": {"width": "wide"}})
    with pytest.raises(ConfigError, match=r"'data\.crop_size' expects 2 values"):
        from_dict({"data": {"crop_size": [1, 2, 3]}})


def test_hash_ignores_cosmetic_keys_only() -> None:
    base = ExperimentConfig()
    assert config_hash(base) == config_hash(apply_overrides(base, ["name=other", "data.num_workers=0"]))
    assert config_hash(base) != config_hash(apply_overrides(base, ["seed=1"]))


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "diffusion.kernel=unifrom",
            r"'diffusion\.kernel' = 'unifrom' is not valid; valid values: uniform, absorbing",
        ),
        (
            "diffusion.schedule=cos",
            r"'diffusion\.schedule' = 'cos' is not valid; valid values: linear, cosine",
        ),
        ("refiner.noise_object=prediction", r"'refiner\.noise_object' = 'prediction'.*gt, base, first"),
        ("refiner.condition=image", r"'refiner\.condition' = 'image'.*features, logits, mask"),
        ("eval.sampler=ddim", r"'eval\.sampler' = 'ddim'.*strict, strict_release, free_renoise, single_step"),
        ("eval.mode=sliding", r"'eval\.mode' = 'sliding'.*whole, slide"),
        ("data.dataset=coco", r"'data\.dataset' = 'coco'.*ade20k, cityscapes"),
        ("train.stage1_iterations=-5", r"'train\.stage1_iterations' must be >= 0, got -5"),
        ("data.batch_size=0", r"'data\.batch_size' must be >= 1, got 0"),
        ("eval.num_evals=0", r"'eval\.num_evals' must be >= 1"),
        ("train.ema_momentum=1.5", r"'train\.ema_momentum' must be in \(0, 1\]"),
        ("optim.decay_at=[0.5, 1.5]", r"'optim\.decay_at' must hold fractions in \(0, 1\]"),
        ("optim.lr=0", r"'optim\.lr' must be > 0"),
        ("diffusion.num_steps=0", r"'diffusion\.num_steps' must be >= 1"),
    ],
)
def test_invalid_values_fail_when_the_config_is_built(override, message) -> None:
    """A typo or an impossible number is an error naming the key, the value and the valid ones, raised by
    `apply_overrides` itself: before any data is read or any model is trained."""
    with pytest.raises(ConfigError, match=message):
        apply_overrides(ExperimentConfig(), [override])


def test_every_profile_config_is_valid() -> None:
    from diffseg.profiles import DATASETS, PROFILES, profile_config

    for profile in PROFILES:
        for dataset in DATASETS:
            cfg = profile_config(profile, dataset)
            assert from_dict(to_dict(cfg)) == cfg  # rebuilt through the checks
