"""Engines: a short training helps, resume after SIGKILL is exact, 2-process gloo equals 1 process, clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffseg.config import apply_overrides, config_hash
from diffseg.engines import (
    NanLossError,
    build_models,
    evaluate_models,
    get_dataflow,
    load_latest_checkpoint,
    load_refiner_from_run,
    run,
    training,
)
from diffseg.profiles import profile_config

ROOT = Path(__file__).resolve().parents[1]


def tiny_cfg(data_root: Path, **overrides):
    """The smoke profile, smaller still: seconds per training on a 2-core CPU."""
    cfg = profile_config("smoke", "ade20k")
    base = {
        "data.root": str(data_root),
        "data.synth_n_train": 16,
        "data.synth_n_val": 4,
        "segmentor.train_iterations": 20,
        "train.stage1_iterations": 10,
        "train.stage2_iterations": 10,
        "train.checkpoint_every": 5,
        "device": "cpu",
    }
    return apply_overrides(cfg, {**base, **overrides})


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data") / "ade20k"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_root) -> tuple[Path, dict]:
    cfg = tiny_cfg(
        data_root,
        **{"segmentor.train_iterations": 60, "train.stage1_iterations": 30, "train.stage2_iterations": 30},
    )
    run_dir = tmp_path_factory.mktemp("runs") / "r"
    return run_dir, training(cfg, run_dir, progress=False)


def test_short_training_improves_over_untrained(finished_run) -> None:
    run_dir, res = finished_run
    cfg, refiner, segmentor = load_refiner_from_run(run_dir)
    _, val_loader, val_ds = get_dataflow(cfg, 0)
    trained = res["refined"][-1]["mIoU"]
    torch.manual_seed(0)
    for p in refiner.denoiser.parameters():  # an untrained denoiser: fresh random weights
        torch.nn.init.normal_(p, std=0.02)
    untrained = evaluate_models(refiner, segmentor, cfg, val_loader, val_ds, torch.device("cpu"))
    assert trained > untrained["refined"][-1]["mIoU"] + 0.02
    assert res["base"]["mIoU"] > 1.5 / 150  # the trained base is far above chance
    assert (run_dir / "metrics.json").exists() and (run_dir / "log.csv").exists()
    assert len(res["refined"]) == cfg.eval.num_evals and res["t"] == sorted(res["t"], reverse=True)


def _train_cmd(run_dir: Path, data_root: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "diffseg",
        "train",
        "--profile",
        "smoke",
        "--out",
        str(run_dir),
        "--no-progress",
        f"data.root={data_root}",
        "data.synth_n_train=16",
        "data.synth_n_val=4",
        "segmentor.train_iterations=20",
        "train.stage1_iterations=20",
        "train.stage2_iterations=20",
        "train.checkpoint_every=5",
        "device=cpu",
    ]


@pytest.mark.long
def test_resume_after_sigkill_matches_uninterrupted(tmp_path, data_root) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(straight, data_root), check=True, env=env, capture_output=True, cwd=ROOT)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(killed, data_root), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "checkpoints" / "checkpoint_15.pt").exists():
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"
    subprocess.run(_train_cmd(killed, data_root), check=True, env=env, capture_output=True, cwd=ROOT)

    a = torch.load(straight / "checkpoints" / "checkpoint_40.pt", weights_only=True)
    b = torch.load(killed / "checkpoints" / "checkpoint_40.pt", weights_only=True)
    for key in ("denoiser", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    base_a, base_b = load_file(straight / "base.safetensors"), load_file(killed / "base.safetensors")
    assert all(torch.equal(base_a[k], base_b[k]) for k in base_a)
    ma, mb = (
        json.loads((straight / "metrics.json").read_text()),
        json.loads((killed / "metrics.json").read_text()),
    )
    assert ma["base"] == mb["base"] and ma["refined"] == mb["refined"]


def test_two_gloo_processes_train_and_evaluate_like_one(tmp_path, finished_run, data_root) -> None:
    """2 processes sharing the global batch (4 images each of ``data.batch_size=8``) draw the items, augmentations,
    timesteps and noise of 1 process with the whole batch (every draw is keyed by the item's position in the global
    batch) and the loss is normalised by the global number of valid pixels, so DDP's averaged gradient is the
    one-process gradient: the weights agree up to float summation order. The frozen base is shared (its own
    BatchNorm training under DDP is not synchronised). The second run splits each process's 4 images into
    micro-batches of 2 (``train.micro_batch``): accumulated over them, the gradient is the same again."""
    run_dir, _ = finished_run
    shared = {
        "segmentor.weights": str(run_dir / "base.safetensors"),
        "segmentor.train_iterations": 0,
        "train.stage1_iterations": 4,
        "train.stage2_iterations": 4,
    }
    training(tiny_cfg(data_root, **shared, **{"data.batch_size": 8}), tmp_path / "one", progress=False)
    cfg = tiny_cfg(data_root, **shared, **{"data.batch_size": 8, "train.micro_batch": 2})
    out = run(cfg, tmp_path / "ddp", nproc_per_node=2, backend="gloo", progress=False)
    assert out and "refined" in out  # training ran to the end and evaluated
    one, _ = load_latest_checkpoint(tmp_path / "one" / "checkpoints")
    two, _ = load_latest_checkpoint(tmp_path / "ddp" / "checkpoints")
    assert one["iteration"] == two["iteration"] == 8
    _, fresh = build_models(cfg, torch.device("cpu"), None, num_classes=150)
    initial = fresh.denoiser.state_dict()
    for key, w in one["denoiser"].items():
        if not w.is_floating_point():
            continue
        moved = (w - initial[key]).abs().max().item()
        apart = (w - two["denoiser"][key]).abs().max().item()
        # float32 sums in another order differ by ~1e-7 relative; Adam divides by sqrt(v), which lifts that for
        # small gradients: measured <= 2e-3 of the distance training moved a tensor. Other timesteps or noise
        # give other gradients, and Adam's sign-like first steps then move weights by their whole update size.
        assert apart <= 1e-2 * moved, (key, apart, moved)

    # Evaluation of one trained model: the all-reduced 2-process metrics equal the 1-process ones.
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    cfg1, refiner, segmentor = load_refiner_from_run(tmp_path / "ddp")
    _, val_loader, val_ds = get_dataflow(cfg1, 0)
    single = evaluate_models(refiner, segmentor, cfg1, val_loader, val_ds, torch.device("cpu"))
    assert single["base"]["mIoU"] == pytest.approx(ddp["base"]["mIoU"], abs=1e-9)
    assert single["base"]["mBIoU"] == pytest.approx(ddp["base"]["mBIoU"], abs=1e-9)


def test_a_finished_run_is_never_changed(finished_run, data_root) -> None:
    """A changed config on a finished run is refused, also with --allow-config-change, and config.yaml stays."""
    run_dir, _ = finished_run
    before = (run_dir / "config.yaml").read_bytes()
    cfg = apply_overrides(load_refiner_from_run(run_dir)[0], ["unet.width=8"])
    for allow in (False, True):
        with pytest.raises(
            ValueError, match=r"finished run with a different config.*unet\.width.*new run folder"
        ):
            training(cfg, run_dir, progress=False, allow_config_change=allow)
    assert (run_dir / "config.yaml").read_bytes() == before


def test_changed_config_refuses_to_resume_an_unfinished_run_unless_allowed(tmp_path, data_root) -> None:
    cfg = tiny_cfg(data_root)
    run_dir = tmp_path / "r"
    assert "interrupted_at" in training(cfg, run_dir, progress=False, stop_after=12)
    changed = apply_overrides(cfg, ["train.log_every=1", "train.stage2_iterations=12"])
    with pytest.raises(ValueError, match=r"different config.*stage2_iterations.*--allow-config-change"):
        training(changed, run_dir, progress=False)
    res = training(changed, run_dir, progress=False, allow_config_change=True)
    assert "refined" in res
    assert "train.stage2_iterations: 10 -> 12" in (run_dir / "config_changes.log").read_text()


def test_train_compile_compiles_the_denoiser(tmp_path, data_root, monkeypatch) -> None:
    compiled = []
    monkeypatch.setattr(
        torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__)
    )
    cfg = tiny_cfg(
        data_root, **{"train.compile": True, "train.stage1_iterations": 2, "train.stage2_iterations": 0}
    )
    training(cfg, tmp_path / "c", progress=False, evaluate_at_end=False)
    assert compiled == ["Denoiser"]


def test_checkpoint_of_another_model_is_refused(tmp_path, finished_run) -> None:
    run_dir, _ = finished_run
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "base.safetensors"):
        (other / name).write_bytes((run_dir / name).read_bytes())
    state, _ = load_latest_checkpoint(run_dir / "checkpoints")
    state["model_signature"] = {**state["model_signature"], "num_classes": 19}
    torch.save(state, other / "checkpoints" / "checkpoint_1.pt")
    with pytest.raises(
        ValueError, match=r"checkpoint_1\.pt is for another model: num_classes: checkpoint has 19"
    ):
        load_refiner_from_run(other)


def test_truncated_checkpoint_falls_back_to_previous(tmp_path, finished_run) -> None:
    run_dir, _ = finished_run
    ckpts = sorted((run_dir / "checkpoints").glob("checkpoint_*.pt"))
    assert len(ckpts) == 2
    copy = tmp_path / "ck"
    copy.mkdir()
    for p in ckpts:
        (copy / p.name).write_bytes(p.read_bytes())
    newest = max(copy.glob("*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="unreadable"):
        state, path = load_latest_checkpoint(copy)
    assert path != newest and state is not None


def test_missing_run_folder_and_unknown_key_via_cli(tmp_path, capsys) -> None:
    from diffseg.cli import main

    assert main(["eval", "--run", str(tmp_path / "nope")]) == 2
    assert "nope does not exist" in capsys.readouterr().err
    assert main(["train", "--profile", "smoke", "--out", str(tmp_path / "x"), "unet.widht=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'unet.widht'" in err and "width" in err


def test_nan_loss_stops_with_iteration_and_keeps_last_checkpoint(tmp_path, data_root, monkeypatch) -> None:
    from diffseg.models.refiner import MaskPriorRefiner

    original = MaskPriorRefiner.loss
    calls = {"n": 0}

    def diverging_loss(self, *args, **kwargs):  # a training that blows up at its 7th iteration
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= 7:
            out = {**out, "loss": out["loss"] * float("nan"), "ce_sum": out["ce_sum"] * float("nan")}
        return out

    monkeypatch.setattr(MaskPriorRefiner, "loss", diverging_loss)
    cfg = tiny_cfg(data_root, **{"train.checkpoint_every": 5})
    with pytest.raises(NanLossError, match=r"at iteration 7.*newest checkpoint is .*checkpoint_5\.pt"):
        training(cfg, tmp_path / "nan", progress=False)
    state, _ = load_latest_checkpoint(tmp_path / "nan" / "checkpoints")
    assert state["iteration"] == 5 and all(torch.isfinite(v).all() for v in state["denoiser"].values())


def test_refine_command_and_api(finished_run, tmp_path, data_root) -> None:
    from diffseg import refine
    from diffseg.cli import main

    run_dir, _ = finished_run
    images = data_root / "images" / "validation"
    assert (
        main(
            [
                "refine",
                "--refiner",
                str(run_dir),
                "--input",
                str(images),
                "--out",
                str(tmp_path / "out"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    stems = sorted(p.stem for p in images.glob("*.jpg"))
    assert sorted(p.stem for p in (tmp_path / "out").glob("*_overlay.png")) == [f"{s}_overlay" for s in stems]

    cfg, refiner, _ = load_refiner_from_run(run_dir)
    image = torch.randn(2, 3, 48, 48)
    labels = refine(images=image, refiner=refiner, steps=2, generator=torch.Generator().manual_seed(0))
    assert labels.shape == (2, 12, 12) and labels.dtype == torch.long
    with pytest.raises(ValueError, match="conditioned on segmentor features"):
        refine(base_logits=torch.randn(2, refiner.num_classes, 12, 12), refiner=refiner)


def test_refine_mirrors_the_input_tree_skips_unreadable_images_and_matches_the_evaluator(
    finished_run, tmp_path, data_root
) -> None:
    """Outputs mirror the input tree; a corrupt image is skipped (exit 1) while the others are refined; a refined
    mask equals `predict` on the evaluator's own test transform of the same image (same generator)."""
    import shutil

    from PIL import Image

    from diffseg.cli import main
    from diffseg.data import build_dataset
    from diffseg.engines import predict
    from diffseg.inference import refine_folder

    run_dir, _ = finished_run
    src = sorted((data_root / "images" / "validation").glob("*.jpg"))
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    shutil.copy(src[0], photos / "a.jpg")
    shutil.copy(src[1], photos / "sub" / "a.jpg")  # same stem, another folder: no clash once mirrored
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    argv = ["refine", "--refiner", str(run_dir), "--input", str(photos), "--out", str(tmp_path / "out")]
    assert main([*argv, "--device", "cpu"]) == 1  # one input skipped
    out = tmp_path / "out"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a.png", "a_overlay.png", "sub/a.png", "sub/a_overlay.png"
    ]  # fmt: skip

    cfg, refiner, segmentor = load_refiner_from_run(run_dir)
    val = build_dataset(cfg.data, "val", train=False)
    item = val[[f[1].name for f in val.files].index(src[0].name)]
    batch = {"image": item["image"][None], "valid_hw": item["valid_hw"][None], "mask": item["mask"][None]}
    _, steps = predict(refiner, segmentor, batch, cfg, torch.Generator().manual_seed(cfg.seed))
    expected = steps[-1][1].argmax(1)[0].numpy()
    report = refine_folder(run_dir, src[0], tmp_path / "one", device="cpu")
    assert report.written == [tmp_path / "one" / f"{src[0].stem}.png"] and not report.skipped
    assert (np.array(Image.open(report.written[0])) == expected).all()


