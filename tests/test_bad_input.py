"""A new user's mistakes, through the commands: each is one line naming what was wrong and what was expected,
exit code 2 (a skipped refine input: exit 1), and nothing already written changes (files hashed before/after).

Each case builds its broken input under its own ``tmp_path`` from the module's tiny datasets and finished run and
returns the command line and the paths that must not change. Kill-and-resume is in test_engines (SIGKILL of a
training resumes exactly) and test_publish (a killed sweep resumes to the rows of an uninterrupted one).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffseg.cli import main
from diffseg.config import apply_overrides, load_config, replace, save_config
from diffseg.data import write_synthetic
from diffseg.data.cityscapes import LABEL_ID_TO_TRAIN_ID
from diffseg.engines import load_latest_checkpoint, training
from diffseg.metrics import SegMetrics
from diffseg.profiles import profile_config


@dataclass
class World:
    """What the cases break copies of: tiny datasets, a finished refiner run and a folder of photos."""

    ade: Path
    cityscapes: Path
    run: Path
    photos: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    base = tmp_path_factory.mktemp("world")
    ade = write_synthetic("ade20k", base / "ade20k", 3, 2, (64, 64), seed=3)
    cityscapes = write_synthetic("cityscapes", base / "cityscapes", 3, 2, (64, 128), seed=3)
    cfg = apply_overrides(
        profile_config("smoke", "ade20k"),
        {
            "data.root": str(base / "data" / "ade20k"),
            "data.synth_n_train": 8,
            "data.synth_n_val": 2,
            "segmentor.train_iterations": 10,
            "train.stage1_iterations": 4,
            "train.stage2_iterations": 4,
            "train.checkpoint_every": 4,
            "device": "cpu",
        },
    )
    training(cfg, base / "run", progress=False)
    photos = base / "photos"
    photos.mkdir()
    for i, src in enumerate(sorted((ade / "images" / "validation").glob("*.jpg"))):
        shutil.copy(src, photos / f"photo{i}.jpg")
    return World(ade, cityscapes, base / "run", photos)


def _copy(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst))


def _hashes(paths: list[Path]) -> dict[str, str]:
    out = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _ade_pair(root: Path) -> tuple[Path, Path]:
    img = sorted((root / "images" / "training").glob("*.jpg"))[0]
    return img, root / "annotations" / "training" / img.name.replace(".jpg", ".png")


def _cs_annotations(root: Path) -> list[Path]:
    return sorted((root / "gtFine" / "train").glob("*/*_gtFine_labelIds.png"))


def _set_label(ann: Path, value: int) -> None:
    raw = np.asarray(Image.open(ann)).copy()
    raw[0, :3] = value
    Image.fromarray(raw).save(ann)


def _check(name: str, root: Path) -> list[str]:
    return ["data", "check", "--dataset", name, "--root", str(root)]


def _train(out: Path, *overrides: str) -> list[str]:
    return ["train", "--profile", "smoke", "--out", str(out), "--no-progress", "device=cpu", *overrides]


# -- datasets ---------------------------------------------------------------------------------------------------
def missing_root(w: World, tmp: Path):
    return _check("ade20k", tmp / "nowhere"), [], r"nowhere does not exist"


def missing_annotation_folder(w: World, tmp: Path):
    root = _copy(w.ade, tmp / "ade")
    shutil.rmtree(root / "annotations" / "validation")
    return _check("ade20k", root), [root], r"missing folder .*annotations/validation"


def image_without_annotation(w: World, tmp: Path):
    root = _copy(w.ade, tmp / "ade")
    _ade_pair(root)[1].unlink()
    return _check("ade20k", root), [root], r"image\(s\) without annotation .*ADE_train_\d+\.jpg"


def annotation_without_image(w: World, tmp: Path):
    root = _copy(w.ade, tmp / "ade")
    _ade_pair(root)[0].unlink()
    return _check("ade20k", root), [root], r"annotation\(s\) without image .*ADE_train_\d+\.png"


def size_mismatch(w: World, tmp: Path):
    root = _copy(w.ade, tmp / "ade")
    ann = _ade_pair(root)[1]
    Image.open(ann).resize((32, 40), Image.NEAREST).save(ann)
    return _check("ade20k", root), [root], rf"size mismatch: image .* but annotation .*{ann.name} is 32x40"


def truncated_image(w: World, tmp: Path):
    root = _copy(w.ade, tmp / "ade")
    img = _ade_pair(root)[0]
    img.write_bytes(img.read_bytes()[:300])
    return _check("ade20k", root), [root], rf"corrupt or truncated image .*{img.name}"


def rgb_annotation(w: World, tmp: Path):
    root = _copy(w.ade, tmp / "ade")
    ann = _ade_pair(root)[1]
    Image.open(ann).convert("RGB").save(ann)
    return _check("ade20k", root), [root], rf"annotation .*{ann.name} has mode RGB; expected a single-channel"


def ade_label_out_of_range(w: World, tmp: Path):
    root = _copy(w.ade, tmp / "ade")
    _set_label(_ade_pair(root)[1], 200)
    return _check("ade20k", root), [root], r"label value\(s\) \[200\] in .*\.png are outside the ade20k range"


def cityscapes_label_out_of_range(w: World, tmp: Path):
    root = _copy(w.cityscapes, tmp / "cs")
    _set_label(_cs_annotations(root)[0], 99)
    return _check("cityscapes", root), [root], r"label value\(s\) \[99\] .*labelIds 0\.\.33"


def _as_train_ids(root: Path, keep_ignore: bool) -> None:
    for ann in _cs_annotations(root):
        ids = LABEL_ID_TO_TRAIN_ID[np.asarray(Image.open(ann))]
        Image.fromarray(ids if keep_ignore else np.where(ids == 255, 0, ids).astype(np.uint8)).save(ann)


def train_ids_under_label_ids_name(w: World, tmp: Path):
    root = _copy(w.cityscapes, tmp / "cs")
    _as_train_ids(root, keep_ignore=False)
    return _check("cityscapes", root), [root], r"holds only values 0\.\.18.*look like trainIds.*labelTrainIds"


def train_ids_with_ignore_under_label_ids_name(w: World, tmp: Path):
    root = _copy(w.cityscapes, tmp / "cs")
    _as_train_ids(root, keep_ignore=True)
    return _check("cityscapes", root), [root], r"holds 255, the trainIds ignore value"


def empty_split(w: World, tmp: Path):
    root = _copy(w.cityscapes, tmp / "cs")
    for sub in ("leftImg8bit/val", "gtFine/val"):
        shutil.rmtree(root / sub)
        (root / sub).mkdir()
    return _check("cityscapes", root), [root], r"empty split: no images and no annotations found in .*val"


# -- configs: refused before a run folder exists ------------------------------------------------------------------
def unknown_key(w: World, tmp: Path):
    return _train(tmp / "r", "unet.widht=8"), [], r"unknown config key 'unet\.widht'.*width"


def unknown_kernel(w: World, tmp: Path):
    return (
        _train(tmp / "r", "diffusion.kernel=gauss"),
        [],
        r"'diffusion\.kernel' = 'gauss' is not valid.*uniform",
    )


def unknown_noise_object(w: World, tmp: Path):
    return (
        _train(tmp / "r", "refiner.noise_object=pred"),
        [],
        r"'refiner\.noise_object' = 'pred'.*gt, base, first",
    )


def unknown_eval_mode(w: World, tmp: Path):
    return _train(tmp / "r", "eval.mode=sliding"), [], r"'eval\.mode' = 'sliding' is not valid.*whole, slide"


def negative_iterations(w: World, tmp: Path):
    return (
        _train(tmp / "r", "train.stage1_iterations=-5"),
        [],
        r"'train\.stage1_iterations' must be >= 0, got -5",
    )


def zero_batch(w: World, tmp: Path):
    return _train(tmp / "r", "data.batch_size=0"), [], r"'data\.batch_size' must be >= 1, got 0"


def momentum_out_of_range(w: World, tmp: Path):
    return _train(tmp / "r", "train.ema_momentum=2"), [], r"train\.ema_momentum.*2"


def wrong_type(w: World, tmp: Path):
    return _train(tmp / "r", "unet.width=wide"), [], r"unet\.width.*wide"


def yaml_syntax_error(w: World, tmp: Path):
    bad = tmp / "bad.yaml"
    bad.write_text("seed: 0\nunet: {width: 8\n")
    argv = ["train", "--config", str(bad), "--out", str(tmp / "r"), "--no-progress"]
    return argv, [bad], rf"{bad.name}.*line \d+"


def base_without_weights(w: World, tmp: Path):
    return (
        _train(tmp / "r", "segmentor.train_iterations=0"),
        [],
        r"segmentor\.weights is unset.*random initialisation",
    )


# -- run folders and checkpoints -------------------------------------------------------------------------------
def finished_run_with_another_config(w: World, tmp: Path):
    run = _copy(w.run, tmp / "run")
    argv = ["train", "--config", str(run / "config.yaml"), "--out", str(run), "--no-progress", "unet.width=8"]
    return argv + ["--allow-config-change"], [run], r"finished run with a different config.*unet\.width"


def eval_of_a_folder_that_is_no_run(w: World, tmp: Path):
    (tmp / "empty").mkdir()
    return ["eval", "--run", str(tmp / "empty")], [], r"is not a diffseg run folder \(no config\.yaml\)"


def eval_with_a_checkpoint_of_another_model(w: World, tmp: Path):
    run = _copy(w.run, tmp / "run")
    state, path = load_latest_checkpoint(run / "checkpoints")
    state["model_signature"] = {**state["model_signature"], "num_classes": 19}
    torch.save(state, path)
    return (
        ["eval", "--run", str(run)],
        [run],
        rf"{path.name} is for another model: num_classes: checkpoint has 19",
    )


def eval_with_a_changed_config(w: World, tmp: Path):
    run = _copy(w.run, tmp / "run")
    cfg = apply_overrides(load_config(run / "config.yaml"), {"unet.width": 8})
    save_config(cfg, run / "config.yaml")  # a config.yaml edited by hand after training
    return ["eval", "--run", str(run)], [run], r"is for another model"


# -- refine ---------------------------------------------------------------------------------------------------
def _refine(w: World, src: Path, out: Path) -> list[str]:
    return ["refine", "--refiner", str(w.run), "--input", str(src), "--out", str(out), "--device", "cpu"]


def refine_into_its_input(w: World, tmp: Path):
    photos = _copy(w.photos, tmp / "photos")
    return _refine(w, photos, photos), [photos], r"--out .* is the input folder or inside it"


def refine_inside_its_input(w: World, tmp: Path):
    photos = _copy(w.photos, tmp / "photos")
    return _refine(w, photos, photos / "out"), [photos], r"is the input folder or inside it"


def refine_name_clash(w: World, tmp: Path):
    photos = _copy(w.photos, tmp / "photos")
    Image.open(photos / "photo0.jpg").save(photos / "photo0.png")
    argv = _refine(w, photos, tmp / "out")
    return argv, [photos], r"photo0\.jpg and .*photo0\.png would both write .*photo0\.png; rename one"


def refine_missing_input(w: World, tmp: Path):
    return _refine(w, tmp / "nothing", tmp / "out"), [], r"input .*nothing does not exist"


def refine_folder_without_images(w: World, tmp: Path):
    (tmp / "docs").mkdir()
    (tmp / "docs" / "notes.txt").write_text("no images here")
    return _refine(w, tmp / "docs", tmp / "out"), [tmp / "docs"], r"no images \(.*\) under .*docs"


def refine_with_another_segmentor(w: World, tmp: Path):
    argv = _refine(w, w.photos, tmp / "out") + ["--segmentor", "deeplabv3plus-tiny"]
    return (
        argv,
        [w.photos],
        r"--segmentor deeplabv3plus-tiny does not match the refiner's segmentor segformer-tiny",
    )


Builder = Callable[[World, Path], tuple[list[str], list[Path], str]]
CASES: list[Builder] = [
    missing_root,
    missing_annotation_folder,
    image_without_annotation,
    annotation_without_image,
    size_mismatch,
    truncated_image,
    rgb_annotation,
    ade_label_out_of_range,
    cityscapes_label_out_of_range,
    train_ids_under_label_ids_name,
    train_ids_with_ignore_under_label_ids_name,
    empty_split,
    unknown_key,
    unknown_kernel,
    unknown_noise_object,
    unknown_eval_mode,
    negative_iterations,
    zero_batch,
    momentum_out_of_range,
    wrong_type,
    yaml_syntax_error,
    base_without_weights,
    finished_run_with_another_config,
    eval_of_a_folder_that_is_no_run,
    eval_with_a_checkpoint_of_another_model,
    eval_with_a_changed_config,
    refine_into_its_input,
    refine_inside_its_input,
    refine_name_clash,
    refine_missing_input,
    refine_folder_without_images,
    refine_with_another_segmentor,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_a_mistake_is_one_line_and_changes_nothing(case: Builder, world: World, tmp_path, capsys) -> None:
    argv, protected, expected = case(world, tmp_path)
    before = _hashes([*protected, world.run, world.photos])
    created_before = {p for p in tmp_path.rglob("*")}
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, f"exit {code}; stderr: {err[-3:]}"
    assert len(err) == 1 and err[0].startswith(f"diffseg {argv[0]}: error: "), err
    assert re.search(expected, err[0]), err[0]
    assert _hashes([*protected, world.run, world.photos]) == before  # nothing already written changed
    assert {p for p in tmp_path.rglob("*")} == created_before  # and nothing new was written (no run folder)


def test_refine_skips_an_unreadable_photo_and_says_so(world: World, tmp_path, capsys) -> None:
    photos = _copy(world.photos, tmp_path / "photos")
    (photos / "broken.jpg").write_bytes((photos / "photo0.jpg").read_bytes()[:200])
    before = _hashes([photos])
    code = main(_refine(world, photos, tmp_path / "out"))
    err = capsys.readouterr().err
    assert code == 1
    assert re.search(r"skipped .*broken\.jpg: unreadable image", err)
    assert _hashes([photos]) == before
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png") if "overlay" not in p.name) == [
        "photo0.png",
        "photo1.png",
    ]


@pytest.mark.parametrize(
    ("pred", "target", "expected"),
    [
        (torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 5, dtype=torch.long), r"shape"),
        (torch.full((1, 4, 4), 7), torch.zeros(1, 4, 4, dtype=torch.long), r"7"),
        (torch.zeros(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), r"integer|long|dtype"),
    ],
    ids=["shape-mismatch", "class-out-of-range", "float-labels"],
)
def test_metrics_api_refuses_bad_labels(pred, target, expected) -> None:
    metrics = SegMetrics(num_classes=3)
    with pytest.raises(ValueError, match=expected):
        metrics.update(pred, target)


# -- run-time mistakes and interruptions -----------------------------------------------------------------------
def _on_the_worlds_base(world: World, tmp_path: Path, overrides: dict[str, object]):
    """A smoke refiner config on the finished run's frozen base (no base training), data under ``tmp_path``."""
    base = {
        "data.root": str(tmp_path / "data" / "ade20k"),
        "data.synth_n_train": 8,
        "data.synth_n_val": 2,
        "segmentor.weights": str(world.run / "base.safetensors"),
        "segmentor.train_iterations": 0,
        "device": "cpu",
    }
    return apply_overrides(profile_config("smoke", "ade20k"), {**base, **overrides})


