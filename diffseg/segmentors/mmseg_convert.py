"""mmsegmentation 0.30 checkpoints -> the mmseg bases of :mod:`diffseg.segmentors.mmseg_bases`.

An mmseg zoo file is ``{"state_dict": {...}, "meta": {...}}`` (sometimes also ``optimizer``), or a bare state dict.
``torch.load(weights_only=True)`` reads it: the meta holds only str / int / float / list / dict values (mmcv's
``save_checkpoint`` writes ``mmcv_version``, ``time``, ``CLASSES``, ``PALETTE``, ``env_info``, ``config`` as
str), which the weights-only unpickler allows; a file it refuses is reported, never unpickled unsafely.

Key mapping (the decode head's keys are mmseg's, see :mod:`diffseg.segmentors.mmseg_heads`):

- MiT (mmseg ``backbone.layers.{i}``) -> transformers ``backbone.stages.{i}``: ``.0`` PatchEmbed
  (``projection``, ``norm``) -> ``patch_embeddings.{proj,layer_norm}``; ``.1.{j}`` TransformerEncoderLayer:
  ``norm1/norm2`` -> ``layernorm_before/after``, ``attn.attn.in_proj_{weight,bias}`` (q, k, v stacked) ->
  ``attention.{q,k,v}_proj``, ``attn.attn.out_proj`` -> ``attention.o_proj``, ``attn.sr`` / ``attn.norm`` ->
  ``attention.sequence_reduction.{sequence_reduction,layer_norm}``, ``ffn.layers.{0,1,4}`` (1x1 conv,
  depthwise 3x3, 1x1 conv) -> ``mlp.{fc1,dwconv.dwconv,fc2}`` (1x1 conv weights (O, I, 1, 1) -> linear (O, I));
  ``.2`` -> ``layer_norm``.
- ResNetV1c -> timm: ``backbone.stem.{0,1,3,4,6}`` -> ``backbone.conv1.{0,1,3,4,6}``, ``backbone.stem.7`` ->
  ``backbone.bn1``; ``layer{1..4}`` keys are the same in both.
- MobileNetV2 (:mod:`diffseg.segmentors.mmseg_mobilenet` carries mmseg's names): ``backbone.conv1.*`` and
  ``backbone.layer{1..7}.*`` are kept as they are; any other backbone key belongs to another architecture.
- ``auxiliary_head.*`` (the zoo DeepLabs' training-only FCN head) is dropped.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from diffseg.segmentors.base import Segmentor
from diffseg.segmentors.mmseg_bases import MmsegDeepLabV3Plus, MmsegSegFormer
from diffseg.segmentors.mmseg_mobilenet import MobileNetV2
from diffseg.segmentors.weights import FORMAT, fit_problems, load_segmentor_state

_IGNORED_PREFIXES = ("auxiliary_head.",)

# mmseg MiT key suffix inside backbone.layers.{i}.1.{j}. -> transformers suffix inside stages.{i}.blocks.{j}.
_MIT_BLOCK = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.attn.out_proj": "attention.o_proj",
    "attn.sr": "attention.sequence_reduction.sequence_reduction",
    "attn.norm": "attention.sequence_reduction.layer_norm",
    "ffn.layers.0": "mlp.fc1",
    "ffn.layers.1": "mlp.dwconv.dwconv",
    "ffn.layers.4": "mlp.fc2",
}
_MIT_BLOCK_INVERSE = {v: k for k, v in _MIT_BLOCK.items()}
_MIT_QKV = ("q_proj", "k_proj", "v_proj")
_STEM = {"0": "conv1.0", "1": "conv1.1", "3": "conv1.3", "4": "conv1.4", "6": "conv1.6", "7": "bn1"}
_STEM_INVERSE = {v: k for k, v in _STEM.items()}


def _architecture(segmentor: Segmentor) -> str:
    if isinstance(segmentor, MmsegSegFormer):
        return f"mmseg SegFormer MiT-{segmentor.size.upper()} with a {segmentor.num_classes}-class head"
    if isinstance(segmentor, MmsegDeepLabV3Plus):
        return f"mmseg DeepLabV3+ {segmentor.display_name} with a {segmentor.num_classes}-class head"
    raise ValueError(
        f"segmentor {segmentor.name!r} ({type(segmentor).__name__}) is not an mmseg base; "
        "mmseg checkpoints load into the *-mmseg / deeplabv3plus-*-d8 registry names only"
    )


def _mit_key(key: str) -> list[str] | str | None:
    """The transformers key(s) of an mmseg MiT backbone key; a list for the fused q, k, v projection."""
    m = re.fullmatch(r"backbone\.layers\.(\d+)\.(\d+)\.(.+)", key)
    if m is None:
        return None
    i, part, rest = m.groups()
    stage = f"backbone.stages.{i}"
    if part == "0":
        sub = {"projection": "proj", "norm": "layer_norm"}
        name, _, param = rest.rpartition(".")
        return f"{stage}.patch_embeddings.{sub[name]}.{param}" if name in sub else None
    if part == "2":
        return f"{stage}.layer_norm.{rest}"
    m = re.fullmatch(r"(\d+)\.(.+)\.(\w+)", rest) if part == "1" else None
    if m is None:
        return None
    j, name, param = m.groups()
    block = f"{stage}.blocks.{j}"
    if name == "attn.attn" and param in ("in_proj_weight", "in_proj_bias"):
        suffix = param.removeprefix("in_proj_")
        return [f"{block}.attention.{p}.{suffix}" for p in _MIT_QKV]
    return f"{block}.{_MIT_BLOCK[name]}.{param}" if name in _MIT_BLOCK else None


def _resnet_key(key: str) -> str | None:
    m = re.fullmatch(r"backbone\.stem\.(\d+)\.(\w+)", key)
    if m is not None:
        return f"backbone.{_STEM[m.group(1)]}.{m.group(2)}" if m.group(1) in _STEM else None
    return key if key.startswith("backbone.layer") else None


def _mobilenet_key(key: str) -> str | None:
    # mmseg's names already; a ResNet's stem (backbone.stem.*) is not one of them and is reported as foreign
    return key if re.match(r"backbone\.(conv1|layer[1-7])\.", key) else None


def convert_mmseg_state_dict(
    state: dict[str, torch.Tensor], segmentor: Segmentor
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename an mmseg 0.30 state dict to ``segmentor``'s keys: ``(converted, unconvertible mmseg keys)``.

    Shapes are not checked here (the caller compares with the model); auxiliary-head keys are dropped.
    """
    segformer = isinstance(segmentor, MmsegSegFormer)
    backbone_key = _mit_key if segformer else _resnet_key
    if isinstance(getattr(segmentor, "backbone", None), MobileNetV2):
        backbone_key = _mobilenet_key
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key.startswith(_IGNORED_PREFIXES):
            continue
        if key.startswith("decode_head."):
            out[key] = value
            continue
        target = backbone_key(key) if key.startswith("backbone.") else None
        if target is None:
            unknown.append(key)
        elif isinstance(target, list):
            if value.shape[0] % 3:
                unknown.append(key)
                continue
            for name, chunk in zip(target, value.chunk(3, dim=0), strict=True):
                out[name] = chunk
        elif segformer and target.endswith(("mlp.fc1.weight", "mlp.fc2.weight")) and value.ndim == 4:
            out[target] = value.flatten(1)  # 1x1 conv (O, I, 1, 1) -> linear (O, I)
        else:
            out[target] = value
    return out, unknown


