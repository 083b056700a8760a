"""``eval.select=best_val``: the weights of the best learning-curve point are kept and evaluated beside the final
ones, labelled; the option is checked when the config is built and leaves the identities of other runs alone."""

from __future__ import annotations

import json

import pytest
import torch

from diffseg import curves
from diffseg.config import ConfigError, apply_overrides, config_hash, identity_dict, replace
from diffseg.engines import best_val
from diffseg.profiles import profile_config


def test_select_is_checked_when_the_config_is_built():
    cfg = profile_config("smoke", "ade20k")
    with pytest.raises(
        ConfigError, match="'eval.select' = 'best' is not valid; valid values: final, best_val"
    ):
        apply_overrides(cfg, {"eval.select": "best"})
    with pytest.raises(ConfigError, match="set train.eval_every > 0"):
        apply_overrides(cfg, {"eval.select": "best_val", "train.eval_every": 0})


def test_the_default_select_is_not_part_of_a_runs_identity():
    cfg = profile_config("smoke", "ade20k")
    assert "select" not in identity_dict(cfg)["eval"]  # runs stored before the option keep their names
    chosen = replace(cfg, eval=replace(cfg.eval, select="best_val"))
    assert identity_dict(chosen)["eval"]["select"] == "best_val"
    assert config_hash(chosen) != config_hash(cfg)


def test_offer_keeps_only_a_strictly_better_point(tmp_path):
    a, b = {"w": torch.ones(2)}, {"w": torch.zeros(2)}
    assert best_val.offer(tmp_path, 10, 0.30, a)
    assert not best_val.offer(tmp_path, 20, 0.30, b)  # a tie keeps the earlier point
    assert not best_val.offer(tmp_path, 30, 0.20, b)
    weights, record = best_val.load_weights(tmp_path)
    assert record == {"iteration": 10, "mIoU": 0.30} and torch.equal(weights["w"], a["w"])
    assert best_val.offer(tmp_path, 40, 0.31, b)
    assert best_val.load_weights(tmp_path)[1]["iteration"] == 40
    with pytest.raises(FileNotFoundError, match="holds no best-val weights"):
        best_val.load_weights(tmp_path / "other")


def test_a_best_val_training_reports_both_weights(tmp_path, monkeypatch):
    from diffseg.engines import load_refiner_from_run, training

    monkeypatch.setenv("DIFFSEG_DATA", str(tmp_path / "data"))
    cfg = profile_config("smoke", "ade20k")
    cfg = replace(
        cfg,
        segmentor=replace(cfg.segmentor, train_iterations=6),
        train=replace(cfg.train, stage1_iterations=4, stage2_iterations=8, eval_every=3, checkpoint_every=4),
        eval=replace(cfg.eval, select="best_val"),
    )
    res = training(cfg, tmp_path / "r", progress=False)
    c = curves.read(tmp_path / "r")
    stage2 = c[(c["stage"] == 2) & (c["curve"] == "final_step")]
    best = stage2.loc[stage2["value"].idxmax()]  # the first of equal maxima, as offer keeps the earlier point
    assert res["best_val"]["iteration"] == int(best["iteration"])
    assert res["best_val"]["mIoU"] == pytest.approx(best["value"])
    assert len(res["best_val"]["refined"]) == len(res["refined"])  # evaluated whole, like the final weights
    assert res["best_val"]["base"]["mIoU"] == res["base"]["mIoU"]
    record = json.loads((tmp_path / "r" / best_val.BEST_RECORD).read_text())
    assert record["iteration"] == res["best_val"]["iteration"]
    _, refiner, _ = load_refiner_from_run(tmp_path / "r", weights="best_val")
    kept = torch.load(tmp_path / "r" / best_val.BEST_WEIGHTS, weights_only=True)
    for k, v in refiner.denoiser.state_dict().items():
        torch.testing.assert_close(v, kept[k])
    with pytest.raises(ValueError, match="weights must be 'final' or 'best_val'"):
        load_refiner_from_run(tmp_path / "r", weights="best")
