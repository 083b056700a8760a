"""The results store: one row per (run, method, step, metric[, class]) with provenance; parquet + CSV mirror.

Layout under ``root`` (e.g. ``results/cpu``)::

    rows/<run_id>.parquet     the rows of one evaluated run, written whole to a temp file and renamed, so an
                              interrupted run leaves no partial rows and parallel notebooks never collide
    artifacts/<run_id>.npz    arrays for the figure notebooks (predictions per step, trajectories, prior samples)
    results.parquet, results.csv   the consolidated table (``consolidate``), rebuilt from rows/
    machines.csv              the machines that made the rows (each row's ``machine`` id; `diffseg.machines`)

Nothing downstream of this store reads checkpoints: notebooks read rows and artifacts only.
"""

from __future__ import annotations

import json
import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from diffseg import machines
from diffseg.atomic import atomic_write

COLUMNS = (
    "run_id",
    "experiment",
    "arm",
    "dataset",
    "segmentor",
    "seed",
    "method",
    "step",
    "t",
    "test",
    "metric",
    "class_name",
    "value",
)
MEAN_METRICS = ("mIoU", "mAcc", "aAcc", "mBIoU")
# the column that marks an ablation's rows (`diffseg.study.ablation`); the default study's rows lack it
ABLATION = "ablation"
CLASS_METRICS = {"IoU": "IoU", "BIoU": "BIoU"}


# What the study writes itself: changes there do not make the code that produced a result "dirty" (the results
# store is committed, so without this every row after the first of a clean-checkout sweep would say "+dirty").
STUDY_OUTPUTS: tuple[str, ...] = ("results", "reports", "build")


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the code (with '+dirty' when tracked files outside `STUDY_OUTPUTS` changed), or 'unknown'.

    Computed once per process, so every row of one run of the study carries the same provenance.
    """
    try:
        root = Path(__file__).resolve().parents[1]
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                *(f":(exclude){p}" for p in STUDY_OUTPUTS),
            ],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@lru_cache(maxsize=1)
def package_versions() -> str:
    import ignite
    import torch
    import transformers

    return json.dumps(
        {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "ignite": ignite.__version__,
            "transformers": transformers.__version__,
        }
    )


def metrics_to_rows(
    metrics: dict[str, Any],
    class_names: tuple[str, ...] | list[str],
    test: str = "ss",
    last_only: bool = False,
) -> list[dict[str, Any]]:
    """Turn the evaluator's {"base", "refined", "t"} into long rows (values are fractions in [0, 1])."""
    rows: list[dict[str, Any]] = []

    def add(method: str, step: int, t: int, m: dict[str, Any]) -> None:
        for name in MEAN_METRICS:
            rows.append(
                {
                    "method": method,
                    "step": step,
                    "t": t,
                    "test": test,
                    "metric": name,
                    "class_name": "",
                    "value": float(m[name]),
                }
            )
        for name in CLASS_METRICS:
            for cls, v in zip(class_names, m.get(name, [])):
                if v is not None and not np.isnan(v):
                    rows.append(
                        {
                            "method": method,
                            "step": step,
                            "t": t,
                            "test": test,
                            "metric": name,
                            "class_name": cls,
                            "value": float(v),
                        }
                    )

    add("base", 0, 0, metrics["base"])
    steps = list(zip(metrics.get("t", []), metrics.get("refined", [])))
    n = len(steps)
    for i, (t, m) in enumerate(steps, start=1):
        if last_only and i != n:
            continue
        add("refined", i, int(t), m)
    return rows


def _ablation_of(frame: pd.DataFrame) -> str:
    """The ablation id of one run's rows ("" for the default study's)."""
    if ABLATION not in frame.columns or frame.empty:
        return ""
    value = frame[ABLATION].iloc[0]
    return "" if pd.isna(value) else str(value)