def to_mmseg_state_dict(segmentor: Segmentor) -> dict[str, torch.Tensor]:
    """The inverse mapping: ``segmentor``'s state dict under mmseg 0.30's key names (for tests and export)."""
    _architecture(segmentor)
    own = segmentor.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in own.items():
        if key.startswith("decode_head.") or isinstance(segmentor.backbone, MobileNetV2):
            out[key] = value  # the head's and mmseg MobileNetV2's names are mmseg's
        elif isinstance(segmentor, MmsegDeepLabV3Plus):
            m = re.fullmatch(r"backbone\.(conv1\.\d|bn1)\.(\w+)", key)
            out[f"backbone.stem.{_STEM_INVERSE[m.group(1)]}.{m.group(2)}" if m else key] = value
        else:
            m = re.fullmatch(r"backbone\.stages\.(\d+)\.(.+)\.(\w+)", key)
            i, name, param = m.groups()
            if name == "patch_embeddings.proj":
                out[f"backbone.layers.{i}.0.projection.{param}"] = value
            elif name == "patch_embeddings.layer_norm":
                out[f"backbone.layers.{i}.0.norm.{param}"] = value
            elif name == "layer_norm":
                out[f"backbone.layers.{i}.2.{param}"] = value
            else:
                j, sub = re.fullmatch(r"blocks\.(\d+)\.(.+)", name).groups()
                prefix = f"backbone.layers.{i}.1.{j}"
                if sub == "attention.q_proj":
                    stem = f"backbone.stages.{i}.blocks.{j}.attention"
                    fused = torch.cat([own[f"{stem}.{p}.{param}"] for p in _MIT_QKV], dim=0)
                    out[f"{prefix}.attn.attn.in_proj_{param}"] = fused
                elif sub in ("attention.k_proj", "attention.v_proj"):
                    continue
                else:
                    if sub in ("mlp.fc1", "mlp.fc2") and param == "weight":
                        value = value[:, :, None, None]
                    out[f"{prefix}.{_MIT_BLOCK_INVERSE[sub]}.{param}"] = value
    return out