def test_overrides_may_stand_between_options(tmp_path, capsys) -> None:
    """A second block of overrides after an option is read as overrides, not refused by argparse."""
    argv = [
        "train",
        "--profile",
        "smoke",
        "--out",
        str(tmp_path / "r"),
        "device=cpu",
        "--no-progress",
        "unet.widht=8",
    ]
    assert main(argv) == 2
    assert "unknown config key 'unet.widht'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_synthetic_dataset_is_readable_by_everyone(tmp_path) -> None:
    root = write_synthetic("ade20k", tmp_path / "ade", 1, 1, (32, 32), seed=0)
    assert root.stat().st_mode & 0o777 == 0o755


def test_a_truncated_image_met_during_training_names_the_file(world: World, tmp_path) -> None:
    from diffseg.data import DatasetError, build_dataset
    from diffseg.profiles import data_config

    root = _copy(world.ade, tmp_path / "ade")
    img = _ade_pair(root)[0]
    img.write_bytes(img.read_bytes()[:300])
    cfg = replace(data_config("ade20k", "smoke", root=str(root)), synthetic=False)
    train = build_dataset(cfg, "train", train=True)
    with pytest.raises(DatasetError, match=rf"{img.name}"):
        train[[p[1] for p in train.files].index(img)]


def test_an_unreadable_folder_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    """(Simulated: the tests run as root, whom permission bits do not stop.)"""
    import diffseg.data.cli

    def denied(name, root, splits=None):
        raise PermissionError(13, "Permission denied", str(root))

    monkeypatch.setattr(diffseg.data.cli, "check_dataset", denied)
    assert main(["data", "check", "--dataset", "ade20k", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"diffseg data: error: [Errno 13] Permission denied: '{tmp_path}'"]


def test_a_resumed_run_logs_each_iteration_once(world: World, tmp_path) -> None:
    """Resuming from an older checkpoint (the newest was truncated) trains those iterations again: logged once."""
    import csv

    cfg = _on_the_worlds_base(world, tmp_path, {"train.checkpoint_every": 5, "train.log_every": 1})
    run = tmp_path / "run"
    assert "interrupted_at" in training(cfg, run, progress=False, stop_after=12)
    newest = run / "checkpoints" / "checkpoint_12.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="unreadable"):
        training(cfg, run, progress=False)
    with open(run / "log.csv") as f:
        iterations = [int(r["iteration"]) for r in csv.DictReader(f) if r["job"] == "refiner"]
    assert iterations == sorted(set(iterations)) and iterations[-1] == 20


def test_killing_the_sweep_stops_its_workers(tmp_path) -> None:
    """SIGKILL of the sweep process runs no handler of its own; its workers still end (PR_SET_PDEATHSIG)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "sweep_like.py"
    script.write_text(
        "import multiprocessing as mp, os, sys, time\n"
        "from diffseg.study.workers import init_worker as _init_worker\n"
        "def pid(_):\n    return os.getpid()\n"
        "if __name__ == '__main__':\n"
        "    pool = mp.get_context('spawn').Pool(2, initializer=_init_worker)\n"
        "    print(*sorted(set(pool.map(pid, range(8), chunksize=1))), flush=True)\n"
        "    time.sleep(120)\n"
    )
    root = Path(__file__).resolve().parents[1]
    sweep = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=root)
    workers = [int(p) for p in sweep.stdout.readline().split()]
    assert workers
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()

    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False
        return "\nState:\tZ" not in state  # a zombie has ended; only its exit status waits to be collected

    deadline = time.time() + 10
    while time.time() < deadline and any(alive(p) for p in workers):
        time.sleep(0.1)
    left = [p for p in workers if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} outlived the killed sweep"


@pytest.mark.parametrize("grad_clip", [None, 1.0])
def test_a_nan_loss_is_one_line_with_advice_for_the_config(
    world: World, tmp_path, grad_clip, capsys, monkeypatch
) -> None:
    from diffseg.models.refiner import MaskPriorRefiner

    original = MaskPriorRefiner.loss

    def diverging(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        return {**out, "ce_sum": out["ce_sum"] * float("nan")}

    cfg = _on_the_worlds_base(world, tmp_path, {"optim.grad_clip": grad_clip})
    save_config(cfg, tmp_path / "cfg.yaml")
    monkeypatch.setattr(MaskPriorRefiner, "loss", diverging)
    code = main(
        ["train", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "r"), "--no-progress"]
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("diffseg train:")]
    assert code == 2 and len(err) == 1
    assert "non-finite loss (nan) at iteration 1" in err[0]
    assert ("set optim.grad_clip" in err[0]) == (grad_clip is None)
