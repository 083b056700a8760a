"""Tables, figures and computed prose over the results store (the notebooks are thin views over these helpers).

Everything here reads the long-format results DataFrame of ``diffseg.results`` (one row per run, method, step,
metric and class; ``value`` a fraction in [0, 1]) or the numpy artifacts of ``experiments.load_artifacts``.
Tables report percent points. Figures are built on ``matplotlib.figure.Figure`` directly, never through pyplot,
so library code keeps no global figure state: nothing leaks between calls and nothing is shown twice in a
notebook (the notebook calls ``show_figure``, from `diffseg.publish`, which saves and displays it). Prose is computed from numbers (``describe_delta``, ``verdict``)
so that a notebook can never claim what its data do not show.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from diffseg.publish import save_figure, save_table, show_figure  # noqa: F401  (re-exported for the notebooks)

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

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (scipy is not a dependency).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip

# Categories of the error map in `comparison_grid`, with their colours.
_ERROR_COLORS = np.array(
    [
        [0, 0, 0],  # correct in both (or outside the boundary band)
        [150, 150, 150],  # wrong in base and refined
        [40, 180, 60],  # fixed by the refinement
        [220, 40, 40],  # introduced by the refinement
    ],
    dtype=np.uint8,
)
_MASK_TOKEN_COLOR = np.array([128, 128, 128], dtype=np.uint8)


# --------------------------------------------------------------------------------------------------------------
# masks and colours


def colorize(mask: Any, palette: Any, ignore_index: int = 255) -> np.ndarray:
    """Class-index map to RGB.

    mask: (H, W) integer class indices (numpy or torch); palette: (K, 3) uint8.
    Returns (H, W, 3) uint8; ``ignore_index`` pixels are black. Any other value outside [0, K) raises ValueError.
    """
    mask = np.asarray(mask)
    palette = np.asarray(palette, dtype=np.uint8)
    if mask.ndim != 2:
        raise ValueError(f"colorize: mask must be (H, W), got shape {mask.shape}")
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"colorize: palette must be (K, 3) uint8, got shape {palette.shape}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"colorize: mask must hold integer class indices, got dtype {mask.dtype}")
    mask = mask.astype(np.int64)
    ignore = mask == ignore_index
    bad = (~ignore) & ((mask < 0) | (mask >= len(palette)))
    if bad.any():
        raise ValueError(
            f"colorize: mask value {int(mask[bad][0])} is outside the palette's {len(palette)} classes "
            f"and is not the ignore index {ignore_index}"
        )
    out = palette[np.where(ignore, 0, mask)]
    out[ignore] = 0
    return out


def overlay(image: Any, mask: Any, palette: Any, alpha: float = 0.5, ignore_index: int = 255) -> np.ndarray:
    """Blend a colourised mask over an image; ignore pixels show the image unchanged.

    image: (H, W, 3) uint8, or float in [0, 1] as (H, W, 3) or (3, H, W); mask: (H, W) int.
    Returns (H, W, 3) uint8.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay: alpha must be in [0, 1], got {alpha}")
    img = _to_uint8_image(image)
    mask = np.asarray(mask)
    if img.shape[:2] != mask.shape:
        raise ValueError(f"overlay: image {img.shape[:2]} and mask {mask.shape} differ in size")
    color = colorize(mask, palette, ignore_index).astype(np.float32)
    blend = (1.0 - alpha) * img.astype(np.float32) + alpha * color
    keep = (mask == ignore_index)[..., None]
    return np.where(keep, img, np.clip(blend + 0.5, 0, 255)).astype(np.uint8)


