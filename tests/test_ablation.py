"""Ablation parameters (levels, overrides): checked before any work, arms built from them, rows kept apart from
the default study's; relative paths resolve against the project root; papermill reads the .py notebooks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from diffseg import experiments as ex
from diffseg.config import ConfigError
from diffseg.paths import ROOT_ENV, project_root, resolve
from diffseg.results import ResultsStore
from diffseg.study.ablation import FACTORS, make_ablation
from diffseg.study.identity import train_id

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("experiment", "overrides", "levels", "message"),
    [
        ("schedule_and_T", ["train.stage2_iteration=5"], None, "did you mean 'train.stage2_iterations'?"),
        ("schedule_and_T", ["train.ema=maybe"], None, "train.ema' expects true/false"),
        ("schedule_and_T", ["stage2_iterations"], None, "not of the form key.sub=value"),
        ("schedule_and_T", None, {"num_step": [5]}, "unknown factor 'num_step' for schedule_and_T (did you mean 'num_steps'?)"),
        ("schedule_and_T", None, {"num_steps": ["five"]}, "levels['num_steps'] = 'five' is not an integer"),
        ("schedule_and_T", None, {"num_steps": [0]}, "levels['num_steps'] = 0: config key 'diffusion.num_steps'"),
        ("schedule_and_T", None, {"schedule": ["cosin"]}, "(did you mean 'cosine'?); allowed: linear, cosine"),
        ("schedule_and_T", ["diffusion.num_steps=50"], None, "is the factor 'num_steps' of schedule_and_T"),
        ("main_results", None, {"num_steps": [5]}, "main_results' varies no factor"),
        ("main_results", ["seed=3"], None, "chosen by the notebook's 'seeds' parameter"),
        ("noise_object_and_type", None, "{kernel: [", "levels"),
    ],
)  # fmt: skip
def test_bad_ablation_parameters_fail_in_one_line_naming_the_key(
    experiment, overrides, levels, message
) -> None:
    with pytest.raises(ConfigError) as err:
        ex.arms_of(experiment, "smoke", overrides=overrides, levels=levels)
    text = str(err.value)
    assert message in text and "\n" not in text


def test_every_experiment_declares_its_factors() -> None:
    assert set(FACTORS) == set(ex.EXPERIMENTS)
    for name, factors in FACTORS.items():
        for f in factors:
            assert f.doc and f.kind in (int, str), (name, f.name)


def test_papermill_text_parameters_parse_as_the_python_values() -> None:
    """papermill's -p passes text; -y and the Python API pass values: both give one ablation."""
    text = make_ablation(
        "schedule_and_T", "smoke", '["train.stage2_iterations=20"]', '{"num_steps": [5, 15]}'
    )
    value = make_ablation("schedule_and_T", "smoke", ["train.stage2_iterations=20"], {"num_steps": [15, 5]})
    assert text.id == value.id and len(text.id) == 8
    assert (
        make_ablation("schedule_and_T", "smoke").id == ""
        and make_ablation("schedule_and_T", "smoke").is_default
    )


def test_levels_replace_the_defaults_and_keep_the_reference_arm() -> None:
    arms = ex.arms_of(
        "schedule_and_T", "smoke", overrides=["train.stage2_iterations=20"], levels={"num_steps": [5, 15]}
    )
    got = [(a.cfg.diffusion.schedule, a.cfg.diffusion.num_steps) for a in arms]
    # the profile's default run (linear, T = 10 under smoke) first, as the reference, then the grid
    assert got == [("linear", 10), ("linear", 5), ("linear", 15), ("cosine", 5), ("cosine", 15)]
    assert {a.labels["ablation"] for a in arms} == {make_ablation("schedule_and_T", "smoke", ["train.stage2_iterations=20"], {"num_steps": [5, 15]}).id}  # fmt: skip
    assert all(a.cfg.train.stage2_iterations == 20 for a in arms)
    default = {train_id(a.cfg) for a in ex.arms_of("schedule_and_T", "smoke")}
    assert not default & {train_id(a.cfg) for a in arms}  # another budget: other trainings