class ResultsStore:
    """Rows and artifacts of evaluated runs under one folder (one per profile)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def rows_dir(self) -> Path:
        return self.root / "rows"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    def has(self, run_id: str) -> bool:
        return (self.rows_dir / f"{run_id}.parquet").exists()

    def write_rows(self, run_id: str, rows: list[dict[str, Any]], provenance: dict[str, Any]) -> Path:
        """Write one run's rows atomically (all or nothing), each carrying the run's provenance and the id of the
        machine that made them (this process's, added to ``machines.csv``, unless ``provenance`` names one)."""
        if not rows:
            raise ValueError(f"run {run_id} produced no result rows")
        df = pd.DataFrame(rows)
        for key, value in provenance.items():
            df[key] = value
        df["run_id"] = run_id
        df["git_commit"] = provenance.get("git_commit", git_commit())
        df["versions"] = provenance.get("versions", package_versions())
        df["machine"] = provenance.get("machine") or machines.register(self.root)
        self.rows_dir.mkdir(parents=True, exist_ok=True)
        return atomic_write(self.rows_dir / f"{run_id}.parquet", lambda tmp: df.to_parquet(tmp, index=False))

    def load(self, run_ids: list[str] | None = None) -> pd.DataFrame:
        """The default study's rows (or exactly those of ``run_ids``) as one DataFrame.

        Rows of an ablation (a non-empty ``ablation`` column, `diffseg.study.ablation`) share the folder but are
        not the default study's: they come back only when named by ``run_ids`` (or with `load_ablation`). The
        filter drops whole files (a file holds one run's rows), so the default study's table is exactly what
        it was before any ablation ran."""
        if run_ids is None:
            return self._concat([f for f in self._frames(None) if not _ablation_of(f)])
        return self._concat(self._frames(run_ids))

    def load_ablation(self, ablation: str) -> pd.DataFrame:
        """Every row of the ablation with id ``ablation``."""
        return self._concat([f for f in self._frames(None) if _ablation_of(f) == ablation])

    def _frames(self, run_ids: list[str] | None) -> list[pd.DataFrame]:
        if not self.rows_dir.exists():
            return []
        if run_ids is None:
            paths = sorted(self.rows_dir.glob("*.parquet"))
        else:
            paths = [
                self.rows_dir / f"{r}.parquet" for r in run_ids if (self.rows_dir / f"{r}.parquet").exists()
            ]
        return [pd.read_parquet(f) for f in paths]

    @staticmethod
    def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
        if not frames:
            return pd.DataFrame(columns=list(COLUMNS))
        # rows written before the machines table existed read as machine "unrecorded" (`diffseg.machines`)
        return machines.with_machine(pd.concat(frames, ignore_index=True))

    def consolidate(self) -> pd.DataFrame:
        """Rebuild results.parquet and its CSV mirror from rows/ (atomically).

        Left untouched when nothing changed, so `make` does not re-render the notebooks of an unchanged study.
        """
        df = self.load()
        self.root.mkdir(parents=True, exist_ok=True)
        current = self.root / "results.parquet"
        if current.exists() and (self.root / "results.csv").exists():
            try:
                if pd.read_parquet(current).equals(df):
                    return df
            except (OSError, ValueError):
                pass  # unreadable: rewrite it
        for name, writer in (
            ("results.parquet", lambda p: df.to_parquet(p, index=False)),
            ("results.csv", lambda p: df.to_csv(p, index=False)),
        ):
            atomic_write(self.root / name, writer)
        return df

    def save_artifacts(self, run_id: str, arrays: dict[str, np.ndarray]) -> Path:
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        # the temporary name ends in .npz: numpy appends it otherwise
        return atomic_write(
            self.artifacts_dir / f"{run_id}.npz",
            lambda tmp: np.savez_compressed(tmp, **arrays),
            suffix=".npz",
        )

    def has_artifacts(self, run_id: str) -> bool:
        return (self.artifacts_dir / f"{run_id}.npz").exists()

    def load_artifacts(self, run_id: str) -> dict[str, np.ndarray]:
        path = self.artifacts_dir / f"{run_id}.npz"
        if not path.exists():
            raise FileNotFoundError(
                f"no artifacts for run {run_id} under {self.artifacts_dir}; run the experiment"
            )
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
