"""Parity with mmsegmentation 0.30's own code: its checkpoints, loaded through diffseg's converter, give its outputs.

The reference folder (``$DIFFSEG_PARITY_DIR``, default ``build/parity``) is written by
``tests/parity/mmseg_reference.py`` in a separate venv with mmseg 0.30 installed; ``make parity`` builds that
venv, writes the folder and runs this file with ``DIFFSEG_REQUIRE_PARITY=1``, which turns the skip into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from diffseg.segmentors import build_segmentor

_DIR = Path(os.environ.get("DIFFSEG_PARITY_DIR", Path(__file__).resolve().parents[1] / "build" / "parity"))
# reference file stem -> diffseg registry name
_MODELS = {
    "segformer_mit-b0": "segformer-b0-mmseg",
    "deeplabv3plus_r50-d8": "deeplabv3plus-r50-d8",
    "deeplabv3plus_m-v2-d8": "deeplabv3plus-m-v2-d8",
}
K = 150  # ADE20K, as the reference configs


def _reference_dir() -> Path:
    if all((_DIR / f"{stem}{suffix}").is_file() for stem in _MODELS for suffix in (".pth", "_io.pt")):
        return _DIR
    message = (
        f"no mmseg reference outputs in {_DIR}; `make parity` creates them (a separate venv with mmseg 0.30)"
    )
    if os.environ.get("DIFFSEG_REQUIRE_PARITY") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("stem", list(_MODELS))
def test_features_and_logits_match_mmseg(stem: str) -> None:
    folder = _reference_dir()
    seg = build_segmentor(_MODELS[stem], K, weights=folder / f"{stem}.pth")
    records = torch.load(folder / f"{stem}_io.pt", map_location="cpu", weights_only=True)
    assert len(records) >= 2  # a square and an odd, non-square input
    for record in records:
        with torch.no_grad():
            features, logits = seg(record["input"])
        for label, actual, expected in (
            ("features", features, record["features"]),
            ("logits", logits, record["logits"]),
        ):
            assert actual.shape == expected.shape, (stem, label)
            error = _relative_error(actual, expected)
            print(f"{stem} {tuple(record['input'].shape)} {label}: max relative error {error:.2e}")
            # 1e-5, tighter than the 1e-4 asked for: float32 reordering gives ~2e-6 here, while MiT's LayerNorm
            # with transformers' eps 1e-5 instead of mmseg's 1e-6 gives 2.5e-5 and must fail
            assert error <= 1e-5, (stem, label, error)
            torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def test_mmseg_checkpoint_meta_reads_weights_only() -> None:
    # zoo files carry a meta dict of plain values next to the tensors: the weights-only unpickler must take it
    payload = torch.load(_reference_dir() / "segformer_mit-b0.pth", map_location="cpu", weights_only=True)
    assert set(payload) == {"state_dict", "meta"} and isinstance(payload["meta"]["CLASSES"], list)


def test_deeplab_file_into_segformer_fails_in_one_line() -> None:
    path = _reference_dir() / "deeplabv3plus_r50-d8.pth"
    with pytest.raises(ValueError) as info:
        build_segmentor("segformer-b0-mmseg", K, weights=path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "MiT-B0" in message and "backbone.stem.0.weight" in message
