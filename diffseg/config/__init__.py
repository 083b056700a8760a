"""Typed, frozen configuration for every component (``schema``) and its dict / YAML round trip (``serialize``).

``from diffseg.config import ExperimentConfig, load_config, apply_overrides, config_hash, replace`` is the public face.
"""

from diffseg.config.schema import (
    ConfigError,
    DataConfig,
    DiffusionConfig,
    EvalConfig,
    ExperimentConfig,
    OptimConfig,
    RefinerConfig,
    SegmentorConfig,
    TrainConfig,
    UNetConfig,
)
from diffseg.config.serialize import (
    apply_overrides,
    config_hash,
    from_dict,
    identity_dict,
    load_config,
    replace,
    save_config,
    to_dict,
)

__all__ = [
    "ConfigError",
    "DataConfig",
    "DiffusionConfig",
    "EvalConfig",
    "ExperimentConfig",
    "OptimConfig",
    "RefinerConfig",
    "SegmentorConfig",
    "TrainConfig",
    "UNetConfig",
    "apply_overrides",
    "config_hash",
    "identity_dict",
    "from_dict",
    "load_config",
    "replace",
    "save_config",
    "to_dict",
]
