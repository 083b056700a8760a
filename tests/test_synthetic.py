"""Synthetic scenes: real layouts and encodings, determinism per seed, atomic writes, reuse by ensure_synthetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import diffseg.data.synthetic as synthetic
from diffseg.config import DataConfig
from diffseg.data import ensure_synthetic, write_synthetic
from diffseg.data.cityscapes import LABEL_IDS
from diffseg.data.scenes import ADE, CS, draw_room, draw_street


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_ade20k_layout_and_values(tmp_path):
    root = write_synthetic("ade20k", tmp_path / "ade", 3, 2, (128, 128), seed=0)
    imgs = sorted((root / "images" / "training").glob("*.jpg"))
    anns = sorted((root / "annotations" / "validation").glob("*.png"))
    assert [p.name for p in imgs] == [f"ADE_train_{i:08d}.jpg" for i in (1, 2, 3)]
    assert [p.name for p in anns] == ["ADE_val_00000001.png", "ADE_val_00000002.png"]
    with Image.open(anns[0]) as a, Image.open(root / "images" / "validation" / "ADE_val_00000001.jpg") as im:
        assert a.mode == "L" and im.format == "JPEG" and im.size == a.size == (128, 128)
    values = set()
    for p in (root / "annotations" / "training").glob("*.png"):
        values |= set(np.unique(np.asarray(Image.open(p))).tolist())
    assert values <= set(ADE.values()) and {ADE["wall"], ADE["floor"]} <= values


def test_cityscapes_layout_and_void_ids(tmp_path):
    root = write_synthetic("cityscapes", tmp_path / "cs", 6, 3, (64, 128), seed=0)
    imgs = sorted((root / "leftImg8bit" / "train").glob("*/*_leftImg8bit.png"))
    assert {p.parent.name for p in imgs} == {"aachen", "bochum", "bremen"}
    assert all(p.name.startswith(p.parent.name + "_") and len(p.name.split("_")) == 4 for p in imgs)
    val_cities = {p.name for p in (root / "gtFine" / "val").iterdir()}
    assert val_cities == {"frankfurt", "lindau", "munster"}
    values = set()
    for i in range(40):  # the drawing function alone: cheap, and enough scenes to see the void ids
        _, lab = draw_street(64, 128, np.random.default_rng(i))
        values |= set(np.unique(lab).tolist())
    assert values <= set(LABEL_IDS)
    assert {CS["sky"], CS["road"], CS["pole"], CS["car"], CS["ego vehicle"], CS["out of roi"]} <= values


@pytest.mark.parametrize("layout,size", [("ade20k", (128, 128)), ("cityscapes", (64, 128))])
def test_same_seed_same_files_other_seed_differs(tmp_path, layout, size):
    a = _files(write_synthetic(layout, tmp_path / "a", 2, 1, size, seed=3))
    b = _files(write_synthetic(layout, tmp_path / "b", 2, 1, size, seed=3))
    c = _files(write_synthetic(layout, tmp_path / "c", 2, 1, size, seed=4))
    assert a == b
    assert a.keys() == c.keys() and [k for k in a if a[k] != c[k] and k != "synthetic.json"]


def test_scenes_are_not_colour_coded():
    # The prior must matter: the same class takes several pool colours across scenes.
    means = []
    for i in range(12):
        img, lab = draw_room(128, 128, np.random.default_rng(i))
        means.append(img[lab == ADE["wall"]].mean(0))
    assert np.ptp(np.array(means), axis=0).max() > 40


def test_write_is_atomic(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synthetic.draw_room

    def failing(h, w, rng):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # a killed run
        return real(h, w, rng)

    monkeypatch.setitem(synthetic._WRITERS, "ade20k", (failing, synthetic._ade_paths, "JPEG"))
    with pytest.raises(KeyboardInterrupt):
        write_synthetic("ade20k", tmp_path / "ade", 3, 1)
    assert list(tmp_path.iterdir()) == []  # neither the root nor a temp folder is left


def test_refuses_to_overwrite_unless_asked(tmp_path):
    root = write_synthetic("cityscapes", tmp_path / "cs", 1, 1, (32, 64), seed=0)
    with pytest.raises(ValueError, match="exists and is not empty"):
        write_synthetic("cityscapes", root, 1, 1, (32, 64), seed=1)
    write_synthetic("cityscapes", root, 2, 1, (32, 64), seed=1, overwrite=True)
    assert len(list((root / "leftImg8bit" / "train").glob("*/*.png"))) == 2
    with pytest.raises(ValueError, match="unknown synthetic layout 'coco'"):
        write_synthetic("coco", tmp_path / "x", 1, 1)


def test_ensure_synthetic_reuses_and_warns_on_other_params(tmp_path):
    cfg = DataConfig(dataset="ade20k", root=str(tmp_path / "ade"), synth_n_train=2, synth_n_val=1)
    ensure_synthetic(cfg)
    before = _files(tmp_path / "ade")
    ensure_synthetic(cfg)
    assert _files(tmp_path / "ade") == before
    with pytest.warns(UserWarning, match="reusing synthetic dataset"):
        ensure_synthetic(
            DataConfig(dataset="ade20k", root=str(tmp_path / "ade"), synth_n_train=5, synth_n_val=1)
        )
    assert len(before) == 2 * 2 + 2 * 1 + 1
