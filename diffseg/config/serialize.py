"""Configs to and from plain dicts, YAML files and ``key.sub=value`` overrides; the run identity hash.

An unknown key is an error that names the valid ones, so a typo never silently falls back to a default.
``config_hash`` is the run's identity in the results store.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from diffseg.config.schema import ConfigError, ExperimentConfig


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML / CLI value to the annotated type, or raise naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' expects a mapping of {tp.__name__} fields, got {value!r}")
        return _from_dict(tp, value, prefix=f"{key}.")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key '{key}' expects a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"config key '{key}' expects {len(args)} values, got {list(value)!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"config key '{key}' expects true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | str | float):
            raise ConfigError(f"config key '{key}' expects an integer, got {value!r}")
        try:
            as_float = float(value)
        except ValueError as e:
            raise ConfigError(f"config key '{key}' expects an integer, got {value!r}") from e
        if as_float != int(as_float):
            raise ConfigError(f"config key '{key}' expects an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config key '{key}' expects a number, got {value!r}") from e
    if tp is str:
        if not isinstance(value, str | int | float):
            raise ConfigError(f"config key '{key}' expects a string, got {value!r}")
        return str(value)
    return value


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; "
            f"valid keys{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if f.name not in kwargs and dataclasses.is_dataclass(hints[f.name]):
                kwargs[f.name] = hints[f.name]()
    return cls(**kwargs)


def from_dict(data: dict[str, Any], cls: type = ExperimentConfig) -> Any:
    """Build a config from a (possibly partial) nested dict; missing keys take their defaults."""
    return _from_dict(cls, data or {})


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: ExperimentConfig, overrides: list[str] | dict[str, Any]) -> ExperimentConfig:
    """Apply ``key.sub=value`` overrides (CLI style) or a flat ``{"key.sub": value}`` dict."""
    items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides]
    data = to_dict(cfg)
    for key, value in items:
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            if part not in node or not isinstance(node[part], dict):
                valid = ", ".join(k for k, v in node.items() if isinstance(v, dict))
                raise ConfigError(
                    f"unknown config section '{'.'.join(parts[: i + 1])}'; valid sections: {valid}"
                )
            node = node[part]
        if parts[-1] not in node:
            match = difflib.get_close_matches(key, list(_flat_keys(data)), n=1)
            hint = f" (did you mean '{match[0]}'?)" if match else ""
            raise ConfigError(
                f"unknown config key '{key}'{hint}; valid keys"
                f"{' under ' + '.'.join(parts[:-1]) if len(parts) > 1 else ''}: {', '.join(node)}"
            )
        node[parts[-1]] = _parse_scalar(value) if isinstance(value, str) else value
    return from_dict(data)


def _flat_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    """Every leaf key of a config dict, dotted (``train.stage2_iterations``)."""
    out = []
    for k, v in data.items():
        out += _flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


def _split_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(
            f"override '{text}' is not of the form key.sub=value (e.g. train.stage2_iterations=500)"
        )
    key, value = text.split("=", 1)
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply CLI overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ConfigError(
                f"{path} is not valid YAML{where}: {getattr(e, 'problem', None) or e}"
            ) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"{path}: expected a YAML mapping at the top level, got {type(loaded).__name__}"
            )
        data = loaded or {}
    cfg = from_dict(data)
    return apply_overrides(cfg, overrides or [])


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from diffseg.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


# Keys that do not change what a run computes; they are left out of its identity.
_NON_IDENTITY = {
    ("name",),
    ("device",),
    ("data", "num_workers"),
    ("train", "log_every"),
    ("data", "root"),
    ("train", "micro_batch"),  # how a step is split in memory, as the process count: the same training
}


# Keys added after results were stored, with their defaults: at the default they are left out of the identity, so
# adding an option does not rename the trainings and evaluations stored before it existed (none of which used it).
_IDENTITY_ONLY_IF_SET = {
    ("eval", "select"): "final",
    ("optim", "policy"): "step",
    ("refiner", "release_time"): False,
    ("segmentor", "random_init"): False,
}


def identity_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """``to_dict(cfg)`` without the keys that do not change what a run computes (its identity's content)."""
    data = to_dict(cfg)
    drop = [*_NON_IDENTITY, *(p for p, default in _IDENTITY_ONLY_IF_SET.items() if _get(data, p) == default)]
    for path in drop:
        node = data
        for part in path[:-1]:
            node = node[part]
        node.pop(path[-1], None)
    return data


def _get(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def config_hash(cfg: ExperimentConfig, length: int = 12) -> str:
    """A stable hash of everything that changes a run's numbers (its identity in the results store)."""
    blob = json.dumps(identity_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def replace(cfg: Any, **changes: Any) -> Any:
    """dataclasses.replace, re-exported so callers need one import."""
    return dataclasses.replace(cfg, **changes)
