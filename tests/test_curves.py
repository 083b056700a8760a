"""Learning curves (diffseg.curves) and budget curves (diffseg.budget): recording, resuming, reading, verdicts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from diffseg import budget, curves
from diffseg.config import replace
from diffseg.profiles import profile_config


@pytest.mark.parametrize(
    "every, total, start, out",
    [
        (5, 20, 0, [5, 10, 15, 20]),
        (40, 100, 0, [40, 80, 100]),
        (40, 240, 100, [120, 160, 200, 240]),
        (0, 9, 0, []),
    ],
)
def test_points(every, total, start, out):
    assert curves.points(every, total, start) == out


def test_record_replaces_a_point_and_keeps_the_others(tmp_path):
    curves.record(tmp_path, 10, 1, {"first_step": 0.2, "final_step": 0.2})
    curves.record(tmp_path, 5, 1, {"first_step": 0.1, "final_step": 0.1})
    curves.record(tmp_path, 10, 1, {"first_step": 0.3, "final_step": 0.3})  # a resumed run measures it again
    c = curves.read(tmp_path)
    assert c["iteration"].tolist() == [5, 5, 10, 10]
    assert c[c["iteration"] == 10]["value"].tolist() == [0.3, 0.3]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / curves.CURVE_FILE).write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a learning curve"):
        curves.read(tmp_path / "bad")
    assert curves.read(tmp_path / "none").empty


@pytest.mark.parametrize(
    "values, flat", [([0.1, 0.2, 0.202], True), ([0.1, 0.2, 0.21], False), ([0.2], False)]
)
def test_plateau(values, flat):
    assert curves.plateau(pd.Series(values)) is flat


def test_recording_a_curve_does_not_change_the_training(tmp_path, monkeypatch):
    """Same seed with and without a learning curve: identical final metrics; the curve has every point."""
    from diffseg.engines import training

    monkeypatch.setenv("DIFFSEG_DATA", str(tmp_path / "data"))
    cfg = profile_config("smoke", "ade20k")
    cfg = replace(cfg, train=replace(cfg.train, stage1_iterations=4, stage2_iterations=6, checkpoint_every=5))
    cfg = replace(cfg, segmentor=replace(cfg.segmentor, train_iterations=6))
    plain = training(replace(cfg, train=replace(cfg.train, eval_every=0)), tmp_path / "plain", progress=False)
    traced = training(
        replace(cfg, train=replace(cfg.train, eval_every=3)), tmp_path / "traced", progress=False
    )
    assert plain["refined"][-1]["mIoU"] == traced["refined"][-1]["mIoU"]
    assert plain["base"]["mIoU"] == traced["base"]["mIoU"]
    c = curves.read(tmp_path / "traced")
    assert sorted(set(c["iteration"])) == [3, 6, 9, 10]
    assert set(c[c["iteration"] == 3]["stage"]) == {1} and set(c[c["iteration"] == 9]["stage"]) == {2}
    # free re-noising arms also record the strict sampler in stage 2 (finding 3's budget curve), not in stage 1
    assert set(c[c["stage"] == 1]["curve"]) == {"base", "first_step", "final_step"}
    assert set(c[c["stage"] == 2]["curve"]) == {"base", "first_step", "final_step", "strict_final_step"}
    base = curves.read(
        tmp_path / "traced", curves.BASE_CURVE_FILE
    )  # the base's own curve, beside the refiner's
    assert base["iteration"].tolist() == [3, 6] and set(base["curve"]) == {"base"}
    assert json.loads((tmp_path / "traced" / "metrics.json").read_text())["config_hash"]


def _curve_frame() -> pd.DataFrame:
    """Two arms x three seeds x three iterations; arm 'first' gains 1 point per iteration over 'gt' from 0."""
    rows = []
    for arm, obj in (("first / uniform", "first"), ("gt / uniform", "gt")):
        for seed in range(3):
            tid = f"{obj}{seed}"
            rows.append({"experiment": "noise_object_and_type", "method": "refined", "train_id": tid,
                         "dataset": "ade20k", "segmentor": "s", "seed": seed, "arm": arm, "noise_object": obj,
                         "kernel": "uniform", "value": 0.5, "step": 5, "metric": "mIoU"})  # fmt: skip
            for k, it in enumerate((10, 20, 30)):
                v = 0.30 + 0.01 * k * (obj == "first") + 0.001 * seed
                for curve, val in (("final_step", v), ("base", 0.25)):
                    rows.append({"experiment": "learning_curves", "trained": "refiner", "method": "curve",
                                 "train_id": tid, "dataset": "ade20k", "segmentor": "s", "seed": seed,
                                 "step": it, "stage": 2, "curve": curve, "value": val})  # fmt: skip
    return pd.DataFrame(rows)


def test_budget_curve_of_a_paired_contrast_and_when_it_settles():
    df = _curve_frame()
    c = budget.arm_curves(df, "noise_object_and_type")
    assert set(c["arm"]) == {"first / uniform", "gt / uniform"} and c["value"].max() == pytest.approx(32.2)
    per_seed = budget.level_minus_level(c, "noise_object", "first", "gt", {"kernel": "uniform"})
    b = budget.budget_curve(per_seed)
    assert b["mean"].round(6).tolist() == [0.0, 1.0, 2.0] and b["n"].tolist() == [3, 3, 3]
    assert b["half_width"].fillna(0).max() < 1e-9  # identical differences in every seed
    assert budget.settles(b) == "ade20k / s: positive from iteration 20 on (+2.00 at iteration 30)"
    table = budget.plateau_table(c, ["arm"])
    assert dict(zip(table["arm"], table["status"])) == {
        "first / uniform": "still improving",
        "gt / uniform": "flat",
    }
    assert budget.still_improving(df, "noise_object_and_type") == ["ade20k / s / first / uniform"]
    main = budget.refined_minus_base(c)
    assert np.allclose(main[main["iteration"] == 10]["delta"], [5.0, 5.1, 5.2])


def test_settles_says_when_a_contrast_has_not():
    b = pd.DataFrame({"setting": ["x"] * 2, "iteration": [1, 2], "mean": [1.0, 0.1], "half_width": [0.5, 0.5],
                      "n": [3, 3]})  # fmt: skip
    assert "x: no sign yet (its 95% interval still contains zero at the last point" in budget.settles(b)
    assert budget.settles(b.iloc[:0]) == "no curve points recorded"


def test_a_curve_evaluation_keeps_the_first_and_final_step_of_a_full_one(tmp_path, monkeypatch):
    """steps="ends" / "last" score only some steps; the sampler runs whole, so their numbers are the full ones'."""
    import torch

    from diffseg.engines import build_models, evaluate_models, get_dataflow

    monkeypatch.setenv("DIFFSEG_DATA", str(tmp_path / "data"))
    cfg = profile_config("smoke", "ade20k")
    _, val_loader, val_ds = get_dataflow(cfg, 1)
    segmentor, refiner = build_models(cfg, torch.device("cpu"), None, val_ds.num_classes)
    full = evaluate_models(refiner, segmentor, cfg, val_loader, val_ds, torch.device("cpu"))
    ends = evaluate_models(refiner, segmentor, cfg, val_loader, val_ds, torch.device("cpu"), steps="ends")
    last = evaluate_models(refiner, segmentor, cfg, val_loader, val_ds, torch.device("cpu"), steps="last")
    assert len(full["refined"]) == cfg.eval.num_evals and len(ends["refined"]) == 2
    assert ends["t"] == [full["t"][0], full["t"][-1]] and last["t"] == full["t"][-1:]
    same = np.testing.assert_equal  # dicts of floats and per-class lists; NaN (absent class) equals NaN
    same(ends["refined"][0], full["refined"][0])
    same(ends["refined"][1], full["refined"][-1])
    same(last["refined"][0], full["refined"][-1])
    same(ends["base"], full["base"])
    assert full["refined"][0]["mIoU"] != full["refined"][-1]["mIoU"]  # the two kept steps are distinct
    with pytest.raises(ValueError, match="steps must be one of"):
        evaluate_models(refiner, segmentor, cfg, val_loader, val_ds, torch.device("cpu"), steps="some")


