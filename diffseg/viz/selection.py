"""Selecting rows of the long-format results table: the arm factors, one factor varied at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

# Arm factor columns an experiment may carry (labels are strings; num_steps / num_evals may be ints where they
# come from provenance rather than an arm label); the order is the display order.
FACTORS: tuple[str, ...] = (
    "noise_object",
    "kernel",
    "sampler",
    "num_evals",
    "schedule",
    "num_steps",
    "condition",
    "training",
    "ema",
)
MEAN_METRICS: tuple[str, ...] = ("mIoU", "mAcc", "aAcc", "mBIoU")
CLASS_METRICS: tuple[str, ...] = ("IoU", "BIoU")
REQUIRED_COLUMNS: tuple[str, ...] = ("run_id", "method", "step", "metric", "class_name", "value", "seed")
# Panels of the figures: one per base model and dataset present in the frame.
PANEL: tuple[str, ...] = ("dataset", "segmentor")


def check_frame(df: pd.DataFrame) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"expected a results DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"results frame lacks column(s) {missing}; it has {list(df.columns)}")


def factors_present(df: pd.DataFrame, varying_only: bool = True) -> list[str]:
    """The arm factor columns of `FACTORS` in ``df`` (only those with more than one value if ``varying_only``)."""
    cols = [c for c in FACTORS if c in df.columns]
    if varying_only:
        cols = [c for c in cols if df[c].nunique(dropna=False) > 1]
    return cols


def select(
    df: pd.DataFrame,
    metric: str | Sequence[str] = "mIoU",
    step: str | int | None = "final",
    test: str | None = None,
) -> pd.DataFrame:
    """Rows of one or more metrics at one step of each refined run (base rows are kept as they are).

    step: "final" (each run's max step), "first" (its min step), an int (that step) or None (all steps).
    test: "ss" / "ms" or None for both. Unknown metric names raise ValueError; a known metric without rows gives
    an empty frame (a smoke profile may not compute every metric).
    """
    check_frame(df)
    metrics = [metric] if isinstance(metric, str) else list(metric)
    unknown = [m for m in metrics if m not in MEAN_METRICS + CLASS_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; expected some of {MEAN_METRICS + CLASS_METRICS}")
    d = df[df["metric"].isin(metrics)]
    if test is not None:
        if "test" not in d.columns:
            raise ValueError("select: test given but the results frame has no 'test' column")
        d = d[d["test"] == test]
    base = d[d["method"] == "base"]
    refined = d[d["method"] == "refined"]
    if step == "final":
        refined = refined[refined["step"] == refined.groupby("run_id")["step"].transform("max")]
    elif step == "first":
        refined = refined[refined["step"] == refined.groupby("run_id")["step"].transform("min")]
    elif isinstance(step, int | np.integer) and not isinstance(step, bool):
        refined = refined[refined["step"] == int(step)]
    elif step is not None:
        raise ValueError(f"step must be 'final', 'first', an int or None, got {step!r}")
    return pd.concat([base, refined]).copy()


def one_factor(df: pd.DataFrame, factor: str, factors: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of a one-factor-at-a-time ablation where every *other* factor sits at its reference level.

    The reference level of a factor is its most frequent value across the arms (for an ablation that varies one
    factor at a time from a default, that is the default). Base rows are kept.
    """
    if factor not in df.columns:
        raise ValueError(f"one_factor: column {factor!r} is not in the results frame ({list(df.columns)})")
    others = [f for f in (factors if factors is not None else factors_present(df)) if f != factor]
    keep = df["method"] == "refined"
    arms = df[keep].drop_duplicates("run_id")
    for f in others:
        if f in df.columns and len(arms):
            ref = arms[f].value_counts().idxmax()
            keep &= df[f] == ref
    return df[keep | (df["method"] == "base")]


def natural_order(labels: Any) -> list[Any]:
    """Labels in natural order: numbers (also numeric strings such as T = "20", "100") by value, then the rest."""

    def key(v: Any) -> tuple[int, float, str]:
        try:
            return (0, float(v), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(v))

    return sorted(labels, key=key)
