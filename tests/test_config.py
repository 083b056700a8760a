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