def test_overrides_change_the_run_the_arms_derive_from() -> None:
    """A one-stage arm keeps the total of the overridden two-stage budget (overrides come first)."""
    arms = ex.arms_of("condition_and_training", "smoke", overrides=["train.stage2_iterations=30"])
    one = next(a for a in arms if a.labels["training"] == "one-stage")
    assert (one.cfg.train.stage1_iterations, one.cfg.train.stage2_iterations) == (0, 10 + 30)
    only = ex.arms_of(
        "condition_and_training", "smoke", levels={"condition": ["mask"], "training": [], "ema": []}
    )
    assert [a.labels["arm"] for a in only] == ["condition: features", "condition: mask"]
    # without overrides, the reference arm is the default study's training: shared, not trained again
    shared = {train_id(a.cfg) for a in ex.arms_of("condition_and_training", "smoke")}
    assert train_id(only[0].cfg) in shared


def test_the_finding_2_design_follows_its_levels() -> None:
    arms = ex.arms_of("noise_object_and_type", "smoke", levels={"kernel": ["mask_replace"]})
    got = [(a.labels["noise_object"], a.labels["kernel"]) for a in arms]
    assert got == [("gt", "uniform"), ("base", "uniform"), ("first", "uniform"), ("first", "mask_replace")]
    with pytest.raises(ConfigError, match=r"between 1 and T = 10"):
        ex.arms_of("inference_scheme", "smoke", levels={"num_evals": [3, 40]})


def test_an_ablations_rows_share_the_store_but_not_the_default_table(tmp_path) -> None:
    store = ResultsStore(tmp_path / "smoke")
    row = {
        "method": "base",
        "step": 0,
        "t": 0,
        "test": "ss",
        "metric": "mIoU",
        "class_name": "",
        "value": 0.5,
    }
    store.write_rows("default-run", [row], {"experiment": "schedule_and_T", "num_steps": 10})
    before = store.consolidate()
    store.write_rows(
        "ablation-run", [row], {"experiment": "schedule_and_T", "num_steps": 5, "ablation": "abcd1234"}
    )
    assert store.load().equals(before) and "ablation" not in store.load().columns
    assert store.consolidate().equals(pd.read_parquet(tmp_path / "smoke" / "results.parquet"))
    assert list(store.load_ablation("abcd1234")["num_steps"]) == [5]
    assert len(store.load(["default-run", "ablation-run"])) == 2  # named runs come back whatever they are


def test_relative_paths_resolve_against_the_project_root(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(ROOT_ENV, raising=False)
    monkeypatch.chdir(ROOT / "notebooks")
    assert project_root() == ROOT and resolve("results") == ROOT / "results"
    assert resolve(tmp_path / "x") == tmp_path / "x"
    monkeypatch.chdir(tmp_path)  # outside any checkout: the working folder, as any program
    assert resolve("results") == tmp_path / "results"
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "elsewhere"))
    assert resolve("results") == tmp_path / "elsewhere" / "results"


def test_papermill_reads_the_jupytext_notebooks() -> None:
    from papermill.iorw import load_notebook_node

    nb = load_notebook_node(str(ROOT / "notebooks" / "05_schedule_and_T.py"))
    assert nb.metadata["kernelspec"]["name"] == "python3"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "levels = {}" in params[0].source and "overrides = []" in params[0].source


def test_a_notebook_in_jupyterlab_names_the_missing_work_and_waits_to_be_asked(tmp_path, monkeypatch) -> None:
    from diffseg.notebook import LAB_SESSION_ENV, TrainingNotRequested, open_experiment

    monkeypatch.setenv("DIFFSEG_DATA", str(tmp_path / "data"))
    monkeypatch.setenv(LAB_SESSION_ENV, "05_schedule_and_T.py")
    with pytest.raises(TrainingNotRequested) as err:
        open_experiment(
            "05_schedule_and_T", "schedule_and_T", "smoke", tmp_path / "results", tmp_path / "reports"
        )
    text = str(err.value)
    assert "6 refiner training(s)" in text and "1 base segmentor(s)" in text and "train = True" in text
    assert err.value._render_traceback_() == [text]
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()  # no work spent


def test_project_files_tell_jupyterlab_to_open_py_notebooks_as_notebooks() -> None:
    import json

    overrides = json.loads((ROOT / ".jupyter" / "labconfig" / "default_setting_overrides.json").read_text())
    viewers = overrides["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]
    assert viewers["python"] == "Jupytext Notebook"
    assert "JUPYTER_CONFIG_PATH" in (ROOT / "Makefile").read_text()
