"""diffseg.viz on a hand-made results frame, and the notebooks run against a fake experiments module.

The fake frame follows the results contract (long format, one row per run, method, step, metric, class); its
numbers are chosen so the expected table cells can be computed by hand below.
"""

from __future__ import annotations

import ast
import itertools
import runpy
import sys
import types
from pathlib import Path

import jupytext
import numpy as np
import pandas as pd
import pytest

from diffseg import viz

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.py"))

# Hand-chosen numbers (fractions). Two arms x two seeds; each run has its base rows and refined steps 1..3.
BASE = {0: 0.40, 1: 0.42}
REFINED = {
    ("gt", 0): (0.41, 0.42, 0.43),
    ("gt", 1): (0.43, 0.44, 0.46),
    ("first", 0): (0.39, 0.38, 0.37),
    ("first", 1): (0.41, 0.40, 0.40),
}
ARMS = {"gt": "noise on GT / uniform", "first": "noise on first / uniform"}


def _row(run_id, arm_key, seed, method, step, metric, value, test="ss", class_name=""):
    return {
        "run_id": run_id,
        "experiment": "noise_object_and_type",
        "arm": ARMS[arm_key],
        "noise_object": arm_key,
        "kernel": "uniform",
        "dataset": "ade20k",
        "segmentor": "segformer-tiny",
        "seed": seed,
        "method": method,
        "step": step,
        "t": 0 if method == "base" else 30 - 10 * step,
        "test": test,
        "metric": metric,
        "class_name": class_name,
        "value": value,
        "params_base": 3_000_000,
        "params_refiner": 1_500_000,
        "wall_time_s": 10.0,
        "git_commit": "abc123",
        "device": "cpu",
        "profile": "smoke",
    }


@pytest.fixture
def results() -> pd.DataFrame:
    rows = []
    for (arm, seed), curve in REFINED.items():
        run = f"{arm}-s{seed}"
        rows.append(_row(run, arm, seed, "base", 0, "mIoU", BASE[seed]))
        rows.append(_row(run, arm, seed, "base", 0, "mIoU", BASE[seed] + 0.01, test="ms"))
        rows.append(_row(run, arm, seed, "base", 0, "mBIoU", BASE[seed] / 2))
        for cls, v in (("wall", 0.5), ("sky", 0.8)):
            rows.append(_row(run, arm, seed, "base", 0, "IoU", v, class_name=cls))
        for step, v in enumerate(curve, start=1):
            rows.append(_row(run, arm, seed, "refined", step, "mIoU", v))
            rows.append(_row(run, arm, seed, "refined", step, "mBIoU", v / 2))
        rows.append(_row(run, arm, seed, "refined", 3, "mIoU", curve[-1] + 0.01, test="ms"))
        # per class at the final step: wall gains 0.05 for "gt" and loses 0.02 for "first"; sky unchanged
        rows.append(
            _row(run, arm, seed, "refined", 3, "IoU", 0.55 if arm == "gt" else 0.48, class_name="wall")
        )
        rows.append(_row(run, arm, seed, "refined", 3, "IoU", 0.8, class_name="sky"))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------------
# tables


def test_summary_table_mean_std_over_seeds(results):
    s = viz.summary_table(results, index=["arm"], columns=["method"], test="ss")
    st = s.stats.set_index(["arm", "method"])
    gt = st.loc[(ARMS["gt"], "refined")]
    # final step 3: 43 and 46 -> mean 44.5, sample std sqrt(2 * 1.5**2) = 2.1213
    assert gt["mean"] == pytest.approx(44.5)
    assert gt["std"] == pytest.approx(2.12132, abs=1e-4)
    assert gt["n"] == 2
    assert st.loc[(ARMS["first"], "refined"), "mean"] == pytest.approx(38.5)
    assert st.loc[(ARMS["gt"], "base"), "mean"] == pytest.approx(41.0)
    assert s.text.loc[ARMS["gt"], "refined"] == "44.50 ± 2.12"
    assert s.text.loc[ARMS["first"], "base"] == "41.00 ± 1.41"