def test_an_equal_size_resize_is_the_identity_it_skips():
    import torch
    import torch.nn.functional as F

    from diffseg.prediction import resize_bilinear

    x = torch.randn(2, 5, 12, 20)
    same = F.interpolate(x, size=(12, 20), mode="bilinear", align_corners=False)
    assert torch.equal(same, x) and resize_bilinear(x, (12, 20)) is x
    assert torch.equal(
        resize_bilinear(x, (24, 40)), F.interpolate(x, size=(24, 40), mode="bilinear", align_corners=False)
    )


def test_curve_minus_curve_pairs_two_samplers_of_the_same_training():
    rows = []
    for seed in range(3):
        for it in (10, 20):
            for curve, v in (("final_step", 30.0 + seed + it / 10), ("strict_final_step", 29.0 + seed)):
                rows.append({"dataset": "ade20k", "segmentor": "s", "seed": seed, "iteration": it,
                             "curve": curve, "value": v})  # fmt: skip
    d = budget.curve_minus_curve(pd.DataFrame(rows), "final_step", "strict_final_step")
    b = budget.budget_curve(d)
    assert b["mean"].tolist() == [2.0, 3.0] and b["n"].tolist() == [3, 3]
    assert budget.curve_minus_curve(pd.DataFrame(rows), "final_step", "absent").empty


