"""Segmentor state-dict files: what the engine saves after training a base segmentor, and how it is read back.

``.safetensors`` (preferred; the segmentor's name and class count go into its metadata) or ``.pt`` (a dict with
``name``, ``num_classes`` and ``state_dict``, or a bare state dict), loaded with ``weights_only=True``. Loading
checks that the file belongs to the requested model before touching it, so a checkpoint of another model or of
another label space fails with a message naming both, never with a half-loaded model.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from diffseg.atomic import atomic_write
from diffseg.segmentors.base import Segmentor

STATE_SUFFIXES: tuple[str, ...] = (".safetensors", ".pt", ".pth")
FORMAT = "diffseg-segmentor"  # the "format" entry of the files save_segmentor writes


def is_state_file(weights: str | os.PathLike[str]) -> bool:
    """True when ``weights`` names a state-dict file (by suffix), whether it exists or not."""
    return Path(weights).suffix.lower() in STATE_SUFFIXES


def save_segmentor(segmentor: Segmentor, path: str | os.PathLike[str]) -> Path:
    """Write ``segmentor``'s state dict to ``path`` (``.safetensors`` or ``.pt``) atomically; return the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in STATE_SUFFIXES:
        raise ValueError(f"segmentor file {path} must end in one of {', '.join(STATE_SUFFIXES)}")
    # clone: safetensors refuses tensors that share storage, and a state dict must not alias live parameters
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in segmentor.state_dict().items()}

    def write(tmp: str) -> None:
        if suffix == ".safetensors":
            meta = {"format": FORMAT, "name": segmentor.name, "num_classes": str(segmentor.num_classes)}
            save_file(state, tmp, metadata=meta)
        else:
            payload = {
                "format": FORMAT,
                "name": segmentor.name,
                "num_classes": segmentor.num_classes,
                "state_dict": state,
            }
            torch.save(payload, tmp)

    return atomic_write(path, write)


def read_state_file(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a state-dict file: ``(state_dict, metadata)``; metadata is empty for a bare state dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"segmentor weights file {path} does not exist")
    if path.suffix.lower() == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return load_file(str(path)), meta
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types; say which file and why
        raise ValueError(f"cannot read segmentor weights {path} as a weights-only torch file: {e}") from e
    if not isinstance(payload, dict):
        raise ValueError(f"segmentor weights {path} hold a {type(payload).__name__}, expected a state dict")
    if "state_dict" in payload and isinstance(payload["state_dict"], dict):
        meta = {k: str(payload[k]) for k in ("format", "name", "num_classes") if k in payload}
        return payload["state_dict"], meta
    return payload, {}


def fit_problems(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> list[str]:
    """What keeps ``state`` from loading strictly into a model whose state dict is ``own``: one phrase per kind
    (shape mismatches, missing keys, unexpected keys), each with a count and the first three; empty if it fits."""
    mismatched = [
        f"{k} {tuple(state[k].shape)} in the file vs {tuple(own[k].shape)} in the model"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    return [
        f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})"
        for label, keys in (
            ("shape mismatches", mismatched),
            ("missing keys", missing),
            ("unexpected keys", unexpected),
        )
        if keys
    ]


def load_segmentor_state(segmentor: Segmentor, path: str | os.PathLike[str]) -> None:
    """Load a state-dict file into ``segmentor`` after checking it was saved from the same model and label space."""
    state, meta = read_state_file(path)
    expected = f"'{segmentor.name}' with {segmentor.num_classes} classes"
    if "name" in meta and meta["name"] != segmentor.name:
        raise ValueError(
            f"segmentor weights {path} were saved from '{meta['name']}' "
            f"({meta.get('num_classes', '?')} classes); expected {expected}"
        )
    if "num_classes" in meta and meta["num_classes"] != str(segmentor.num_classes):
        raise ValueError(
            f"segmentor weights {path} have {meta['num_classes']} classes; expected {expected} "
            f"(num_classes={segmentor.num_classes})"
        )
    problems = fit_problems(state, segmentor.state_dict())
    if problems:
        raise ValueError(f"segmentor weights {path} do not fit {expected}: {'; '.join(problems)}")
    segmentor.load_state_dict(state, strict=True)