def test_summary_table_other_steps(results):
    first = viz.summary_table(results, index=["arm"], columns=["method"], step="first", test="ss").stats
    one = first.set_index(["arm", "method"]).loc[(ARMS["gt"], "refined"), "mean"]
    assert one == pytest.approx(42.0)  # (41 + 43) / 2
    two = viz.summary_table(results, index=["arm"], columns=["method"], step=2, test="ss").stats
    assert two.set_index(["arm", "method"]).loc[(ARMS["first"], "refined"), "mean"] == pytest.approx(39.0)


def test_summary_table_ambiguous_cell_names_the_varying_column(results):
    # without filtering on test, ss and ms rows fall into one cell per seed
    with pytest.raises(ValueError, match="test"):
        viz.summary_table(results, index=["arm"], columns=["method"])
    with pytest.raises(ValueError, match="unknown metric"):
        viz.summary_table(results, metric="mIOU")


def test_summary_table_several_metrics_and_tests(results):
    s = viz.summary_table(
        results, index=["arm"], columns=["metric", "test", "method"], metric=["mIoU", "mBIoU"]
    )
    assert s.text.loc[ARMS["gt"], ("mIoU", "ms", "refined")] == "45.50 ± 2.12"
    assert s.text.loc[ARMS["gt"], ("mBIoU", "ss", "refined")] == "22.25 ± 1.06"


def test_delta_table_per_seed_then_mean(results):
    d = viz.delta_table(results, index=["arm"], test="ss")
    st = d.stats.set_index("arm")
    # gt: 43-40=3, 46-42=4 -> +3.5 ± 0.71; first: 37-40=-3, 40-42=-2 -> -2.5 ± 0.71
    assert st.loc[ARMS["gt"], "delta_mean"] == pytest.approx(3.5)
    assert st.loc[ARMS["gt"], "delta_std"] == pytest.approx(0.70711, abs=1e-4)
    assert st.loc[ARMS["first"], "delta_mean"] == pytest.approx(-2.5)
    assert st.loc[ARMS["first"], "refined_mean"] == pytest.approx(38.5)
    assert d.text.loc[ARMS["gt"], "delta_mean"] == "+3.50 ± 0.71"
    assert d.text.loc[ARMS["first"], "delta_mean"] == "-2.50 ± 0.71"


def test_delta_table_pairs_with_shared_base_when_a_run_has_none(results):
    # drop the base rows of one run: its refined rows pair with the mean base of the same dataset/model/seed
    trimmed = results[~((results["run_id"] == "first-s0") & (results["method"] == "base"))]
    st = viz.delta_table(trimmed, index=["arm"], test="ss").stats.set_index("arm")
    assert st.loc[ARMS["first"], "delta_mean"] == pytest.approx(-2.5)


def test_compare_levels_and_main_effects(results):
    pairs = viz.compare_levels(results, "noise_object", "gt", "first")
    assert list(pairs["a"] - pairs["b"]) == pytest.approx([6.0, 6.0])
    ranges = viz.main_effect_ranges(results, ["noise_object", "kernel"])
    assert list(ranges["noise_object"]) == pytest.approx([6.0, 6.0])
    assert list(ranges["kernel"]) == pytest.approx([0.0, 0.0])


