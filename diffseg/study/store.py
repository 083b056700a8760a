"""The results store of a profile and the run folders beside it; loading rows, curves and artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from diffseg.paths import resolve
from diffseg.profiles import PROFILES
from diffseg.results import ResultsStore


def open_store(results_dir: str | Path, profile: str) -> ResultsStore:
    """The store of ``profile`` under ``results_dir`` (a relative one is the project's: `diffseg.paths`)."""
    return ResultsStore(resolve(results_dir) / profile)


def runs_folder(results_dir: str | Path, profile: str) -> Path:
    """Run folders (checkpoints; not committed) live beside the results, under runs/<profile>."""
    return resolve(results_dir).resolve().parent / "runs" / profile


def load_results(profile: str = "cpu", results_dir: str | Path = "results") -> pd.DataFrame:
    """Every stored row of a profile."""
    return open_store(results_dir, profile).load()


def load_artifacts(
    run_id: str, results_dir: str | Path = "results", profile: str | None = None
) -> dict[str, np.ndarray]:
    """Arrays stored for a run of the qualitative / mask-prior experiments."""
    for prof in [profile] if profile else list(PROFILES):
        store = open_store(results_dir, prof)
        if store.has_artifacts(run_id):
            return store.load_artifacts(run_id)
    raise FileNotFoundError(f"no artifacts for run {run_id} under {results_dir}; run the experiment first")


def load_curves(profile: str = "cpu", results_dir: str | Path = "results") -> pd.DataFrame:
    """Every learning-curve row of a profile (see `_store_curves`), joined to nothing; empty if none."""
    df = load_results(profile, results_dir)
    return df[df["experiment"] == "learning_curves"] if "experiment" in df.columns else df.iloc[:0]
