"""What running a set of arms would cost: the trainings and evaluations the store and the run folders lack.

One code path decides what runs: the sweep's phases and a notebook's "this would train ..." message both come
from `plan_work`. The estimate of the time comes from the store's own job table (`jobs.csv`, written by the
sweep): the median seconds per iteration of each phase, times the iterations planned.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from diffseg.config import ExperimentConfig
from diffseg.study.arms import Arm
from diffseg.study.execution import missing_rows
from diffseg.study.identity import base_run_id, base_weights_path, is_two_stage, stage1_config, train_id
from diffseg.study.jobs import JOBS_FILE
from diffseg.study.store import open_store, runs_folder


@dataclass
class WorkPlan:
    """The missing work of some arms, by phase (each a dict id -> config), and the arms that need it."""

    todo: list[tuple[str, Arm]] = field(default_factory=list)  # (experiment, arm) lacking rows
    refiners: dict[str, ExperimentConfig] = field(default_factory=dict)  # trainings without metrics.json
    bases: dict[str, ExperimentConfig] = field(default_factory=dict)  # base segmentors without weights
    stage1: dict[str, ExperimentConfig] = field(default_factory=dict)  # shared stage-1 trainings

    @property
    def empty(self) -> bool:
        return not self.todo

    @property
    def trainings(self) -> int:
        return len(self.bases) + len(self.stage1) + len(self.refiners)

    def iterations(self) -> dict[str, int]:
        """Iterations to train per phase (keys as the sweep's phase titles)."""
        return {
            "base segmentors": sum(c.segmentor.train_iterations for c in self.bases.values()),
            "stage 1": sum(c.train.stage1_iterations for c in self.stage1.values()),
            "refiners": sum(
                c.train.stage2_iterations
                if is_two_stage(c)
                else c.train.stage1_iterations + c.train.stage2_iterations
                for c in self.refiners.values()
            ),
        }

    def estimate_seconds(self, jobs_csv: Path) -> float | None:
        """Seconds the plan takes in one process, from the medians of ``jobs_csv``; None without timings."""
        rates, evals = _rates(jobs_csv)
        if not rates and evals is None:
            return None
        total = 0.0
        for phase, its in self.iterations().items():
            if its and phase not in rates:
                return None
            total += its * rates.get(phase, 0.0)
        if self.todo and evals is None:
            return None
        return total + len(self.todo) * (evals or 0.0)

    def describe(self, jobs_csv: Path | None = None) -> str:
        """One sentence: counts per phase and the estimate (or why there is none)."""
        parts = [
            f"{n} {what}"
            for n, what in (
                (len(self.bases), "base segmentor(s)"),
                (len(self.stage1), "shared stage-1 training(s)"),
                (len(self.refiners), "refiner training(s)"),
                (len(self.todo), "evaluation(s)"),
            )
            if n
        ]
        seconds = self.estimate_seconds(jobs_csv) if jobs_csv is not None else None
        when = (
            f"about {seconds / 60:.0f} min (from the medians of {jobs_csv.name}, one job at a time on one core)"
            if seconds is not None and seconds >= 90
            else f"about {seconds:.0f} s (medians of {jobs_csv.name})"
            if seconds is not None
            else "no estimate (no job timings recorded for this profile yet)"
        )
        return f"{self.trainings} training(s) to run ({', '.join(parts)}): {when}"


def plan_work(arms: list[tuple[str, Arm]], results_dir: str | Path, profile: str) -> WorkPlan:
    """The work ``arms`` ((experiment, arm) pairs) lack in the store of ``profile`` under ``results_dir``."""
    store = open_store(results_dir, profile)
    runs = runs_folder(results_dir, profile)
    todo = [(n, a) for n, a in arms if missing_rows(a, n, store)]
    refiners = {
        train_id(a.cfg): a.cfg for _, a in todo if not (runs / train_id(a.cfg) / "metrics.json").exists()
    }
    bases = {
        base_run_id(c): c
        for c in refiners.values()
        if c.segmentor.weights is None and c.segmentor.train_iterations
    }
    bases = {k: c for k, c in bases.items() if not base_weights_path(c, runs).exists()}
    stage1 = {train_id(stage1_config(c)): c for c in refiners.values() if is_two_stage(c)}
    stage1 = {k: c for k, c in stage1.items() if not (runs / "stage1" / k / "metrics.json").exists()}
    return WorkPlan(todo, refiners, bases, stage1)


def jobs_table(results_dir: str | Path, profile: str) -> Path:
    return open_store(results_dir, profile).root / JOBS_FILE


def _rates(jobs_csv: Path) -> tuple[dict[str, float], float | None]:
    """Median seconds per iteration of each training phase, and median seconds per evaluation."""
    if not jobs_csv.is_file():
        return {}, None
    per_it: dict[str, list[float]] = {}
    evals: list[float] = []
    with jobs_csv.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                seconds = float(row["seconds"])
            except (KeyError, ValueError):
                continue
            if row.get("phase") == "evaluations":
                evals.append(seconds)
            elif row.get("iterations"):
                per_it.setdefault(row["phase"], []).append(seconds / max(1, int(float(row["iterations"]))))

    def median(xs: list[float]) -> float:
        xs = sorted(xs)
        return xs[len(xs) // 2]

    return {k: median(v) for k, v in per_it.items()}, (median(evals) if evals else None)


__all__ = ["WorkPlan", "jobs_table", "plan_work"]