def test_effect_range_takes_simple_effects_on_an_l_shaped_grid():
    # finding 2's L: the noise object varied under the uniform kernel, the kernel varied on the first prediction
    cells = {("gt", "uniform"): 40.0, ("base", "uniform"): 42.0, ("first", "uniform"): 45.0,
             ("first", "absorbing"): 44.0, ("first", "gaussian"): 30.0}  # fmt: skip
    d = pd.DataFrame([{"noise_object": o, "kernel": k, "pct": v} for (o, k), v in cells.items()])
    # simple effects at the corner (first, uniform); averaging over the other factor would give 2.33 and 14.0
    assert viz.effect_range(d, "noise_object", ["kernel"], "pct") == pytest.approx(5.0)
    assert viz.effect_range(d, "kernel", ["noise_object"], "pct") == pytest.approx(15.0)
    # a complete grid (the L filled in) keeps main effects: the kernel's range is over its means
    full = pd.concat([d, pd.DataFrame([{"noise_object": o, "kernel": k, "pct": 41.0}
                                       for o in ("gt", "base") for k in ("absorbing", "gaussian")])])  # fmt: skip
    means = full.groupby("kernel")["pct"].mean()
    assert viz.effect_range(full, "kernel", ["noise_object"], "pct") == pytest.approx(
        means.max() - means.min()
    )


def test_the_synthetic_profiles_run_finding_2_as_an_l_and_the_paper_the_full_grid():
    from diffseg.study.arms import CORNER, noise_grid

    grid = noise_grid("cpu")
    assert len(grid) == len(set(grid)) == 5 and CORNER in grid
    assert {o for o, k in grid if k == CORNER[1]} == {"gt", "base", "first"}
    assert {k for o, k in grid if o == CORNER[0]} == {"uniform", "absorbing", "gaussian"}
    assert len(noise_grid("paper")) == 12


def test_one_factor_keeps_reference_level(results):
    extra = results[results["run_id"] == "gt-s0"].assign(
        run_id="abs-s0", kernel="absorbing", noise_object="gt"
    )
    df = pd.concat([results, extra])
    sub = viz.one_factor(df, "noise_object", ["noise_object", "kernel"])
    assert set(sub.loc[sub["method"] == "refined", "kernel"]) == {"uniform"}


def test_provenance_table(results):
    prov = viz.provenance_table(results)
    assert prov["params_base_M"].iloc[0] == pytest.approx(3.0)
    assert prov["seeds"].iloc[0] == 2


# ------------------------------------------------------------------------------------------------------------
# prose


def test_describe_delta_text():
    text = viz.describe_delta([43.0, 46.0, 44.0], [41.0, 44.0, 42.5], metric="mIoU")
    # deltas 2, 2, 1.5 -> mean 1.8333, std 0.2887
    assert text == "refined minus base: +1.83 mIoU (mean over 3 seeds, std 0.29)"
    assert "-2.50 mBIoU" in viz.describe_delta([37.0, 40.0], [40.0, 42.0], metric="mBIoU")
    assert "1 seed" in viz.describe_delta([41.0], [40.0])
    with pytest.raises(ValueError, match="equal-length"):
        viz.describe_delta([1.0, 2.0], [1.0])


@pytest.mark.parametrize(
    ("mean", "std", "n", "expect", "out"),
    [
        (3.5, 0.5, 3, "increase", "supports"),  # 3.5 > 4.303 * 0.5 / sqrt(3) = 1.24
        (3.5, 0.5, 3, "decrease", "contradicts"),
        (-2.0, 0.1, 5, "increase", "contradicts"),
        (-2.0, 0.1, 5, "decrease", "supports"),
        (3.5, 0.70711, 2, "increase", "inconclusive"),  # 3.5 < 12.706 * 0.5
        (1.0, 2.0, 3, "increase", "inconclusive"),
        (1.0, float("nan"), 1, "increase", "inconclusive"),  # one seed: no spread estimate
        (1.0, 0.0, 2, "increase", "supports"),  # identical seeds
        (0.0, 0.0, 3, "increase", "inconclusive"),
    ],
)
def test_verdict_rule(mean, std, n, expect, out):
    assert viz.verdict(mean, std, n, expect) == out


def test_verdict_rejects_bad_expectation():
    with pytest.raises(ValueError, match="expect"):
        viz.verdict(1.0, 0.1, 3, expect="up")


