"""Ablation parameters of an experiment: the factors it varies, and a researcher's own levels and overrides.

Every experiment of the catalogue declares the factor(s) it varies (`FACTORS`); an experiment without one says
so. A notebook (or the Python API) may then ask its question with other values:

- ``levels``: ``{factor: [values]}`` replaces the default levels of the factors it names (a factor not named
  keeps its own; an empty list runs only the reference level). The profile's default level is always run too,
  as the reference the other levels are read against.
- ``overrides``: ``["key.sub=value", ...]`` (the CLI's syntax) change the profile's default run before the
  experiment derives its arms from it, so they apply to every arm (e.g. a shorter training budget).

Everything is checked here, before any work: an unknown factor or config key (with the closest valid name), a
value of the wrong type, a level outside the allowed values, an override of a key the experiment itself varies.
A run with levels or overrides is an *ablation*: its rows carry ``ablation = <id>`` (`Ablation.id`, a hash of
the experiment, the overrides and the levels), so they share the store with the default study without ever
entering its tables, and its trainings are shared with the default study's wherever the configs are equal.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from diffseg.config import ConfigError, apply_overrides
from diffseg.profiles import profile_config

ABLATION_COLUMN = "ablation"


@dataclass(frozen=True)
class Factor:
    """One factor an experiment varies.

    ``key``: the config key a level sets (its values are then checked by the config itself), or None where the
    experiment maps a level itself (e.g. one- vs two-stage training). ``choices``: the allowed levels where they
    are a closed set. ``kind``: the type of a level (``int`` or ``str``).
    """

    name: str
    doc: str
    kind: type = str
    choices: tuple[Any, ...] | None = None
    key: str | None = None


_SAMPLERS = ("strict", "strict_release", "free_renoise")
_NUM_EVALS = Factor("num_evals", "network evaluations at test time (1: the single-step sampler)", int)

FACTORS: dict[str, tuple[Factor, ...]] = {
    "main_results": (),
    "naive_integration": (),
    "noise_object_and_type": (
        Factor(
            "noise_object", "what the noise is added to", str, ("gt", "base", "first"), "refiner.noise_object"
        ),
        Factor(
            "kernel",
            "the type of noise",
            str,
            ("uniform", "absorbing", "mask_replace", "gaussian"),
            "diffusion.kernel",
        ),
    ),
    "inference_scheme": (
        Factor(
            "sampler", "the inference scheme (the single step always runs)", str, _SAMPLERS, "eval.sampler"
        ),
        _NUM_EVALS,
    ),
    "schedule_and_T": (
        Factor("schedule", "the keep-probability schedule", str, ("linear", "cosine"), "diffusion.schedule"),
        Factor("num_steps", "the number of diffusion steps T", int, None, "diffusion.num_steps"),
    ),
    "condition_and_training": (
        Factor(
            "condition",
            "what the denoiser is conditioned on",
            str,
            ("features", "logits", "mask"),
            "refiner.condition",
        ),  # fmt: skip
        Factor(
            "training", "one or two training stages (same total iterations)", str, ("two-stage", "one-stage")
        ),
        Factor("ema", "EMA of the weights", str, ("on", "off")),
    ),
    "qualitative": (),
    "performance": (Factor("width", "the UNet's base width", int, None, "unet.width"), _NUM_EVALS),
    "mask_prior": (),
}

# Keys an override may not set: they are the notebook's own parameters (datasets, segmentors, seeds, device).
_SELECTION_KEYS = {
    "seed": "seeds",
    "data.dataset": "datasets",
    "segmentor.name": "segmentors",
    "device": "device",
    "name": None,
}


def _closest(word: str, valid: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, list(valid), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _parse_text(value: Any, what: str) -> Any:
    """papermill's ``-p`` passes text: read it as YAML (JSON is YAML), e.g. ``'{"num_steps": [5, 10]}'``."""
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {value!r} is not valid YAML / JSON: {str(e).splitlines()[0]}") from e


def parse_overrides(overrides: Any) -> tuple[str, ...]:
    """``overrides`` (a list of ``key=value``, a ``{key: value}`` mapping, or their YAML text) as key=value."""
    value = _parse_text(overrides, "overrides") if overrides else []
    if isinstance(value, str):  # one override given as text
        value = [value]
    if isinstance(value, Mapping):
        value = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in value.items()]
    if not isinstance(value, list | tuple):
        raise ConfigError(f"overrides must be a list of 'key.sub=value' strings, got {overrides!r}")
    out = []
    for item in value:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(
                f"override {item!r} is not of the form key.sub=value (e.g. train.stage2_iterations=200)"
            )
        key, val = item.split("=", 1)
        out.append(f"{key.strip()}={val.strip()}")
    return tuple(out)


