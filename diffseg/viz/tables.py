"""Tables over the results store (percent points): summaries over seeds, paired deltas against the base,
level comparisons, effect ranges, provenance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from diffseg.viz.selection import FACTORS, PANEL, check_frame, natural_order, select


class Summary(NamedTuple):
    """A summary table in two forms: ``text`` ("mean ± std" strings, pivoted) and ``stats`` (numbers, long)."""

    text: pd.DataFrame
    stats: pd.DataFrame


def _fmt(mean: float, std: float, n: int, signed: bool = False) -> str:
    if not np.isfinite(mean):
        return ""
    m = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return m if n < 2 or not np.isfinite(std) else f"{m} ± {std:.2f}"


def _per_seed(d: pd.DataFrame, keys: list[str], what: str) -> pd.DataFrame:
    """One value per (keys, seed); raises naming the columns that still vary when that is ambiguous."""
    gid = d.groupby([*keys, "seed"], dropna=False).ngroup()
    sizes = gid.map(gid.value_counts())
    if (sizes > 1).any():
        grp = d[gid == gid[sizes > 1].iloc[0]]
        where = {k: grp[k].iloc[0] for k in [*keys, "seed"]}
        varying = [
            c for c in ("test", "arm", *FACTORS, "run_id") if c in grp.columns and grp[c].nunique() > 1
        ]
        raise ValueError(
            f"{what}: {len(grp)} rows for one seed of {where}; they differ in {varying}: "
            "add one of these to index/columns or filter the frame first"
        )
    return d


def _as_list(x: str | Sequence[str] | None) -> list[str]:
    return [] if x is None else [x] if isinstance(x, str) else list(x)


def summary_table(
    df: pd.DataFrame,
    index: Sequence[str] = ("dataset", "segmentor"),
    columns: Sequence[str] = ("method",),
    metric: str | Sequence[str] = "mIoU",
    step: str | int | None = "final",
    test: str | None = None,
) -> Summary:
    """Mean ± std over seeds, in percent with 2 decimals, of ``metric`` at ``step``.

    Each (index, columns, seed) cell must hold exactly one row (base rows repeated with the same value by several
    runs count once); otherwise ValueError names the columns that still vary (e.g. 'test' or 'arm'). With several metrics, "metric" joins ``columns`` automatically.
    Returns ``Summary(text, stats)``: ``text`` pivoted index x columns of strings ("45.12 ± 0.40"; a single
    seed shows the mean only), ``stats`` a long frame of index + columns + mean, std, n (percent; std with
    ddof=1, NaN for one seed).
    """
    index, columns = _as_list(index), _as_list(columns)
    if not isinstance(metric, str) and "metric" not in index + columns:
        columns = [*columns, "metric"]
    keys = index + columns
    d = select(df, metric, step, test)
    missing = [k for k in keys if k not in d.columns]
    if missing:
        raise ValueError(f"summary_table: column(s) {missing} not in the results frame")
    if d.empty:
        return Summary(pd.DataFrame(), pd.DataFrame(columns=[*keys, "mean", "std", "n"]))
    # every arm's run repeats the shared base segmentor's rows: identical base values count once
    is_base = d["method"] == "base"
    d = pd.concat([d[is_base].drop_duplicates([*keys, "seed", "value"]), d[~is_base]])
    d = _per_seed(d, keys, "summary_table")
    d = d.assign(pct=d["value"].astype(float) * 100.0)
    stats = d.groupby(keys, dropna=False)["pct"].agg(mean="mean", std="std", n="count").reset_index()
    return Summary(_pivot_text(stats, index, columns, "mean", "std"), stats)


def _pivot_text(
    stats: pd.DataFrame, index: list[str], columns: list[str], mean: str, std: str
) -> pd.DataFrame:
    signed = mean.startswith("delta")
    text = stats.assign(
        cell=[_fmt(m, s, int(n), signed) for m, s, n in zip(stats[mean], stats[std], stats["n"])]
    )
    if not index and not columns:
        return text[["cell"]]
    if not columns:
        return text.set_index(index)[["cell"]].rename(columns={"cell": mean})
    if not index:
        return text.set_index(columns)[["cell"]].T
    out = text.pivot_table(index=index, columns=columns, values="cell", aggfunc="first").fillna("")
    if len(columns) == 1:  # e.g. step or T: 2, 5, 10, 20 rather than 10, 2, 20, 5
        out = out[natural_order(out.columns)]
    return out


_PAIR_KEYS = ("dataset", "segmentor", "seed", "test", "metric", "class_name")


def paired_deltas(
    df: pd.DataFrame,
    metric: str | Sequence[str] = "mIoU",
    step: str | int | None = "final",
    test: str | None = None,
) -> pd.DataFrame:
    """Refined rows with their base value: one row per refined row, with ``base``, ``refined``, ``delta`` in percent.

    A refined row is paired with the base row of the same run (same run_id and pair keys dataset, segmentor,
    seed, test, metric, class_name); when its run has no base rows, with the mean base of the same pair keys from
    any run (the base segmentor is shared by every arm of a seed).
    """
    d = select(df, metric, step, test)
    keys = [k for k in _PAIR_KEYS if k in d.columns]
    base = d[d["method"] == "base"]
    ref = d[d["method"] == "refined"].copy()
    by_run = base.groupby(["run_id", *keys], dropna=False)["value"].mean().rename("_b_run")
    shared = base.groupby(keys, dropna=False)["value"].mean().rename("_b_shared")
    ref = ref.join(by_run, on=["run_id", *keys]).join(shared, on=keys)
    ref["base"] = ref["_b_run"].fillna(ref["_b_shared"]) * 100.0
    ref["refined"] = ref["value"].astype(float) * 100.0
    ref["delta"] = ref["refined"] - ref["base"]
    return ref.drop(columns=["_b_run", "_b_shared"]).dropna(subset=["delta"])


def delta_table(
    df: pd.DataFrame,
    index: Sequence[str] = ("dataset", "segmentor"),
    columns: Sequence[str] = (),
    metric: str | Sequence[str] = "mIoU",
    step: str | int | None = "final",
    test: str | None = None,
) -> Summary:
    """Refined minus base, per seed, then mean ± std over seeds (percent points, signed, 2 decimals).

    Pairing as in `paired_deltas`. ``stats`` holds index + columns + delta_mean, delta_std, n, base_mean,
    refined_mean (all percent); ``text`` the pivoted "+1.23 ± 0.40" strings.
    """
    index, columns = _as_list(index), _as_list(columns)
    if not isinstance(metric, str) and "metric" not in index + columns:
        columns = [*columns, "metric"]
    keys = index + columns
    p = paired_deltas(df, metric, step, test)
    missing = [k for k in keys if k not in p.columns]
    if missing:
        raise ValueError(f"delta_table: column(s) {missing} not in the results frame")
    cols = [*keys, "delta_mean", "delta_std", "n", "base_mean", "refined_mean"]
    if p.empty:
        return Summary(pd.DataFrame(), pd.DataFrame(columns=cols))
    p = _per_seed(p, keys, "delta_table")
    stats = (
        p.groupby(keys, dropna=False)
        .agg(
            delta_mean=("delta", "mean"),
            delta_std=("delta", "std"),
            n=("delta", "count"),
            base_mean=("base", "mean"),
            refined_mean=("refined", "mean"),
        )
        .reset_index()
    )
    return Summary(_pivot_text(stats, index, columns, "delta_mean", "delta_std"), stats)


def compare_levels(
    df: pd.DataFrame,
    column: str,
    a: Any,
    b: Any,
    metric: str = "mIoU",
    step: str | int | None = "final",
    test: str | None = "ss",
    pair_on: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Refined ``metric`` of level ``a`` against level ``b`` of one factor, paired per seed.

    Rows are paired on seed and ``pair_on`` (default: every other factor of `FACTORS` present), and the paired
    values are averaged per seed, so the result has one row per (dataset, segmentor, seed) with columns ``a`` and
    ``b`` (percent). Pass ``pair_on=[]`` to compare levels whose other settings differ (e.g. grids of steps).
    """
    if column not in df.columns:
        raise ValueError(f"compare_levels: column {column!r} is not in the results frame")
    d = select(df, metric, step, test)
    d = d[d["method"] == "refined"]
    if pair_on is None:
        others = [c for c in FACTORS if c in d.columns and c != column]
    else:
        others = [c for c in pair_on if c != column]
    group = [c for c in PANEL if c in d.columns]
    sub_a = d[d[column].astype(str) == str(a)].assign(a=lambda x: x["value"] * 100.0)
    sub_b = d[d[column].astype(str) == str(b)].assign(b=lambda x: x["value"] * 100.0)
    keys = [*group, "seed", *others]
    ma = sub_a.groupby(keys, dropna=False)["a"].mean()
    mb = sub_b.groupby(keys, dropna=False)["b"].mean()
    both = pd.concat([ma, mb], axis=1, join="inner").reset_index()
    return both.groupby([*group, "seed"], dropna=False)[["a", "b"]].mean().reset_index()