def test_describe_table_says_contradiction_plainly(results):
    stats = viz.delta_table(results, index=["arm"], test="ss").stats
    stats = pd.concat([stats, stats.assign(n=3, delta_std=0.1)])  # three seeds, tight: now significant
    text = viz.describe_table(stats, ["arm"])
    assert "contradicted in" in text and ARMS["first"] in text


# ------------------------------------------------------------------------------------------------------------
# colours and figures


def test_colorize_maps_ignore_to_black_and_classes_to_palette():
    palette = np.array([[10, 20, 30], [200, 100, 50]], dtype=np.uint8)
    mask = np.array([[0, 1], [255, 1]])
    rgb = viz.colorize(mask, palette)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [10, 20, 30]
    assert rgb[0, 1].tolist() == [200, 100, 50]
    assert rgb[1, 0].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="outside the palette"):
        viz.colorize(np.array([[2]]), palette)


def test_overlay_keeps_image_on_ignore():
    palette = np.array([[255, 0, 0]], dtype=np.uint8)
    img = np.full((2, 2, 3), 100, dtype=np.uint8)
    out = viz.overlay(img, np.array([[0, 255], [0, 0]]), palette, alpha=0.5)
    assert out[0, 1].tolist() == [100, 100, 100]
    assert out[0, 0].tolist() == [178, 50, 50]


def test_error_map_categories():
    gt = np.array([[0, 0, 1, 1]] * 4)
    base = np.array([[0, 1, 1, 1]] * 4)  # wrong at column 1
    refined = np.array([[0, 0, 0, 1]] * 4)  # wrong at column 2
    err = viz.error_map(gt, base, refined, boundary_width=None)
    assert err[0].tolist() == [0, 2, 3, 0]


def test_boundary_band_matches_the_metric():
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("diffseg.metrics")
    gen = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, (20, 24), generator=gen)
    label[5:15, 6:18] = 1  # a block, so interiors exist
    label[0, :4] = 255
    for d in (1, 2):
        ref = metrics.boundary_map(label[None], d, ignore_index=255)[0].numpy() >= 0
        assert np.array_equal(viz.boundary_band(label.numpy(), d), ref)
    assert viz.release_boundary_width(64, 64) == metrics.boundary_width(64, 64)


def _files_ok(paths):
    return all(p.is_file() and p.stat().st_size > 0 for p in paths)


def test_result_figures_are_saved(results, tmp_path):
    figs = {
        "steps": viz.step_curves(results, "mIoU", hue="arm"),
        "bars": viz.bar_compare(results, x="arm"),
        "per_class": viz.per_class_delta(results),
        "heat": viz.delta_heatmap(
            viz.delta_table(results, ["dataset", "segmentor", "noise_object"], ["kernel"], test="ss").stats,
            "noise_object",
            "kernel",
        ),
    }
    for stem, fig in figs.items():
        paths = viz.save_figure(fig, stem, tmp_path / "figures")
        assert [p.suffix for p in paths] == [".png", ".svg"] and _files_ok(paths)
    assert not list((tmp_path / "figures").glob("*.tmp"))
    csv = viz.save_table(viz.summary_table(results, ["arm"], test="ss").text, "t", tmp_path / "tables")
    assert "±" in csv.read_text()
    with pytest.raises(ValueError, match="stem"):
        viz.save_table(pd.DataFrame(), "a/b", tmp_path)


def fake_artifacts(n=3, size=32, small=8, k=4, steps=3, levels=3, samples=4, seed=0):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, k, (n, size, size)).astype(np.uint8)
    gt[:, :2] = 255
    return {
        "image": rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8),
        "gt": gt,
        "base": rng.integers(0, k, (n, size, size)),
        "refined_steps": rng.integers(0, k, (steps, n, size, size)),
        "t_steps": np.array([20, 10, 1][:steps]),
        "x_t_steps": rng.integers(0, k + 1, (steps, n, small, small)),  # k = the [MASK] token
        "prior_gt": gt,
        "prior_noised": rng.integers(0, k, (levels, n, small, small)),
        "prior_denoised": rng.integers(0, k, (levels, n, small, small)),
        "prior_levels": np.array([5, 10, 20][:levels]),
        "prior_samples": rng.integers(0, k, (samples, small, small)),
    }


