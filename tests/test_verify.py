"""`diffseg verify`: a store's trainings re-made up to their first learning-curve point and compared, on a
smoke-profile store (the `smoke_store` fixture, tests/conftest.py) in a temporary folder."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pandas as pd
import pytest

from diffseg.results import ResultsStore
from diffseg.study.verify_run import verify


def _files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _run(results: Path, data: Path, **kwargs) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:  # the store's own data (configs read it when they are built)
        mp.setenv("DIFFSEG_DATA", str(data))
        status = verify("smoke", results, out=out, err=err, **kwargs)
    return status, out.getvalue(), err.getvalue()


def test_verify_passes_on_an_untouched_store_and_writes_nothing_there(smoke_store):
    runs = smoke_store.parent / "runs"  # the sweep's run folders, with the bases verify may reuse
    before, runs_before = _files(smoke_store), _files(runs)
    status, out, err = _run(smoke_store, smoke_store.parent / "data", workers=1)
    assert status == 0, out + err
    summary = [line for line in out.splitlines() if "points identical" in line]
    n = int(summary[0].split("/")[1].split()[0])
    assert summary[0].startswith(f"{n}/{n} points identical") and n >= 4
    assert "base ade20k/segformer-tiny" in out and "main_results: cityscapes/segformer-tiny seed 0" in out
    assert "[verify 1/" in err
    assert _files(smoke_store) == before and _files(runs) == runs_before and runs_before


def test_verify_fails_on_a_changed_value_naming_the_job_and_the_point(smoke_store, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(smoke_store, results)
    rows = ResultsStore(results / "smoke").load()
    key = rows[(rows["experiment"] == "learning_curves") & (rows["trained"] == "refiner")]["run_id"].iloc[0]
    path = results / "smoke" / "rows" / f"{key}.parquet"
    df = pd.read_parquet(path)
    first = df["step"] == df["step"].min()
    df.loc[first & (df["curve"] == "final_step"), "value"] += 1e-9
    df.to_parquet(path, index=False)
    status, out, _ = _run(results, smoke_store.parent / "data", workers=0)
    assert status == 1
    mismatch = [line for line in out.splitlines() if line.startswith("mismatch:")]
    assert len(mismatch) == 1 and key in mismatch[0]
    assert f"at iteration {int(df['step'].min())} (final_step)" in mismatch[0]
    assert "What differs:" in mismatch[0] and "config changed" not in out
    assert any(line.rstrip().endswith("NO") and "final_step" in line for line in out.splitlines())


def test_a_store_whose_training_config_the_code_no_longer_makes_is_reported_as_such(smoke_store, monkeypatch):
    from diffseg.config import replace
    from diffseg.study import ablation

    original = ablation.profile_config

    def changed(*args, **kwargs):  # the code's default learning rate changed after the store was made
        cfg = original(*args, **kwargs)
        return replace(cfg, optim=replace(cfg.optim, lr=cfg.optim.lr * 2))

    monkeypatch.setattr(ablation, "profile_config", changed)  # where every arm's config starts
    status, out, _ = _run(smoke_store, smoke_store.parent / "data", workers=0)
    assert status == 1
    assert "config changed: main_results" not in out  # the old training has no name in the code any more ...
    assert out.count("config changed: ") >= 4  # ... but every sampled one is named by its store key
    assert "mismatch:" not in out and "0/0 points identical" in out


def test_the_command_re_makes_the_first_n_trainings_of_the_sample(smoke_store, monkeypatch, capsys):
    from diffseg.cli import main

    monkeypatch.setenv("DIFFSEG_DATA", str(smoke_store.parent / "data"))
    args = ["verify", "--profile", "smoke", "--results", str(smoke_store), "--sample", "1", "--workers", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1/1 points identical (1 training(s)" in out and out.splitlines()[0].split()[:2] == [
        "job",
        "point",
    ]