def _first_line(error: Exception) -> str:
    # torch's weights-only refusals run over many lines; the one-line contract keeps the first
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _numpy_data_globals() -> list:
    """numpy scalars, dtypes and plain arrays, under numpy 2's and numpy 1's module names (zoo files predate 2)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core to numpy._core
    objects = [core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype]
    objects += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    allowed: list = []
    for obj in objects:
        allowed.append(obj)
        if obj.__module__.startswith("numpy._core"):
            allowed.append((obj, f"{obj.__module__.replace('numpy._core', 'numpy.core')}.{obj.__name__}"))
    return allowed


def _read_payload(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"mmseg checkpoint {path} does not exist")
    try:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # mmcv's EvalHook puts numpy scalars (best_score) into meta["hook_msgs"]: allow numpy's data types,
            # never code, and retry; anything else the weights-only unpickler refuses stays refused
            with torch.serialization.safe_globals(_numpy_data_globals()):
                payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the weights-only unpickler refuses arbitrary objects with many error types
        raise ValueError(
            f"cannot read mmseg checkpoint {path} as a weights-only torch file "
            f"(it holds objects other than tensors and plain containers): {_first_line(e)}"
        ) from e
    if not isinstance(payload, dict):
        raise ValueError(f"mmseg checkpoint {path} holds a {type(payload).__name__}, expected a dict")
    return payload


def _state_of(payload: dict, path: Path) -> dict[str, torch.Tensor]:
    state = payload.get("state_dict", payload)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"mmseg checkpoint {path} has no state dict of tensors (keys: {', '.join(list(payload)[:5])})"
        )
    # checkpoints saved from a DataParallel / DDP wrapper carry a "module." prefix
    return {k.removeprefix("module."): v for k, v in state.items()}


def read_mmseg_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict of an mmseg checkpoint file (``{"state_dict": ..., "meta": ...}`` or bare), weights only."""
    path = Path(path).expanduser()
    return _state_of(_read_payload(path), path)


def load_mmseg_checkpoint(segmentor: Segmentor, path: str | os.PathLike[str]) -> None:
    """Load an mmseg 0.30 checkpoint into an mmseg base, strictly; a file of another model is one ValueError line.

    The line names the file, the expected architecture and the first offending keys (unconvertible, missing,
    unexpected or of the wrong shape, e.g. a 19-class ``conv_seg`` for a 150-class model). Nothing is loaded
    unless everything fits. A ``.pth`` written by :func:`diffseg.segmentors.save_segmentor` loads as such.
    """
    expected = _architecture(segmentor)
    path = Path(path).expanduser()
    payload = _read_payload(path)
    if payload.get("format") == FORMAT:
        # a .pth that diffseg's save_segmentor wrote (e.g. after fine-tuning a base): its own checks apply
        load_segmentor_state(segmentor, path)
        return
    state = _state_of(payload, path)
    converted, unknown = convert_mmseg_state_dict(state, segmentor)
    problems = fit_problems(converted, segmentor.state_dict())
    if unknown:
        problems.insert(0, f"{len(unknown)} keys of another architecture (e.g. {', '.join(unknown[:3])})")
    if problems:
        raise ValueError(f"mmseg checkpoint {path} does not fit {expected}: {'; '.join(problems)}")
    segmentor.load_state_dict(converted, strict=True)