def effect_range(d: pd.DataFrame, factor: str, others: Sequence[str], value: str) -> float:
    """Range (max minus min) of ``factor``'s effect on column ``value`` in one seed's rows of a factorial design.

    On a complete grid the effect is the main effect: ``value`` averaged over the other factors, per level. On an
    incomplete grid, such as the synthetic profiles' L-shaped finding 2 (the noise object varied at the uniform
    kernel, the kernel varied at the first prediction), that average would mix in levels the factor was never
    crossed with, so the effect is the simple effect where the other factors sit at the level combination that
    crosses ``factor`` the most (the grid's corner; ties: the first in sort order).
    """
    others = list(others)
    cells = d.groupby([factor, *others], dropna=False)[value].mean().reset_index()
    if not others:
        eff = cells.set_index(factor)[value]
    elif len(cells) == np.prod([cells[c].nunique(dropna=False) for c in (factor, *others)]):
        eff = cells.groupby(factor, dropna=False)[value].mean()
    else:
        crossed = cells.groupby(others, dropna=False).size()
        corner = crossed.idxmax()
        corner = corner if isinstance(corner, tuple) else (corner,)
        eff = cells.merge(pd.DataFrame([corner], columns=others)).set_index(factor)[value]
    return float(eff.max() - eff.min())