def parse_levels(experiment: str, levels: Any) -> dict[str, tuple[Any, ...]]:
    """``levels`` (a mapping or its YAML text) checked against the factors of ``experiment``: names, types,
    allowed values. Returns ``{factor: levels}`` in the factors' declared order."""
    value = _parse_text(levels, "levels") if levels else {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"levels must be a mapping {{factor: [values]}}, got {levels!r}")
    factors = {f.name: f for f in FACTORS[experiment]}
    if value and not factors:
        raise ConfigError(
            f"levels: experiment '{experiment}' varies no factor, so it takes no levels (got "
            f"{', '.join(map(str, value))}); change its runs with overrides, datasets, segmentors or seeds"
        )
    for name in value:
        if name not in factors:
            raise ConfigError(
                f"levels: unknown factor '{name}' for {experiment}{_closest(str(name), list(factors))}; "
                f"its factors: {', '.join(factors)}"
            )
    out: dict[str, tuple[Any, ...]] = {}
    for name, factor in factors.items():
        if name not in value:
            continue
        raw = value[name]
        items = list(raw) if isinstance(raw, list | tuple) else [raw]
        checked = []
        for item in items:
            if factor.kind is int and (isinstance(item, bool) or not isinstance(item, int)):
                raise ConfigError(f"levels['{name}'] = {item!r} is not an integer ({factor.doc})")
            if factor.kind is str and not isinstance(item, str):
                raise ConfigError(f"levels['{name}'] = {item!r} is not a string ({factor.doc})")
            if factor.choices is not None and item not in factor.choices:
                raise ConfigError(
                    f"levels['{name}'] = {item!r} is not allowed{_closest(str(item), factor.choices)}; "
                    f"allowed: {', '.join(map(str, factor.choices))}"
                )
            if item not in checked:
                checked.append(item)
        out[name] = tuple(checked)
    return out


@dataclass(frozen=True)
class Ablation:
    """What an experiment runs: its profile, the overrides applied to every arm and its own factor levels.

    The default study is ``Ablation(experiment, profile)`` (no overrides, no levels).
    """

    experiment: str
    profile: str
    overrides: tuple[str, ...] = ()
    levels: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def is_default(self) -> bool:
        return not self.overrides and not self.levels

    @property
    def id(self) -> str:
        """A short hash of the experiment, the overrides and the levels ("" for the default study)."""
        if self.is_default:
            return ""
        blob = json.dumps(
            {
                "experiment": self.experiment,
                "overrides": sorted(self.overrides),
                "levels": {k: sorted(map(str, v)) for k, v in sorted(self.levels.items())},
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:8]

    def levels_of(self, factor: str, default: Sequence[Any], reference: Any = None) -> tuple[Any, ...]:
        """The levels to run of ``factor``: the default study's ``default`` unless ``levels`` names it; then
        the given ones, with ``reference`` (the profile's default level) put first when missing."""
        if factor not in self.levels:
            return tuple(default)
        given = self.levels[factor]
        if reference is not None and reference not in given:
            return (reference, *given)
        return given

    def base_config(self, dataset: str, segmentor: str | None, seed: int) -> Any:
        """The profile's default run with the overrides applied: what every arm starts from."""
        if not self.overrides:
            return profile_config(self.profile, dataset, segmentor, seed)
        return apply_overrides(profile_config(self.profile, dataset, segmentor, seed), list(self.overrides))

    def describe(self) -> str:
        """One line per setting that differs from the default study (empty for the default study)."""
        lines = []
        if self.levels:
            lines += [f"levels of {k}: {', '.join(map(str, v)) or '(the reference only)'}" for k, v in
                      self.levels.items()]  # fmt: skip
        if self.overrides:
            lines.append(f"overrides on every arm: {', '.join(self.overrides)}")
        return "\n".join(lines)


def make_ablation(experiment: str, profile: str, overrides: Any = None, levels: Any = None) -> Ablation:
    """Check ``overrides`` and ``levels`` for ``experiment`` under ``profile`` (before any work) and return
    the `Ablation` they describe. Raises `ConfigError` with one line naming the key and what is allowed."""
    if experiment not in FACTORS:
        raise ConfigError(f"unknown experiment '{experiment}'{_closest(experiment, list(FACTORS))}")
    parsed = parse_overrides(overrides)
    varied = {f.key: f.name for f in FACTORS[experiment] if f.key}
    for item in parsed:
        key = item.split("=", 1)[0]
        if key in _SELECTION_KEYS:
            param = _SELECTION_KEYS[key]
            raise ConfigError(
                f"override '{item}': {key} is "
                + (f"chosen by the notebook's '{param}' parameter" if param else "set by the study")
            )
        if key in varied:
            raise ConfigError(
                f"override '{item}': {key} is the factor '{varied[key]}' of {experiment}; give its values as "
                f"levels={{'{varied[key]}': [...]}}"
            )
    ablation = Ablation(experiment, profile, parsed, parse_levels(experiment, levels))
    base = ablation.base_config("ade20k", None, 0)  # unknown keys and bad values fail here, with their name
    for factor in FACTORS[experiment]:
        if factor.key and not factor.key.startswith("eval.") and factor.name in ablation.levels:
            for level in ablation.levels[factor.name]:
                try:
                    apply_overrides(base, {factor.key: level})
                except ConfigError as e:
                    raise ConfigError(f"levels['{factor.name}'] = {level!r}: {e}") from e
    return ablation


__all__ = [
    "ABLATION_COLUMN",
    "FACTORS",
    "Ablation",
    "Factor",
    "make_ablation",
    "parse_levels",
    "parse_overrides",
]
