"""The paper profile as the release runs it (mmseg zoo bases, their files named before any work) and its dry run
(``paper-dry``: the same code paths at the paper's sizes for two iterations a stage)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from diffseg.cli import main
from diffseg.config import ConfigError, replace
from diffseg.profiles import SEGMENTORS, profile_config
from diffseg.segmentors import segmentor_names
from diffseg.segmentors.zoo import ZOO, missing_checkpoints, zoo_checkpoint
from diffseg.study.catalogue import EXPERIMENTS
from diffseg.study.sweep import arms_of, check_base_checkpoints, one_of_each_kind

ROOT = Path(__file__).resolve().parents[1]


def test_the_paper_profile_freezes_the_release_bases_from_mmseg_zoo_files(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DIFFSEG_CHECKPOINTS", str(tmp_path))
    for name in SEGMENTORS["paper"]:
        assert name in segmentor_names()
        for ds in ("ade20k", "cityscapes"):
            cfg = profile_config("paper", ds, name)
            ck = zoo_checkpoint(ds, name)
            assert cfg.segmentor.weights == str(tmp_path / ck.file)
            assert ck.file.startswith(ck.config) and ck.file.endswith(".pth")
            assert not cfg.segmentor.random_init
    # the exact file the release's configs freeze (configs/ade20k/segformer_b2_ade20k_*.py)
    assert zoo_checkpoint("ade20k", "segformer-b2-mmseg").file == (
        "segformer_mit-b2_512x512_160k_ade20k_20220620_114047-64e4feca.pth"
    )
    assert len(ZOO) == 12


def test_cityscapes_segformers_slide_as_mmseg_tested_them() -> None:
    assert profile_config("paper", "cityscapes", "segformer-b2-mmseg").eval.mode == "slide"
    assert profile_config("paper", "cityscapes", "deeplabv3plus-r50-d8").eval.mode == "whole"
    assert profile_config("paper", "ade20k", "segformer-b2-mmseg").eval.mode == "whole"


def test_a_paper_sweep_without_its_checkpoints_fails_at_once_naming_every_file(
    monkeypatch, tmp_path, capsys
) -> None:
    monkeypatch.setenv("DIFFSEG_CHECKPOINTS", str(tmp_path / "ckpt"))
    cfgs = [a.cfg for a in arms_of("main_results", "paper")]
    with pytest.raises(ConfigError) as err:
        check_base_checkpoints(cfgs)
    message = str(err.value)
    assert "\n" not in message and message.startswith("12 base checkpoint file(s) missing")
    for ck in ZOO.values():
        assert ck.file in message and ck.zoo_path in message
    # with the files in place nothing is missing
    (tmp_path / "ckpt").mkdir()
    for ck in ZOO.values():
        (tmp_path / "ckpt" / ck.file).write_bytes(b"")
    check_base_checkpoints(cfgs)
    assert missing_checkpoints([str(tmp_path / "ckpt" / ck.file) for ck in ZOO.values()]) == []


def test_a_single_training_with_a_missing_checkpoint_fails_before_its_run_folder(tmp_path, capsys) -> None:
    cfg = profile_config("paper", "ade20k", "segformer-b2-mmseg")
    from diffseg.config import save_config

    save_config(
        replace(cfg, segmentor=replace(cfg.segmentor, weights=str(tmp_path / "nope.pth"))),
        tmp_path / "c.yaml",
    )
    rc = main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "nope.pth does not exist" in err[0]
    assert not (tmp_path / "run").exists()


def test_the_dry_run_keeps_the_paper_sizes_and_cuts_iterations() -> None:
    for ds in ("ade20k", "cityscapes"):
        paper, dry = profile_config("paper", ds), profile_config("paper-dry", ds)
        assert dry.data.crop_size == paper.data.crop_size and dry.data.test_scale == paper.data.test_scale
        assert dry.diffusion == paper.diffusion and dry.unet == paper.unet and dry.refiner == paper.refiner
        assert (dry.train.stage1_iterations, dry.train.stage2_iterations) == (2, 2)
        assert dry.data.synthetic and dry.segmentor.weights is None and dry.segmentor.random_init
        assert dry.eval.grid == "release" and dry.eval.mode == paper.eval.mode
    assert profile_config("paper-dry", "ade20k").data.synth_size == (512, 683)
    assert profile_config("paper-dry", "cityscapes").data.synth_size == (1024, 2048)


def test_a_random_base_needs_random_init_on_purpose() -> None:
    from diffseg.engines import check_base_weights

    dry = profile_config("paper-dry", "ade20k")
    check_base_weights(dry)
    with pytest.raises(ConfigError, match="would keep its random initialisation"):
        check_base_weights(replace(dry, segmentor=replace(dry.segmentor, random_init=False)))


def test_the_dry_run_runs_every_base_and_every_kind_of_arm_once() -> None:
    dry = {n: arms_of(n, "paper-dry") for n in EXPERIMENTS}
    assert {a.cfg.segmentor.name for a in dry["main_results"]} == set(SEGMENTORS["paper"])
    assert {a.cfg.data.dataset for a in dry["main_results"]} == {"ade20k", "cityscapes"}
    for name, arms in dry.items():
        full = arms_of(name, "paper")
        for key in {k for a in full for k in a.labels if k != "arm"}:
            want = {a.labels[key] for a in full if a.cfg.data.dataset == "ade20k" and key in a.labels}
            assert want <= {a.labels.get(key) for a in arms}, (name, key)
        assert len(arms) <= len(full)
    noise = dry["noise_object_and_type"]
    assert len(noise) == 6  # 3 noise objects and 4 kernels covered, not their 12-arm product
    # a selection keeps the arms in order and drops one that shows nothing new
    assert one_of_each_kind(noise + noise) == noise


def test_make_dry_run_selects_the_paper_dry_profile() -> None:
    out = subprocess.run(
        ["make", "-n", "sweep", "PROFILE=paper", "DRY_RUN=1"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert "--profile paper-dry" in out
    out = subprocess.run(
        ["make", "-n", "sweep", "PROFILE=paper"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert "--profile paper " in out


@pytest.mark.slow
def test_the_paper_dry_run_trains_and_evaluates_every_arm(tmp_path, monkeypatch) -> None:
    """The whole dry run (under 3 minutes on one H200; on 2 CPU cores about 18 min of stage 1, 35 min of
    refiners and well over an hour of paper-size evaluations): every experiment's rows, a peak memory per job."""
    import pandas as pd

    monkeypatch.setenv("DIFFSEG_DATA", str(tmp_path / "data"))
    assert main(["sweep", "--profile", "paper-dry", "--results", str(tmp_path / "results")]) == 0
    df = pd.read_parquet(tmp_path / "results" / "paper-dry" / "results.parquet")
    assert set(df["experiment"]) == set(EXPERIMENTS)
    assert df["value"].notna().all()
    jobs = pd.read_csv(tmp_path / "results" / "paper-dry" / "jobs.csv")
    assert (jobs["peak_memory_gib"] > 0).all() and set(jobs["phase"]) >= {
        "stage 1",
        "refiners",
        "evaluations",
    }


def test_the_published_numbers_sit_beside_the_paper_profiles_bases() -> None:
    from diffseg.study.published import PUBLISHED

    assert set(PUBLISHED["segmentor"]) == set(SEGMENTORS["paper"])
    assert set(PUBLISHED["dataset"]) == {"ade20k", "cityscapes"}


def test_each_profiles_index_names_the_command_that_regenerates_it() -> None:
    from diffseg.report import _reproduce_command

    assert _reproduce_command("cpu") == "make reproduce"
    assert _reproduce_command("paper") == "make reproduce PROFILE=paper"
    assert _reproduce_command("paper-dry") == "make reproduce PROFILE=paper DRY_RUN=1"