def test_artifact_figures_are_saved(tmp_path):
    arts = fake_artifacts()
    palette = np.array([[0, 0, 200], [0, 200, 0], [200, 0, 0], [200, 200, 0]], dtype=np.uint8)
    figs = {
        "cmp": viz.comparison_grid(arts, palette, n=2),
        "traj": viz.trajectory_grid(arts, palette),
        "prior": viz.prior_grid(arts, palette),
        "samples": viz.prior_samples(arts, palette, n=3),
    }
    for stem, fig in figs.items():
        assert _files_ok(viz.save_figure(fig, stem, tmp_path))
    table = viz.prior_table(arts)
    assert list(table.columns) == ["level", "noised_acc", "denoised_acc", "gain"] and len(table) == 3
    s = viz.artifact_summary(arts)
    assert s["refined_acc"] - s["base_acc"] == pytest.approx(s["fixed_pct"] - s["broken_pct"])
    with pytest.raises(ValueError, match="prior_samples"):
        viz.prior_samples({}, palette)


class _TinyDataset:
    class_names = ("a", "b", "c")
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    num_classes = 3

    def __init__(self, n=3):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        mask = np.zeros((8, 8), dtype=np.int64)
        mask[:, 4:] = 1
        mask[0] = 255
        return {"image": np.full((3, 8, 8), 0.5, dtype=np.float32), "mask": mask, "id": f"img{i}"}


def test_class_frequency_counts_and_figure(tmp_path):
    counts = viz.class_pixel_counts(_TinyDataset())
    assert counts["pixels"].tolist() == [3 * 28, 3 * 28, 0]
    assert counts["share"].tolist() == pytest.approx([50.0, 50.0, 0.0])
    assert counts["images"].tolist() == [3, 3, 0]
    assert _files_ok(viz.save_figure(viz.class_frequency(_TinyDataset()), "freq", tmp_path))
    assert _files_ok(viz.save_figure(viz.dataset_samples(_TinyDataset(), n=2), "samples", tmp_path))


# ------------------------------------------------------------------------------------------------------------
# notebooks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_python_with_one_parameters_cell(path):
    source = path.read_text()
    ast.parse(source, filename=str(path))
    assert source.count('# %% tags=["parameters"]') == 1
    nb = jupytext.reads(source, fmt="py:percent")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    params = ast.parse(tagged[0].source)
    names = {t.id for node in params.body if isinstance(node, ast.Assign) for t in node.targets}
    assert {"profile", "results_dir", "reports_dir", "device"} <= names
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_all_notebooks_present():
    names = [p.stem for p in NOTEBOOKS]
    assert names == [
        "00_data",
        "01_main_results",
        "02_naive_integration",
        "03_noise_object_and_type",
        "04_inference_scheme",
        "05_schedule_and_T",
        "06_condition_and_training",
        "07_qualitative",
        "08_mask_prior",
        "09_performance",
        "10_learning_and_budget",
    ]