def _to_uint8_image(image: Any) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.transpose(1, 2, 0)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3) or (3, H, W), got shape {img.shape}")
    if img.dtype != np.uint8:
        img = np.clip(img.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return img


def boundary_band(mask: Any, width: int = 1, ignore_index: int = 255) -> np.ndarray:
    """Pixels within ``width`` pixels (chessboard distance) of a pixel of another label or of the image border.

    mask: (H, W) int. Returns (H, W) bool. This is the union over classes of the release's boundary (paper.md,
    mBIoU: ``width`` 3x3 erosions, the outside of the image counting as another class, ignore pixels "not c" for
    every class and never boundary themselves), i.e. what ``diffseg.metrics.boundary_map(...) >= 0`` marks;
    computed in numpy so that pictures need no torch.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"boundary_band: mask must be (H, W), got shape {mask.shape}")
    if width < 1:
        raise ValueError(f"boundary_band: width must be >= 1, got {width}")
    k = 2 * width + 1
    # a pixel is boundary iff its window holds another label: window max != window min (separable, O(k) a pixel)
    padded = np.pad(mask.astype(np.int64), width, mode="constant", constant_values=-1)
    win = np.lib.stride_tricks.sliding_window_view
    hi = win(win(padded, k, axis=1).max(-1), k, axis=0).max(-1)
    lo = win(win(padded, k, axis=1).min(-1), k, axis=0).min(-1)
    return (hi != lo) & (mask != ignore_index)


def release_boundary_width(height: int, width: int, ratio: float = 0.02) -> int:
    """The release's boundary depth: ``max(1, round(ratio * image diagonal))`` (as ``diffseg.metrics``)."""
    return max(1, int(round(ratio * math.hypot(height, width))))


def error_map(
    gt: Any, base: Any, refined: Any, ignore_index: int = 255, boundary_width: int | str | None = "release"
) -> np.ndarray:
    """Per-pixel comparison of two predictions against GT.

    gt, base, refined: (H, W) int. Returns (H, W) uint8 categories: 0 correct in both (or ignore, or outside the
    GT boundary band), 1 wrong in both, 2 fixed by the refinement (wrong in base, right in refined), 3 introduced
    by the refinement. ``boundary_width``: "release" (2% of the diagonal, as mBIoU), an int, or None (all pixels).
    """
    gt, base, refined = (np.asarray(a) for a in (gt, base, refined))
    if not gt.shape == base.shape == refined.shape:
        raise ValueError(f"error_map: gt {gt.shape}, base {base.shape}, refined {refined.shape} differ")
    valid = gt != ignore_index
    if boundary_width == "release":
        boundary_width = release_boundary_width(*gt.shape)
    if boundary_width is not None:
        valid &= boundary_band(gt, int(boundary_width), ignore_index)
    wb, wr = (base != gt) & valid, (refined != gt) & valid
    out = np.zeros(gt.shape, dtype=np.uint8)
    out[wb & wr] = 1
    out[wb & ~wr] = 2
    out[~wb & wr] = 3
    return out


# --------------------------------------------------------------------------------------------------------------
# selecting rows


def _check_frame(df: pd.DataFrame) -> None:
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
    _check_frame(df)
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


# --------------------------------------------------------------------------------------------------------------
# tables


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
        out = out[_natural(out.columns)]
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


def main_effect_ranges(
    df: pd.DataFrame,
    factors: Sequence[str],
    metric: str = "mIoU",
    step: str | int | None = "final",
    test: str | None = "ss",
) -> pd.DataFrame:
    """Per (dataset, segmentor, seed): the range (max minus min, percent points) of each factor's main effect.

    The main effect of a factor is the refined metric averaged over the other factors, per level; its range says
    how much choosing that factor's level moves the result. Columns: panel keys, seed, one column per factor.
    """
    d = select(df, metric, step, test)
    d = d[d["method"] == "refined"].assign(pct=lambda x: x["value"] * 100.0)
    group = [c for c in PANEL if c in d.columns]
    out = []
    for f in factors:
        if f not in d.columns:
            raise ValueError(f"main_effect_ranges: factor {f!r} is not in the results frame")
        eff = d.groupby([*group, "seed", f], dropna=False)["pct"].mean()
        out.append(eff.groupby([*group, "seed"], dropna=False).agg(lambda s: s.max() - s.min()).rename(f))
    return pd.concat(out, axis=1).reset_index()


def provenance_table(df: pd.DataFrame, index: Sequence[str] = ("dataset", "segmentor")) -> pd.DataFrame:
    """Parameter counts (millions), seeds, devices and commits per group: where the numbers came from."""
    index = _as_list(index)
    _check_frame(df)
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


# --------------------------------------------------------------------------------------------------------------
# prose


def t_quantile_975(dof: int) -> float:
    """Two-sided 95% critical value of Student's t with ``dof`` degrees of freedom (1.96 beyond 30)."""
    if dof < 1:
        raise ValueError(f"t_quantile_975: degrees of freedom must be >= 1, got {dof}")
    return _T975[dof - 1] if dof <= len(_T975) else 1.96


def verdict(delta_mean: float, delta_std: float, n: int, expect: str = "increase") -> str:
    """Whether a paired difference supports an expected direction: "supports", "contradicts" or "inconclusive".

    Rule (a one-sample t test at the two-sided 5% level, without scipy): with n >= 2 paired seeds the
    difference is significant when |mean| > t_{0.975, n-1} * std / sqrt(n) (t = 4.30 for 3 seeds, 12.71 for 2;
    a zero std counts as significant for a non-zero mean). A significant difference in the ``expect``ed
    direction ("increase" or "decrease") supports the claim, in the other direction contradicts it; anything
    else, including n < 2 (no spread estimate), is inconclusive.
    """
    if expect not in ("increase", "decrease"):
        raise ValueError(f"verdict: expect must be 'increase' or 'decrease', got {expect!r}")
    n = int(n)
    if n < 2 or not np.isfinite(delta_mean) or not np.isfinite(delta_std) or delta_mean == 0:
        return "inconclusive"
    if abs(delta_mean) <= t_quantile_975(n - 1) * delta_std / math.sqrt(n):
        return "inconclusive"
    up = delta_mean > 0
    return "supports" if up == (expect == "increase") else "contradicts"


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def describe_stats(
    mean: float, std: float, n: int, metric: str = "mIoU", label: str = "refined minus base"
) -> str:
    """``"refined minus base: +1.23 mIoU (mean over 3 seeds, std 0.40)"`` from summary numbers (percent)."""
    if not np.isfinite(mean):
        return f"{label}: no paired {metric} values"
    if n < 2 or not np.isfinite(std):
        return f"{label}: {mean:+.2f} {metric} ({_seeds(n)}, no spread estimate)"
    return f"{label}: {mean:+.2f} {metric} (mean over {_seeds(n)}, std {std:.2f})"


def describe_delta(
    refined: Sequence[float], base: Sequence[float], metric: str = "mIoU", label: str = "refined minus base"
) -> str:
    """Describe the paired per-seed difference ``refined - base`` (both sequences in percent points, seed-aligned).

    Example: "refined minus base: +1.23 mIoU (mean over 3 seeds, std 0.40)".
    """
    r, b = np.asarray(refined, dtype=float), np.asarray(base, dtype=float)
    if r.shape != b.shape or r.ndim != 1 or r.size == 0:
        raise ValueError(
            f"describe_delta: expected two equal-length 1-D sequences, got {r.shape} and {b.shape}"
        )
    d = r - b
    std = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    return describe_stats(float(d.mean()), std, int(d.size), metric, label)


def verdict_of(refined: Sequence[float], base: Sequence[float], expect: str = "increase") -> str:
    """`verdict` of the paired per-seed difference ``refined - base``."""
    d = np.asarray(refined, dtype=float) - np.asarray(base, dtype=float)
    std = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    return verdict(float(d.mean()) if d.size else float("nan"), std, int(d.size), expect)


def describe_table(
    stats: pd.DataFrame,
    keys: Sequence[str],
    metric: str = "mIoU",
    expect: str = "increase",
    claim: str = "refinement improves on the base segmentor",
) -> str:
    """Markdown bullets, one per row of a `delta_table` ``stats`` frame, each with its `verdict`, and a tally.

    Rows whose verdict is "contradicts" are named in the tally, so a result against ``claim`` is said plainly.
    """
    if stats.empty:
        return f"No paired {metric} rows: nothing to say about whether {claim}."
    lines, tally = [], {"supports": [], "contradicts": [], "inconclusive": []}
    for _, row in stats.iterrows():
        name = " / ".join(str(row[k]) for k in keys)
        v = verdict(row["delta_mean"], row["delta_std"], int(row["n"]), expect)
        tally[v].append(name)
        lines.append(
            f"- **{name}**: {describe_stats(row['delta_mean'], row['delta_std'], int(row['n']), metric)} "
            f"-> *{v}*"
        )
    total = len(stats)
    summary = (
        f"Claim: {claim}. Of {total} setting(s), {len(tally['supports'])} support it, "
        f"{len(tally['contradicts'])} contradict it and {len(tally['inconclusive'])} are inconclusive "
        "(rule: `viz.verdict`, a paired t test at the 5% level over seeds)."
    )
    if tally["contradicts"]:
        summary += f" **The claim is contradicted in: {', '.join(tally['contradicts'])}.**"
    elif not tally["supports"]:
        summary += " **These runs do not show the claim.**"
    return "\n".join(lines) + "\n\n" + summary


def experiment_intro(title: str, finding: str, description: str, profile_notes: str) -> str:
    """The markdown that opens an experiment notebook: title, the finding it tests, the profile's trade-offs."""
    parts = [f"## {title}"]
    if description:
        parts.append(description)
    parts.append(
        f"**Finding tested:** {finding}" if finding else "*This experiment tests no finding of the paper.*"
    )
    parts.append(profile_notes)
    return "\n\n".join(parts)


# --------------------------------------------------------------------------------------------------------------
# figures over results


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


def _natural(labels: Any) -> list[Any]:
    """Labels in natural order: numbers (also numeric strings such as T = "20", "100") by value, then the rest."""

    def key(v: Any) -> tuple[int, float, str]:
        try:
            return (0, float(v), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(v))

    return sorted(labels, key=key)


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
        grid = grid.reindex(index=_natural(grid.index), columns=_natural(grid.columns))
        sns.heatmap(
            grid, annot=True, fmt="+.2f", cmap="RdBu", center=0, vmin=-lim, vmax=lim, ax=ax, cbar=True
        )
        ax.set(title=f"{name}\nrefined minus base mIoU (points)")
    return fig


# --------------------------------------------------------------------------------------------------------------
# figures over artifacts


def _artifact(artifacts: Mapping[str, Any], key: str) -> np.ndarray:
    if key not in artifacts:
        raise ValueError(f"artifacts lack {key!r}; they hold {sorted(artifacts)}")
    return np.asarray(artifacts[key])


def _show(ax: Any, rgb: np.ndarray, title: str = "") -> None:
    ax.imshow(rgb, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _colorize_state(x: np.ndarray, palette: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Colourise a noisy state x_t: class indices, the [MASK] token (index K, grey), or a continuous map."""
    if not np.issubdtype(x.dtype, np.integer):
        # the Gaussian arm's state is continuous: show its first channel in grey
        v = x if x.ndim == 2 else x[0]
        v = (v - v.min()) / (np.ptp(v) + 1e-8)
        return np.repeat((v * 255).astype(np.uint8)[..., None], 3, axis=-1)
    return colorize(x, np.concatenate([palette, _MASK_TOKEN_COLOR[None]]), ignore_index)


def comparison_grid(
    artifacts: Mapping[str, Any],
    palette: Any,
    n: int = 4,
    ignore_index: int = 255,
    boundary_width: int | str | None = "release",
    step: int = -1,
) -> Figure:
    """Rows of image / GT / base / refined / boundary errors for the first ``n`` images.

    artifacts: image (N,H,W,3) uint8, gt (N,H,W), base (N,H,W), refined_steps (S,N,H,W); ``step`` picks the
    refined step (default the last). Boundary errors: within the GT boundary band, green = fixed by the
    refinement, red = introduced by it, grey = wrong in both.
    """
    image, gt, base = (_artifact(artifacts, k) for k in ("image", "gt", "base"))
    refined = _artifact(artifacts, "refined_steps")[step]
    palette = np.asarray(palette, dtype=np.uint8)
    n = min(n, len(image))
    if n < 1:
        raise ValueError("comparison_grid: the artifacts hold no images")
    fig = Figure(figsize=(2.2 * 5, 2.0 * n + 0.4), layout="constrained")
    axes = fig.subplots(n, 5, squeeze=False)
    for i in range(n):
        err = error_map(gt[i], base[i], refined[i], ignore_index, boundary_width)
        acc_b = _pixel_acc(base[i], gt[i], ignore_index)
        acc_r = _pixel_acc(refined[i], gt[i], ignore_index)
        _show(axes[i, 0], _to_uint8_image(image[i]), "image" if i == 0 else "")
        _show(axes[i, 1], colorize(gt[i], palette, ignore_index), "ground truth" if i == 0 else "")
        _show(axes[i, 2], colorize(base[i], palette, ignore_index), f"base ({acc_b:.1f}% px)")
        _show(axes[i, 3], colorize(refined[i], palette, ignore_index), f"refined ({acc_r:.1f}% px)")
        _show(axes[i, 4], _ERROR_COLORS[err], "boundary errors" if i == 0 else "")
    fig.legend(
        handles=[
            Patch(color=_ERROR_COLORS[k] / 255.0, label=lbl)
            for k, lbl in ((2, "fixed"), (3, "new"), (1, "both"))
        ],
        loc="outside lower center",
        ncols=3,
        fontsize=8,
    )
    return fig


def _pixel_acc(pred: np.ndarray, gt: np.ndarray, ignore_index: int) -> float:
    valid = gt != ignore_index
    return float((pred[valid] == gt[valid]).mean() * 100.0) if valid.any() else float("nan")


def artifact_summary(artifacts: Mapping[str, Any], ignore_index: int = 255) -> dict[str, float]:
    """Pixel accuracy (percent) of base and final refined on the stored images, and shares of pixels fixed/broken."""
    gt, base = _artifact(artifacts, "gt"), _artifact(artifacts, "base")
    refined = _artifact(artifacts, "refined_steps")[-1]
    valid = gt != ignore_index
    if not valid.any():
        raise ValueError("artifact_summary: every GT pixel is ignore")
    wb, wr = (base != gt) & valid, (refined != gt) & valid
    total = float(valid.sum())
    return {
        "images": int(len(gt)),
        "base_acc": float(100.0 * (1 - wb.sum() / total)),
        "refined_acc": float(100.0 * (1 - wr.sum() / total)),
        "fixed_pct": float(100.0 * (wb & ~wr).sum() / total),
        "broken_pct": float(100.0 * (~wb & wr).sum() / total),
        "changed_pct": float(100.0 * ((base != refined) & valid).sum() / total),
    }


def trajectory_grid(artifacts: Mapping[str, Any], palette: Any, index: int = 0, max_steps: int = 8) -> Figure:
    """The denoising trajectory of image ``index``: noisy input x_t (top) and prediction x0_hat (bottom) per step.

    artifacts: x_t_steps (S,N,h,w), refined_steps (S,N,H,W), t_steps (S,); at most ``max_steps`` evenly spaced
    steps are drawn (always the first and the last). The [MASK] token of absorbing kernels is grey.
    """
    xt = _artifact(artifacts, "x_t_steps")
    x0 = _artifact(artifacts, "refined_steps")
    ts = _artifact(artifacts, "t_steps")
    palette = np.asarray(palette, dtype=np.uint8)
    if not 0 <= index < x0.shape[1]:
        raise ValueError(f"trajectory_grid: index {index} outside the {x0.shape[1]} stored images")
    s = len(x0)
    picks = sorted(set(np.linspace(0, s - 1, min(max_steps, s)).round().astype(int).tolist()))
    fig = Figure(figsize=(1.9 * len(picks), 4.0), layout="constrained")
    axes = fig.subplots(2, len(picks), squeeze=False)
    for j, k in enumerate(picks):
        _show(axes[0, j], _colorize_state(xt[k, index], palette), f"step {k + 1}, t={int(ts[k])}\nx_t")
        _show(axes[1, j], colorize(x0[k, index], palette), "x0_hat")
    return fig


def _downsample_nearest(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """(..., H, W) -> (..., h, w) by picking the pixel at each output cell's centre."""
    H, W = mask.shape[-2:]
    rows = ((np.arange(h) + 0.5) * H / h).astype(int)
    cols = ((np.arange(w) + 0.5) * W / w).astype(int)
    return mask[..., rows[:, None], cols[None, :]]


def prior_table(artifacts: Mapping[str, Any], ignore_index: int = 255) -> pd.DataFrame:
    """Per noise level: share of pixels (percent, GT at 1/4 resolution, ignore excluded) equal to GT before and
    after one-shot denoising by the mask prior (columns level, noised_acc, denoised_acc, gain)."""
    gt = _artifact(artifacts, "prior_gt")
    noised, den = _artifact(artifacts, "prior_noised"), _artifact(artifacts, "prior_denoised")
    levels = _artifact(artifacts, "prior_levels")
    small = _downsample_nearest(gt, *noised.shape[-2:])
    valid = small != ignore_index
    rows = []
    for i, lvl in enumerate(levels):
        a = float((noised[i][valid] == small[valid]).mean() * 100.0)
        b = float((den[i][valid] == small[valid]).mean() * 100.0)
        rows.append(
            {
                "level": lvl.item() if hasattr(lvl, "item") else lvl,
                "noised_acc": a,
                "denoised_acc": b,
                "gain": b - a,
            }
        )
    return pd.DataFrame(rows)


def prior_grid(artifacts: Mapping[str, Any], palette: Any, n: int = 2) -> Figure:
    """Ground truth noised at each level (upper row per image) and its one-shot denoised x0_hat (lower row).

    artifacts: prior_gt (N,H,W), prior_noised / prior_denoised (L,N,h,w), prior_levels (L,).
    """
    gt = _artifact(artifacts, "prior_gt")
    noised, den = _artifact(artifacts, "prior_noised"), _artifact(artifacts, "prior_denoised")
    levels = _artifact(artifacts, "prior_levels")
    palette = np.asarray(palette, dtype=np.uint8)
    n = min(n, gt.shape[0])
    n_lv = len(levels)
    fig = Figure(figsize=(1.9 * (n_lv + 1), 3.8 * n), layout="constrained")
    axes = fig.subplots(2 * n, n_lv + 1, squeeze=False)
    for i in range(n):
        _show(axes[2 * i, 0], colorize(gt[i], palette), "ground truth")
        axes[2 * i + 1, 0].set_axis_off()
        for j in range(n_lv):
            _show(axes[2 * i, j + 1], _colorize_state(noised[j, i], palette), f"noised, level {levels[j]}")
            _show(axes[2 * i + 1, j + 1], colorize(den[j, i], palette), "denoised x0_hat")
    return fig


def prior_samples(artifacts: Mapping[str, Any], palette: Any, n: int = 8) -> Figure:
    """Masks sampled from pure noise with the condition zeroed: what the mask prior alone believes masks look like.

    artifacts: prior_samples (M,h,w).
    """
    samples = _artifact(artifacts, "prior_samples")
    palette = np.asarray(palette, dtype=np.uint8)
    n = min(n, len(samples))
    if n < 1:
        raise ValueError("prior_samples: the artifacts hold no samples")
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(2.2 * ncols, 2.2 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for k, ax in enumerate(axes):
        if k < n:
            _show(ax, colorize(samples[k], palette), f"sample {k + 1}")
        else:
            ax.set_axis_off()
    return fig


# --------------------------------------------------------------------------------------------------------------
# dataset figures


def class_pixel_counts(dataset: Any, max_items: int | None = None, ignore_index: int = 255) -> pd.DataFrame:
    """Pixel count and share (percent) per class over a dataset (items dict(mask (H,W) long)), and how many
    images contain each class. Columns: class_name, pixels, share, images."""
    names = list(getattr(dataset, "class_names", []))
    if not names:
        raise ValueError(f"class_pixel_counts: dataset {type(dataset).__name__} has no class_names")
    k = len(names)
    pixels = np.zeros(k, dtype=np.int64)
    images = np.zeros(k, dtype=np.int64)
    count = len(dataset) if max_items is None else min(max_items, len(dataset))
    for i in range(count):
        m = np.asarray(dataset[i]["mask"]).ravel()
        m = m[m != ignore_index]
        bad = m[(m < 0) | (m >= k)]
        if bad.size:
            raise ValueError(f"class_pixel_counts: item {i} has label {int(bad[0])} outside the {k} classes")
        c = np.bincount(m, minlength=k)
        pixels += c
        images += c > 0
    share = 100.0 * pixels / max(int(pixels.sum()), 1)
    return pd.DataFrame({"class_name": names, "pixels": pixels, "share": share, "images": images})


def class_frequency(dataset: Any, max_items: int | None = None, top: int = 40, title: str = "") -> Figure:
    """Bar chart of class pixel shares (percent), classes in the dataset palette's colours, most frequent first."""
    counts = class_pixel_counts(dataset, max_items).sort_values("share", ascending=False)
    palette = np.asarray(getattr(dataset, "palette", np.full((len(counts), 3), 100)), dtype=np.uint8)
    colors = [palette[i] / 255.0 for i in counts.index]
    counts, colors = counts.iloc[:top], colors[:top]
    fig = Figure(figsize=(max(5.0, 0.28 * len(counts) + 1.5), 3.4), layout="constrained")
    ax = fig.subplots()
    ax.bar(range(len(counts)), counts["share"], color=colors, edgecolor="black", linewidth=0.3)
    ax.set_xticks(range(len(counts)), counts["class_name"], rotation=75, fontsize=7)
    ax.set(ylabel="share of labelled pixels (%)", title=title or "class frequency")
    return fig


def dataset_samples(dataset: Any, n: int = 4, alpha: float = 0.6) -> Figure:
    """The first ``n`` items: image above, mask overlaid in the dataset's palette below."""
    n = min(n, len(dataset))
    if n < 1:
        raise ValueError("dataset_samples: the dataset is empty")
    palette = np.asarray(dataset.palette, dtype=np.uint8)
    fig = Figure(figsize=(2.4 * n, 4.6), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        item = dataset[i]
        img = _to_uint8_image(np.asarray(item["image"]))
        _show(axes[0, i], img, str(item.get("id", i)))
        _show(axes[1, i], overlay(img, np.asarray(item["mask"]), palette, alpha))
    return fig
