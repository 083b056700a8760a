"""check_dataset / format_summary, and every kind of broken root named in the error message."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffseg.data import DatasetError, check_dataset, format_summary, write_synthetic


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("roots")
    return {
        "ade20k": write_synthetic("ade20k", base / "ade", 3, 2, (128, 128), seed=2),
        "cityscapes": write_synthetic("cityscapes", base / "cs", 3, 2, (64, 128), seed=2),
    }


def _copy(tiny, name, tmp_path) -> Path:
    return Path(shutil.copytree(tiny[name], tmp_path / name))


def _first_pair(name: str, root: Path) -> tuple[Path, Path]:
    if name == "ade20k":
        img = sorted((root / "images" / "training").glob("*.jpg"))[0]
        return img, root / "annotations" / "training" / img.name.replace(".jpg", ".png")
    img = sorted((root / "leftImg8bit" / "train").glob("*/*.png"))[0]
    ann = root / "gtFine" / "train" / img.parent.name / img.name.replace("_leftImg8bit", "_gtFine_labelIds")
    return img, ann


@pytest.mark.parametrize("name", ["ade20k", "cityscapes"])
def test_summary_of_a_good_root(tiny, name):
    summary = check_dataset(name, tiny[name])
    assert summary["splits"]["train"]["count"] == 3 and summary["splits"]["val"]["count"] == 2
    size = "128x128" if name == "ade20k" else "64x128"
    assert summary["splits"]["train"]["image_sizes"] == {size: 3}
    hist = summary["splits"]["train"]["label_hist"]
    h, w = map(int, size.split("x"))
    assert sum(hist.values()) == 3 * h * w
    assert hist["wall" if name == "ade20k" else "road"] > 0
    text = format_summary(summary)
    assert "train: 3 images" in text and size in text


@pytest.mark.parametrize("name", ["ade20k", "cityscapes"])
def test_missing_root_and_split(tiny, tmp_path, name):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        check_dataset(name, tmp_path / "nowhere")
    root = _copy(tiny, name, tmp_path)
    gone = root / ("annotations/validation" if name == "ade20k" else "gtFine/val")
    shutil.rmtree(gone)
    with pytest.raises(DatasetError, match=f"missing folder {gone}"):
        check_dataset(name, root)


@pytest.mark.parametrize("name", ["ade20k", "cityscapes"])
def test_unpaired_files_are_named(tiny, tmp_path, name):
    root = _copy(tiny, name, tmp_path)
    img, ann = _first_pair(name, root)
    ann.unlink()
    with pytest.raises(DatasetError, match=rf"image\(s\) without annotation.*{img.name} \(1 in all\)"):
        check_dataset(name, root)
    img.unlink()
    stray = ann.parent / ann.name.replace("000", "999", 1)
    shutil.copy(_first_pair(name, root)[1], stray)
    with pytest.raises(DatasetError, match=rf"annotation\(s\) without image.*{stray.name}"):
        check_dataset(name, root)


def test_size_mismatch_named(tiny, tmp_path):
    root = _copy(tiny, "ade20k", tmp_path)
    _, ann = _first_pair("ade20k", root)
    Image.fromarray(np.ones((64, 128), np.uint8)).save(ann)
    with pytest.raises(DatasetError, match=rf"size mismatch.*{ann.name}.*128x64"):
        check_dataset("ade20k", root)


@pytest.mark.parametrize("name", ["ade20k", "cityscapes"])
def test_truncated_image_named(tiny, tmp_path, name):
    root = _copy(tiny, name, tmp_path)
    img, _ = _first_pair(name, root)
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 3])
    with pytest.raises(DatasetError, match=rf"corrupt or truncated image .*{img.name}"):
        check_dataset(name, root)


@pytest.mark.parametrize(
    ("name", "bad"), [("ade20k", 151), ("ade20k", 200), ("cityscapes", 34), ("cityscapes", 99)]
)
def test_label_values_out_of_range_named(tiny, tmp_path, name, bad):
    root = _copy(tiny, name, tmp_path)
    _, ann = _first_pair(name, root)
    raw = np.asarray(Image.open(ann)).copy()
    raw[0, :3] = bad
    Image.fromarray(raw).save(ann)
    with pytest.raises(DatasetError, match=rf"label value\(s\) \[{bad}\] in .*{ann.name}.*expected"):
        check_dataset(name, root)


@pytest.mark.parametrize("with_ignore", [False, True])
def test_train_ids_saved_under_the_label_ids_name_are_recognised(tiny, tmp_path, with_ignore):
    """trainIds pngs named *_gtFine_labelIds.png decode to wrong classes; with no 255 every value is in range."""
    from diffseg.data.cityscapes import LABEL_ID_TO_TRAIN_ID

    root = _copy(tiny, "cityscapes", tmp_path)
    anns = sorted((root / "gtFine" / "train").glob("*/*_gtFine_labelIds.png"))
    for ann in anns:
        train_ids = LABEL_ID_TO_TRAIN_ID[np.asarray(Image.open(ann))]
        if not with_ignore:
            train_ids = np.where(train_ids == 255, 0, train_ids).astype(np.uint8)
        Image.fromarray(train_ids).save(ann)
    expected = "holds 255, the trainIds ignore value" if with_ignore else "holds only values 0..18"
    with pytest.raises(DatasetError, match=rf"{expected}.*_gtFine_labelTrainIds\.png"):
        check_dataset("cityscapes", root, ["train"])
    val = check_dataset("cityscapes", root, ["val"])  # the untouched split holds real labelIds
    assert val["splits"]["val"]["count"] == 2


def test_empty_split_named(tiny, tmp_path):
    root = _copy(tiny, "cityscapes", tmp_path)
    for sub in ("leftImg8bit/val", "gtFine/val"):
        shutil.rmtree(root / sub)
        (root / sub).mkdir()
    with pytest.raises(DatasetError, match=rf"empty split.*{root / 'leftImg8bit' / 'val'}"):
        check_dataset("cityscapes", root)
    assert check_dataset("cityscapes", root, ["train"])["splits"]["train"]["count"] == 3


def test_unknown_dataset_name(tiny):
    with pytest.raises(ValueError, match="unknown dataset 'voc'.*ade20k, cityscapes"):
        check_dataset("voc", tiny["ade20k"])


def test_training_reads_refuse_label_values_outside_the_encoding(tmp_path) -> None:
    """An ADE20K annotation holding 200 is an error naming the file and the value when an item is read (not a
    silent ignore pixel): the check `data check` does, on every item a training or an evaluation reads."""
    import numpy as np
    import pytest
    from PIL import Image

    from diffseg.data import build_dataset
    from diffseg.data.checks import DatasetError
    from diffseg.data.synthetic import write_synthetic
    from diffseg.profiles import data_config

    root = write_synthetic("ade20k", tmp_path / "ade", 2, 1, (32, 32), 0)
    cfg = data_config("ade20k", "smoke", root=str(root))
    ds = build_dataset(cfg, "train", train=False)
    ds[0]  # a valid item reads
    ann = ds.files[0][2]
    raw = np.array(Image.open(ann))
    raw[0, :3] = 200
    Image.fromarray(raw).save(ann)
    with pytest.raises(
        DatasetError,
        match=rf"{ann.name} holds label value\(s\) 200 \(1 in all\) outside .*0 \(other\) \.\. 150",
    ):
        ds[0]
