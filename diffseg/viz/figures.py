"""Figures over the results table: metric against step, bar comparisons, per-class deltas, heat maps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from diffseg.viz.selection import FACTORS, PANEL, natural_order, select
from diffseg.viz.tables import paired_deltas


def _panels(d: pd.DataFrame, panel: Sequence[str] = PANEL) -> list[tuple[str, pd.DataFrame]]:
    keys = [c for c in panel if c in d.columns]
    if not keys or d.empty:
        return [("", d)]
    return [
        (" / ".join(map(str, k if isinstance(k, tuple) else (k,))), g) for k, g in d.groupby(keys, sort=True)
    ]


def _grid(n: int, width: float = 4.2, height: float = 3.2, ncols: int = 3) -> tuple[Figure, list[Any]]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _no_data(metric: str) -> Figure:
    fig = Figure(figsize=(4, 2))
    ax = fig.subplots()
    ax.text(0.5, 0.5, f"no {metric} rows to plot", ha="center", va="center")
    ax.set_axis_off()
    return fig


def step_curves(
    df: pd.DataFrame,
    metric: str = "mIoU",
    hue: str = "sampler",
    style: str | None = None,
    test: str | None = "ss",
) -> Figure:
    """``metric`` (percent) versus inference step, one line per ``hue`` level with a ±1 std band over seeds.

    One panel per (dataset, segmentor); the base segmentor is the dashed horizontal line.
    """
    d = select(df, metric, None, test)
    if d.empty:
        return _no_data(metric)
    d = d.assign(pct=d["value"] * 100.0)
    panels = _panels(d)
    fig, axes = _grid(len(panels))
    for ax, (name, g) in zip(axes, panels):
        ref = g[g["method"] == "refined"]
        if hue not in ref.columns:
            raise ValueError(f"step_curves: hue column {hue!r} is not in the results frame")
        sns.lineplot(
            data=ref, x="step", y="pct", hue=hue, style=style, errorbar="sd", marker="o", ax=ax, legend="auto"
        )
        base = g[g["method"] == "base"]["pct"]
        if len(base):
            ax.axhline(base.mean(), color="black", ls="--", lw=1, label="base")
        ax.set(title=name, xlabel="network evaluations (step)", ylabel=f"{metric} (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    return fig


def bar_compare(
    df: pd.DataFrame,
    x: str = "arm",
    metric: str = "mIoU",
    hue: str | None = "method",
    step: str | int | None = "final",
    test: str | None = "ss",
    reference: pd.DataFrame | None = None,
    panel: Sequence[str] = PANEL,
) -> Figure:
    """Bars of mean ``metric`` (percent) per ``x`` level (and ``hue``), error bars ±1 std over seeds.

    One panel per ``panel`` group (default dataset x segmentor). When ``x`` is an arm column ("arm" or a factor)
    and ``hue`` is "method", the base rows (repeated by every arm's run) become one bar labelled "base".
    ``reference`` (columns of ``panel`` and ``x``, value in percent) is drawn as black crosses labelled
    "published" where its keys match a bar.
    """
    d = select(df, metric, step, test)
    if d.empty:
        return _no_data(metric)
    if x not in d.columns:
        raise ValueError(f"bar_compare: x column {x!r} is not in the results frame")
    if x in ("arm", *FACTORS) and hue == "method":
        # every arm's run repeats the base rows; show them once as their own bar
        d = d.assign(**{x: np.where(d["method"] == "base", "base", d[x].astype(str))})
        hue = None
    d = d.assign(pct=d["value"] * 100.0)
    panels = _panels(d, panel)
    fig, axes = _grid(len(panels), width=max(4.2, 0.7 * d[x].nunique() + 2))
    for ax, (name, g) in zip(axes, panels):
        order = list(dict.fromkeys(g.sort_values(["method", "step"])[x]))
        sns.barplot(data=g, x=x, y="pct", hue=hue, order=order, errorbar="sd", ax=ax, capsize=0.1)
        lo = g["pct"].min()
        ax.set_ylim(max(0.0, lo - 0.15 * (g["pct"].max() - lo + 1)), None)
        ax.set(title=name, ylabel=f"{metric} (%)", xlabel="")
        ax.tick_params(axis="x", labelrotation=30)
        if reference is not None and len(reference):
            _draw_reference(ax, reference, g, x, order, panel)
    return fig


def _draw_reference(
    ax: Any, reference: pd.DataFrame, g: pd.DataFrame, name: str, x: str, order: list
) -> None:
    ref = reference
    for k in PANEL:
        if k in ref.columns and k in g.columns:
            ref = ref[ref[k] == g[k].iloc[0]]
    if x not in ref.columns:
        return
    pts = [(order.index(v), val) for v, val in zip(ref[x], ref["value"]) if v in order]
    if pts:
        xs, ys = zip(*pts)
        ax.scatter(xs, ys, marker="x", color="black", zorder=5, label="published")
        ax.legend(fontsize=7)


def per_class_delta(
    df: pd.DataFrame, step: str | int | None = "final", test: str | None = "ss", top: int = 30
) -> Figure:
    """Per-class IoU change (refined minus base, percent points, mean over seeds), sorted; one panel per model.

    With more than ``top`` classes only the ``top // 2`` largest gains and losses are drawn.
    """
    p = paired_deltas(df, "IoU", step, test)
    if p.empty:
        return _no_data("per-class IoU")
    panels = _panels(p)
    n_cls = p["class_name"].nunique()
    fig, axes = _grid(len(panels), width=5.0, height=max(3.0, 0.22 * min(n_cls, top) + 1), ncols=2)
    for ax, (name, g) in zip(axes, panels):
        m = g.groupby("class_name")["delta"].mean().sort_values()
        if len(m) > top:
            m = pd.concat([m.iloc[: top // 2], m.iloc[-(top // 2) :]])
        colors = ["#2a9d3c" if v >= 0 else "#d62828" for v in m.to_numpy()]
        ax.barh(range(len(m)), m.to_numpy(), color=colors)
        ax.set_yticks(range(len(m)), m.index, fontsize=7)
        ax.axvline(0, color="black", lw=0.8)
        ax.set(title=name, xlabel="IoU change, refined minus base (points)")
    return fig


def delta_heatmap(stats: pd.DataFrame, index: str, columns: str, value: str = "delta_mean") -> Figure:
    """Annotated heatmap (centred at 0) of ``value`` from a `delta_table` ``stats`` frame, one panel per model."""
    if stats.empty:
        return _no_data(value)
    for c in (index, columns, value):
        if c not in stats.columns:
            raise ValueError(f"delta_heatmap: column {c!r} is not in the stats frame ({list(stats.columns)})")
    panels = _panels(stats)
    fig, axes = _grid(len(panels), width=4.8, height=3.6, ncols=2)
    lim = float(np.nanmax(np.abs(stats[value].astype(float)))) or 1.0
    for ax, (name, g) in zip(axes, panels):
        grid = g.pivot_table(index=index, columns=columns, values=value, aggfunc="mean")
        grid = grid.reindex(index=natural_order(grid.index), columns=natural_order(grid.columns))
        sns.heatmap(
            grid, annot=True, fmt="+.2f", cmap="RdBu", center=0, vmin=-lim, vmax=lim, ax=ax, cbar=True
        )
        ax.set(title=f"{name}\nrefined minus base mIoU (points)")
    return fig