# A fake `diffseg.experiments` (and `diffseg.data`) honouring the contract, so the notebooks can be executed
# end to end here without training anything. The lead's papermill test runs them against the real library.
_ARM_GRIDS = {
    "main_results": [{}],
    "naive_integration": [
        {"arm": "textbook: noise on GT, strict", "sampler": "strict"},
        {"arm": "DDPS", "sampler": "free_renoise"},
    ],
    "noise_object_and_type": [
        {"noise_object": o, "kernel": k}
        for o, k in itertools.product(("gt", "base", "first"), ("uniform", "absorbing"))
    ],
    "inference_scheme": [{"sampler": "single_step", "num_evals": "1"}]
    + [{"sampler": s, "num_evals": str(n)} for s, n in itertools.product(("strict", "free_renoise"), (2, 5))],
    "schedule_and_T": [
        {"schedule": s, "num_steps": str(t)} for s, t in itertools.product(("linear", "cosine"), (20, 100))
    ],
    "condition_and_training": [
        {"condition": "features", "training": "two-stage", "ema": "on"},
        {"condition": "logits", "training": "two-stage", "ema": "on"},
        {"condition": "mask", "training": "two-stage", "ema": "on"},
        {"condition": "features", "training": "one-stage", "ema": "on"},
        {"condition": "features", "training": "two-stage", "ema": "off"},
    ],
    "qualitative": [{}],
    "mask_prior": [{}],
}


def _fake_run_experiment(
    name, profile="cpu", results_dir="results", datasets=None, segmentors=None, seeds=None, device="auto"
):
    """Rows shaped like diffseg.experiments': provenance (sampler, num_evals, num_steps) on every row, arm labels
    overriding it, one run id per evaluation with its own base rows, ms evaluated at the last step only."""
    rng = np.random.default_rng(len(name))
    rows = []
    for dataset, segmentor, seed, (i, arm) in itertools.product(
        datasets or ["ade20k"], segmentors or ["seg-tiny"], seeds or [0, 1], enumerate(_ARM_GRIDS[name])
    ):
        labels = {"sampler": "free_renoise", "num_evals": 3, "num_steps": 20, **arm}
        labels.setdefault("arm", " / ".join(f"{v}" for v in arm.values()) or "DDPS")
        n_steps = int(labels["num_evals"])
        for test in ("ss", "ms") if name == "main_results" else ("ss",):
            common = dict(
                experiment=name, dataset=dataset, segmentor=segmentor, seed=seed, test=test, **labels
            )
            common.update(run_id=f"{name}-{dataset}-{segmentor}-{seed}-{i}-{test}", params_base=1e6)
            common.update(params_refiner=5e5, wall_time_s=1.0, git_commit="x", device="cpu", profile=profile)
            steps = [n_steps] if test == "ms" else range(1, n_steps + 1)
            for metric in ("mIoU", "mBIoU"):
                b = 0.4 + 0.01 * seed
                rows.append(
                    {
                        **common,
                        "method": "base",
                        "step": 0,
                        "t": 0,
                        "metric": metric,
                        "class_name": "",
                        "value": b,
                    }
                )
                for step in steps:
                    v = b + 0.01 * (i - 1) + 0.002 * step + rng.normal(0, 0.002)
                    rows.append(
                        {
                            **common,
                            "method": "refined",
                            "step": step,
                            "t": 10 * (n_steps - step),
                            "metric": metric,
                            "class_name": "",
                            "value": v,
                        }
                    )
            for cls in ("a", "b", "c", "d"):
                rows.append(
                    {
                        **common,
                        "method": "base",
                        "step": 0,
                        "t": 0,
                        "metric": "IoU",
                        "class_name": cls,
                        "value": 0.5,
                    }
                )
                v = 0.5 + rng.normal(0, 0.02)
                rows.append(
                    {
                        **common,
                        "method": "refined",
                        "step": n_steps,
                        "t": 0,
                        "metric": "IoU",
                        "class_name": cls,
                        "value": v,
                    }
                )
    return pd.DataFrame(rows)