def test_a_contrast_is_settled_over_its_last_third_and_resolved_by_its_interval():
    """settled: over the points at >= 2/3 of the budget the sign and the verdict (interval excludes 0) hold;
    resolved: the last interval excludes 0, or is at most 0.5 wide on each side."""
    its = [100, 200, 300, 400, 500, 600]

    def curve(setting, means, halves, n=3):
        return pd.DataFrame(
            {"setting": setting, "iteration": its, "mean": means, "half_width": halves, "n": n}
        )

    b = pd.concat([
        curve("a: positive throughout", [0.1, 0.5, 1.0, 1.2, 1.1, 1.3], [0.9, 0.6, 0.5, 0.4, 0.5, 0.4]),
        curve("b: verdict flips at the end", [1.0] * 6, [0.5, 0.5, 0.5, 0.5, 0.5, 1.2]),
        curve("c: sign flips in the window", [0.3, 0.2, 0.1, 0.2, -0.1, 0.1], [0.4] * 6),
        curve("d: wide and unsettled", [0.5, 0.4, 0.6, -0.2, 0.5, 0.6], [0.9] * 6),
        curve("e: one seed", [1.0] * 6, [float("nan")] * 6, n=1),
    ])  # fmt: skip
    t = budget.final_contrasts([("key", b)]).set_index("setting")
    assert t["contrast"].eq("key").all() and t["budget"].eq(600).all()
    assert t["settled"].to_dict() == {"a: positive throughout": "yes", "b: verdict flips at the end": "no",
                                      "c: sign flips in the window": "no", "d: wide and unsettled": "no",
                                      "e: one seed": "no"}  # fmt: skip
    assert t["resolved"].to_dict() == {"a: positive throughout": "yes", "b: verdict flips at the end": "no",
                                       "c: sign flips in the window": "yes", "d: wide and unsettled": "no",
                                       "e: one seed": "no"}  # fmt: skip
    assert t.loc["c: sign flips in the window", "reads"] == "no difference larger than 0.5"
    assert t.loc["a: positive throughout", "reads"] == "positive"
    assert "half-width 0.90 > 0.5" in t.loc["d: wide and unsettled", "reads"]
    assert budget.final_contrasts([]).empty


def test_the_report_says_whether_the_last_decay_falls_before_the_last_two_points():
    cpu = profile_config("cpu")
    # cpu: stage 1 of 100, stage 2 of 500 decayed last at 3/4 (iteration 475), points every 100 up to 600
    assert "iteration 475, before their last two points (500 and 600)" in budget.last_decay_note(cpu)
    late = replace(cpu, optim=replace(cpu.optim, decay_at=(0.6, 0.85)))  # last decay at 525
    assert "iteration 525, between their last two points (500 and 600)" in budget.last_decay_note(late)
    assert budget.last_decay_note(replace(cpu, optim=replace(cpu.optim, policy="cosine"))) == ""
    assert budget.last_decay_note(profile_config("paper")) == ""  # decays every N iterations, no fraction