def test_refine_refuses_to_write_over_or_inside_its_input_before_any_work(tmp_path) -> None:
    from diffseg.inference import _output_plan

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("x.jpg", "x.png"):
        (photos / name).write_bytes(b"")
    with pytest.raises(ValueError, match="inside it"):
        _output_plan(photos, photos)
    with pytest.raises(ValueError, match="inside it"):
        _output_plan(photos, photos / "refined")
    with pytest.raises(ValueError, match=r"x\.jpg and .*x\.png would both write"):
        _output_plan(photos, tmp_path / "out")
    with pytest.raises(ValueError, match="over an input image"):
        _output_plan(photos / "x.png", photos)  # one file, written beside itself under its own name
    assert not (tmp_path / "out").exists()


def test_a_base_without_weights_is_refused_before_any_work(tmp_path, data_root) -> None:
    """No weights and no base training: the frozen base would stay random (the paper profile's DeepLab rows)."""
    cfg = tiny_cfg(data_root, **{"segmentor.train_iterations": 0})
    with pytest.raises(ValueError, match=r"segmentor\.weights is unset.*random initialisation"):
        training(cfg, tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_micro_batches_accumulate_the_whole_batch_gradient(finished_run, data_root) -> None:
    """One process, one step on a batch of 8 in micro-batches of 3 (3 + 3 + 2): the accumulated gradient is the
    one-pass gradient up to float summation order (measured 4e-6 relative); the config's identity is unchanged.
    (Weights after several Adam steps drift further apart: Adam's first steps are sign-like, see the DDP test.)"""
    from diffseg.engines.dataflow import get_dataflow
    from diffseg.engines.schedule import Stages
    from diffseg.engines.trainers import create_refiner_trainer

    run_dir, _ = finished_run
    grads = {}
    for micro in (0, 3):
        cfg = tiny_cfg(data_root, **{"segmentor.train_iterations": 0, "train.micro_batch": micro})
        _, refiner = build_models(
            cfg, torch.device("cpu"), str(run_dir / "base.safetensors"), num_classes=150
        )
        batch = next(iter(get_dataflow(cfg, 1)[0]))
        opt = torch.optim.SGD(refiner.denoiser.parameters(), lr=0.0)
        create_refiner_trainer(refiner, opt, cfg, torch.device("cpu"), 0.0, Stages(0, 1)).run([batch])
        grads[micro] = {n: p.grad for n, p in refiner.denoiser.named_parameters() if p.grad is not None}
        if micro:
            assert config_hash(cfg) == config_hash(tiny_cfg(data_root, **{"segmentor.train_iterations": 0}))
    assert grads[0].keys() == grads[3].keys() and grads[0]
    for name, g in grads[0].items():
        assert (g - grads[3][name]).abs().max() <= 1e-4 * g.abs().max(), name


def test_a_global_batch_that_does_not_split_is_refused() -> None:
    from diffseg.engines.dataflow import per_process_batch

    assert per_process_batch(32, 8) == 4
    with pytest.raises(ValueError, match=r"data\.batch_size.*\(6\).*4 processes.*1, 2, 3, 6"):
        per_process_batch(6, 4)