def main_effect_ranges(
    df: pd.DataFrame,
    factors: Sequence[str],
    metric: str = "mIoU",
    step: str | int | None = "final",
    test: str | None = "ss",
) -> pd.DataFrame:
    """Per (dataset, segmentor, seed): the range (max minus min, percent points) of each factor's effect.

    The effect of a factor is its main effect on a complete grid and its simple effect at the grid's corner on an
    incomplete one (`effect_range`); its range says how much choosing that factor's level moves the result.
    Columns: panel keys, seed, one column per factor.
    """
    d = select(df, metric, step, test)
    d = d[d["method"] == "refined"].assign(pct=lambda x: x["value"] * 100.0)
    for f in factors:
        if f not in d.columns:
            raise ValueError(f"main_effect_ranges: factor {f!r} is not in the results frame")
    group = [c for c in PANEL if c in d.columns]
    rows = []
    for keys, g in d.groupby([*group, "seed"], dropna=False):
        row = dict(zip([*group, "seed"], keys, strict=True))
        for f in factors:
            row[f] = effect_range(g, f, [o for o in factors if o != f], "pct")
        rows.append(row)
    return pd.DataFrame(rows, columns=[*group, "seed", *factors])


def provenance_table(df: pd.DataFrame, index: Sequence[str] = ("dataset", "segmentor")) -> pd.DataFrame:
    """Parameter counts (millions), seeds, devices and commits per group: where the numbers came from."""
    index = _as_list(index)
    check_frame(df)
    agg: dict[str, Any] = {"seeds": ("seed", "nunique"), "runs": ("run_id", "nunique")}
    if "params_base" in df.columns:
        agg["params_base_M"] = ("params_base", lambda s: round(float(s.max()) / 1e6, 2))
    if "params_refiner" in df.columns:
        agg["params_refiner_M"] = ("params_refiner", lambda s: round(float(s.max()) / 1e6, 2))
    if "wall_time_s" in df.columns:
        agg["wall_time_s"] = ("wall_time_s", lambda s: round(float(s.drop_duplicates().sum()), 1))
    for col in ("device", "git_commit", "profile"):
        if col in df.columns:
            agg[col] = (col, lambda s: ", ".join(sorted(map(str, s.dropna().unique()))))
    return df.groupby(index, dropna=False).agg(**agg)