def _fake_experiments_module() -> types.ModuleType:
    ex = types.ModuleType("diffseg.experiments")
    ex.PROFILES = ("smoke", "cpu", "paper")
    ex.EXPERIMENTS = {
        n: types.SimpleNamespace(
            title=n.replace("_", " "), finding="a finding" if n[0] == "n" else "", description="fake"
        )
        for n in _ARM_GRIDS
    }
    ex.profile_notes = lambda profile: f"*fake profile {profile}*"
    ex.run_experiment = _fake_run_experiment
    ex.load_artifacts = lambda run_id, results_dir="results", profile=None: fake_artifacts()
    ex.dataset_info = lambda name: {
        "class_names": ("a", "b", "c", "d"),
        "palette": np.eye(4, 3, dtype=np.uint8) * 200,
    }
    ex.data_config = lambda dataset, profile: types.SimpleNamespace(
        root=f"data/{dataset}", synthetic=True, reduce_zero_label=True
    )
    ex.PUBLISHED = pd.DataFrame(
        {
            "dataset": ["ade20k"],
            "segmentor": ["seg-tiny"],
            "method": ["refined"],
            "metric": ["mIoU"],
            "value": [41.0],
        }
    )
    return ex


def _fake_notebook_module() -> types.ModuleType:
    """`diffseg.notebook` as the notebooks use it: open_experiment -> rows, provenance and output folders."""
    from diffseg import report, viz

    nb = types.ModuleType("diffseg.notebook")

    def open_experiment(stem, name, profile, results_dir="results", reports_dir=None, **params):
        selection = {k: params.get(k) for k in ("datasets", "segmentors", "seeds")}
        df = _fake_run_experiment(name, profile, results_dir, **selection)
        print(report.page_title(stem))
        provenance = viz.provenance_table(df)
        out = Path(reports_dir or "reports")
        return types.SimpleNamespace(
            rows=df, provenance=provenance, tables_dir=out / "tables", figures_dir=out / "figures"
        )

    nb.open_experiment = open_experiment
    nb.open_report = lambda profile, results_dir="results", reports_dir=None: (
        Path(results_dir),
        Path(reports_dir or "reports") / "tables",
        Path(reports_dir or "reports") / "figures",
    )
    return nb


def _fake_data_module() -> types.ModuleType:
    data = types.ModuleType("diffseg.data")
    data.ensure_synthetic = lambda cfg: None
    data.ADE20K = lambda root, split, reduce_zero_label=True: _TinyDataset(4 if split == "train" else 2)
    data.Cityscapes = lambda root, split: _TinyDataset(3)
    return data


@pytest.fixture
def fake_library(monkeypatch, tmp_path):
    import diffseg

    fakes = (
        ("experiments", _fake_experiments_module()),
        ("data", _fake_data_module()),
        ("notebook", _fake_notebook_module()),
    )
    for name, mod in fakes:
        monkeypatch.setitem(sys.modules, f"diffseg.{name}", mod)
        monkeypatch.setattr(diffseg, name, mod, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# 09_performance needs latency rows and 10_learning_and_budget the whole store, which the fake does not make;
# tests/test_notebooks.py runs both on the real library.
@pytest.mark.parametrize(
    "path",
    [p for p in NOTEBOOKS if p.stem not in ("09_performance", "10_learning_and_budget")],
    ids=lambda p: p.name,
)
def test_notebook_runs_against_the_contract(path, fake_library, capsys):
    runpy.run_path(str(path), run_name="__main__")
    prefix = path.name[:2]
    tables = list((fake_library / "reports" / "tables").glob(f"{prefix}_*.csv"))
    figures = list((fake_library / "reports" / "figures").glob(f"{prefix}_*.png"))
    assert tables, f"{path.name} wrote no table"
    assert figures, f"{path.name} wrote no figure"
    assert all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in figures), "a figure is not a PNG"
    # outside a kernel, display() prints each object's text form: the notebook must have shown its tables
    assert capsys.readouterr().out.strip(), f"{path.name} displayed nothing"


def test_summary_table_counts_a_repeated_base_once(results):
    st = viz.summary_table(results[results["method"] == "base"], index=["dataset"], test="ss").stats
    assert st["mean"].iloc[0] == pytest.approx(41.0) and st["n"].iloc[0] == 2
