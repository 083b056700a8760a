"""Learning curves and budget curves over the results store: is a verdict converged, and when does it settle?

The curves are the rows `diffseg.curves` records while a training runs (``experiment == "learning_curves"``,
``step`` = training iteration, ``curve`` = base | first_step | final_step). Joined to an experiment's rows by
``train_id`` they carry that experiment's arm labels, so:

- `plateau_table` says, per arm, whether its curve has flattened (`diffseg.curves.plateau`, mean over seeds);
- `budget_curve` turns a finding's key contrast into a contrast per training iteration: at every recorded
  iteration the paired per-seed difference, its mean and Student-t 95% interval, exactly as the final verdicts
  are computed (`diffseg.findings`), only earlier in training;
- `settles` says from which iteration on the interval keeps one sign, or that it never does.

All values are percent points. Figures follow `diffseg.viz` (``matplotlib.figure.Figure``, no pyplot).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from diffseg import curves as _curves
from diffseg import viz
from diffseg.config import ExperimentConfig

_LABELS = ("dataset", "segmentor", "seed", "arm", *viz.FACTORS)


def curve_rows(df: pd.DataFrame, trained: str = "refiner") -> pd.DataFrame:
    """The curve rows of ``df`` (all profiles' rows of one store) for refiner or base trainings."""
    if "experiment" not in df.columns or "trained" not in df.columns:
        return df.iloc[:0]
    return df[(df["experiment"] == "learning_curves") & (df["trained"] == trained)]


def arm_curves(df: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """Refiner curves of the trainings of ``experiment``, each row with that experiment's arm labels.

    Columns: the labels in `_LABELS` present, train_id, iteration, stage, curve, value (percent).
    """
    c = curve_rows(df)
    rows = df[(df["experiment"] == experiment) & (df["method"] == "refined")] if len(c) else c
    if c.empty or rows.empty:
        return pd.DataFrame(columns=[*_LABELS, "train_id", "iteration", "stage", "curve", "value"])
    labels = [k for k in _LABELS if k in rows.columns]
    arms = rows.drop_duplicates("train_id")[["train_id", *labels]]
    out = c[["train_id", "step", "stage", "curve", "value"]].merge(arms, on="train_id")
    out = out.rename(columns={"step": "iteration"})
    out["value"] = out["value"].astype(float) * 100.0
    return out.sort_values(["train_id", "iteration", "curve"]).reset_index(drop=True)


def base_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Curves of the base segmentors' own trainings: dataset, segmentor, iteration, value (percent)."""
    c = curve_rows(df, "base")
    if c.empty:
        return pd.DataFrame(columns=["dataset", "segmentor", "iteration", "value"])
    out = c[["dataset", "segmentor", "step", "value"]].rename(columns={"step": "iteration"})
    out = out.assign(value=out["value"].astype(float) * 100.0).drop_duplicates(
        ["dataset", "segmentor", "iteration"]
    )
    return out.sort_values(["dataset", "segmentor", "iteration"]).reset_index(drop=True)


def plateau_table(
    curves: pd.DataFrame, keys: list[str], curve: str = "final_step", tol: float = _curves.PLATEAU_TOL
) -> pd.DataFrame:
    """Per group of ``keys``: points, last value, change over the last interval and "flat" / "still improving".

    The curve of a group is the mean over its seeds at each iteration; "flat" when its last two points are
    within ``tol`` mIoU points, "still improving" when it rose more, "still falling" when it fell more.
    """
    if "curve" in curves.columns:
        curves = curves[curves["curve"] == curve]
    cols = [*keys, "points", "last iteration", "last mIoU", "last change", "status"]
    if curves.empty:
        return pd.DataFrame(columns=cols)
    out = []
    for k, g in curves.groupby(keys, sort=True):
        mean = g.groupby("iteration")["value"].mean().sort_index()
        change = float(mean.iloc[-1] - mean.iloc[-2]) if len(mean) > 1 else float("nan")
        flat = _curves.plateau(mean / 100.0, tol)
        status = "flat" if flat else ("still improving" if not change < 0 else "still falling")
        key = dict(zip(keys, k if isinstance(k, tuple) else (k,)))
        out.append(
            {**key, "points": len(mean), "last iteration": int(mean.index[-1]), "last mIoU": round(mean.iloc[-1], 2),
             "last change": round(change, 2), "status": status}
        )  # fmt: skip
    return pd.DataFrame(out, columns=cols)


def last_decay_note(cfg: ExperimentConfig) -> str:
    """Where a profile's default refiner puts its last step decay against its last two curve points: a sentence.

    A decay lifts a curve by itself, so a plateau judged across one says little; the synthetic profiles place the
    last decay before the last two points, and the reports say whether that holds.
    """
    from diffseg.engines.schedule import decay_points  # the engines (ignite) load only when a report asks

    o, t = cfg.optim, cfg.train
    if o.policy != "step" or any(o.decay_every) or not o.decay_at or t.eval_every <= 0:
        return ""
    start, total = t.stage1_iterations, t.stage1_iterations + t.stage2_iterations
    decay = start + decay_points(t.stage2_iterations, o.decay_at)[-1]  # the engines' own rule
    pts = _curves.points(t.eval_every, total, start)
    if len(pts) < 2:
        return ""
    if pts[-2] >= decay:
        return (
            f"The refiners' last learning-rate decay is at iteration {decay}, before their last two points "
            f"({pts[-2]} and {pts[-1]}), so the criterion judges a curve at its final learning rate."
        )
    return (
        f"The refiners' last learning-rate decay is at iteration {decay}, between their last two points "
        f"({pts[-2]} and {pts[-1]}): part of a late rise is the decay's."
    )


def _interval(d: pd.Series) -> tuple[float, float, int]:
    d = d.dropna().astype(float)
    n = len(d)
    if n == 0:
        return float("nan"), float("nan"), 0
    half = viz.t_quantile_975(n - 1) * d.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
    return float(d.mean()), float(half), n


def budget_curve(per_seed: pd.DataFrame) -> pd.DataFrame:
    """From per-seed differences (columns: setting, seed, iteration, delta) to mean and 95% interval per iteration."""
    rows = []
    for (setting, it), g in per_seed.groupby(["setting", "iteration"], sort=True):
        mean, half, n = _interval(g["delta"])
        rows.append({"setting": setting, "iteration": int(it), "mean": mean, "half_width": half, "n": n})
    return pd.DataFrame(rows, columns=["setting", "iteration", "mean", "half_width", "n"])


def settles(budget: pd.DataFrame) -> str:
    """In words, per setting: the iteration from which the 95% interval excludes zero on one side to the end, or
    "no sign yet" (not to be read as `stability`'s "settled", which asks whether the verdict stopped moving)."""
    if budget.empty:
        return "no curve points recorded"
    parts = []
    for setting, g in budget.groupby("setting", sort=True):
        g = g.sort_values("iteration")
        lo, hi = g["mean"] - g["half_width"], g["mean"] + g["half_width"]
        sign = np.where(lo > 0, 1, np.where(hi < 0, -1, 0))
        last = sign[-1]
        if last == 0 or not np.isfinite(g["half_width"].iloc[-1]):
            n = int(g["n"].iloc[-1])
            why = (
                "fewer than two seeds" if n < 2 else "its 95% interval still contains zero at the last point"
            )
            parts.append(f"{setting}: no sign yet ({why}, {g['mean'].iloc[-1]:+.2f})")
            continue
        k = len(sign) - 1
        while k > 0 and sign[k - 1] == last:
            k -= 1
        word = "positive" if last > 0 else "negative"
        parts.append(
            f"{setting}: {word} from iteration {int(g['iteration'].iloc[k])} on "
            f"({g['mean'].iloc[-1]:+.2f} at iteration {int(g['iteration'].iloc[-1])})"
        )
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------------------------
# the key contrasts, per seed and iteration (percent points)


def _setting(g: pd.DataFrame) -> str:
    return f"{g['dataset'].iloc[0]} / {g['segmentor'].iloc[0]}"


def curve_minus_curve(c: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Curve ``a`` minus curve ``b`` of the same trainings, per dataset / segmentor, seed and iteration."""
    w = c.pivot_table(index=["dataset", "segmentor", "seed", "iteration"], columns="curve", values="value")
    if w.empty or not {a, b} <= set(w.columns):
        return pd.DataFrame(columns=["setting", "seed", "iteration", "delta"])
    w = w.dropna(subset=[a, b]).reset_index()
    w["setting"] = w["dataset"] + " / " + w["segmentor"]
    return w.assign(delta=w[a] - w[b])[["setting", "seed", "iteration", "delta"]]


def refined_minus_base(c: pd.DataFrame) -> pd.DataFrame:
    """DDPS vs base: final-step minus base mIoU on the curve subset, per dataset / segmentor, seed, iteration."""
    return curve_minus_curve(c, "final_step", "base")


def level_minus_level(
    c: pd.DataFrame, column: str, a: str, b: str, where: dict[str, str] | None = None
) -> pd.DataFrame:
    """Final-step mIoU of level ``a`` minus level ``b`` of ``column``, paired per seed and iteration."""
    c = c[c["curve"] == "final_step"]
    for k, v in (where or {}).items():
        c = c[c[k].astype(str) == v]
    keys = ["dataset", "segmentor", "seed", "iteration"]
    va = c[c[column].astype(str) == a].groupby(keys)["value"].mean()
    vb = c[c[column].astype(str) == b].groupby(keys)["value"].mean()
    both = pd.concat([va.rename("a"), vb.rename("b")], axis=1, join="inner").reset_index()
    if both.empty:
        return pd.DataFrame(columns=["setting", "seed", "iteration", "delta"])
    both["setting"] = both["dataset"] + " / " + both["segmentor"]
    return both.assign(delta=both["a"] - both["b"])[["setting", "seed", "iteration", "delta"]]


def range_minus_range(c: pd.DataFrame, first: str = "noise_object", second: str = "kernel") -> pd.DataFrame:
    """Range of ``first``'s effect minus range of ``second``'s (`viz.effect_range`), per seed and iteration
    (finding 2)."""
    c = c[c["curve"] == "final_step"]
    out = []
    for (ds, seg, seed, it), g in c.groupby(["dataset", "segmentor", "seed", "iteration"]):
        if g[first].nunique() > 1 and g[second].nunique() > 1:
            r1 = viz.effect_range(g, first, [second], "value")
            r2 = viz.effect_range(g, second, [first], "value")
            out.append({"setting": f"{ds} / {seg}", "seed": seed, "iteration": it, "delta": r1 - r2})
    return pd.DataFrame(out, columns=["setting", "seed", "iteration", "delta"])


TWO_STAGE_ARM = "DDPS: first prediction, free re-noising, two stages"
ONE_STAGE_ARM = "DDPS: first prediction, free re-noising, one stage"

# (title, experiment, per-seed contrast over that experiment's arm curves)
KEY_CONTRASTS: tuple[tuple[str, str, Callable[[pd.DataFrame], pd.DataFrame]], ...] = (
    ("DDPS minus base (main results)", "main_results", refined_minus_base),
    (
        "noise on the first prediction minus on the ground truth, uniform kernel (finding 2)",
        "noise_object_and_type",
        lambda c: level_minus_level(c, "noise_object", "first", "gt", {"kernel": "uniform"}),
    ),
    ("noise-object range minus noise-type range (finding 2)", "noise_object_and_type", range_minus_range),
    (
        "free re-noising minus strict, equal network evaluations (finding 3)",
        "inference_scheme",
        lambda c: curve_minus_curve(c, "final_step", "strict_final_step"),
    ),
    (
        "two stages minus one stage, DDPS (finding 1's arms)",
        "naive_integration",
        lambda c: level_minus_level(c, "arm", TWO_STAGE_ARM, ONE_STAGE_ARM),
    ),
)


# mIoU points: a contrast whose 95% interval is this tight is resolved even when it contains zero ("no difference
# larger than 0.5")
RESOLVED_HALF_WIDTH = 0.5
# a contrast is settled when neither its sign nor its verdict changes over this last share of its budget
SETTLE_WINDOW = 1 / 3


def stability(budget: pd.DataFrame) -> pd.DataFrame:
    """Per setting of one key contrast's budget curve (`budget_curve`): is its verdict settled, and resolved?

    - **budget**: the last recorded iteration; **seeds**: the paired seeds there; mean and half-width there.
    - **settled**: over the last third of the budget (the points at iterations >= 2/3 of the last, at least two of
      them), the mean keeps one sign and the verdict (the 95% interval excludes zero, or not) does not change.
    - **resolved**: at the last point the interval excludes zero, or its half-width is at most
      `RESOLVED_HALF_WIDTH` (then it reads "no difference larger than 0.5"); one seed has no interval and is not.

    Absolute mIoU may still rise while a contrast is settled (report 10 says by how much).
    """
    cols = ["setting", "budget", "mean", "half_width", "seeds", "settled", "resolved", "reads"]
    rows = []
    for setting, g in budget.groupby("setting", sort=True):
        g = g.sort_values("iteration")
        last = g.iloc[-1]
        end = int(last["iteration"])
        window = g[g["iteration"] >= end - math.floor(SETTLE_WINDOW * end + 1e-9)]  # 600 -> from 400 on
        lo, hi = window["mean"] - window["half_width"], window["mean"] + window["half_width"]
        excludes = ((lo > 0) | (hi < 0)).to_numpy()
        signs = np.sign(window["mean"].to_numpy())
        finite = bool(np.isfinite(window["half_width"]).all())
        settled = len(window) >= 2 and finite and len(set(signs)) == 1 and len(set(excludes)) == 1
        hw, mean = float(last["half_width"]), float(last["mean"])
        if not math.isfinite(hw):
            resolved, reads = False, "one seed: no interval"
        elif excludes[-1]:
            resolved, reads = True, "positive" if mean > 0 else "negative"
        elif hw <= RESOLVED_HALF_WIDTH:
            resolved, reads = True, f"no difference larger than {RESOLVED_HALF_WIDTH}"
        else:
            resolved, reads = False, f"interval contains zero, half-width {hw:.2f} > {RESOLVED_HALF_WIDTH}"
        rows.append([setting, int(last["iteration"]), round(mean, 2), round(hw, 2), int(last["n"]),
                     "yes" if settled else "no", "yes" if resolved else "no", reads])  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def final_contrasts(budgets: list[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """`stability` of each key contrast, one row per contrast and setting (the first column names the contrast)."""
    parts = [stability(b).assign(contrast=title) for title, b in budgets]
    cols = ["contrast", "setting", "budget", "mean", "half_width", "seeds", "settled", "resolved", "reads"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def contrast_status(df: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """`final_contrasts` of the key contrasts of ``experiment`` (what its finding card shows); empty when the store
    has no curves for them."""
    keys = [k for k in KEY_CONTRASTS if k[1] == experiment]
    c = arm_curves(df, experiment) if keys else pd.DataFrame()
    budgets = [(title, budget_curve(fn(c))) for title, _, fn in keys] if not c.empty else []
    return final_contrasts([(t, b) for t, b in budgets if not b.empty])


def key_budget_curves(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, `budget_curve` frame) for each of `KEY_CONTRASTS` that the store has curves for."""
    out = []
    for title, experiment, contrast in KEY_CONTRASTS:
        c = arm_curves(df, experiment)
        if c.empty:
            continue
        b = budget_curve(contrast(c))
        if not b.empty:
            out.append((title, b))
    return out


def base_class_coverage(df: pd.DataFrame, threshold: float = 5.0) -> pd.DataFrame:
    """Per base segmentor: the share of validation classes (present in the split) with IoU above ``threshold`` %.

    From the main experiment's per-class base IoU (single-scale), so it describes the very base every arm refines.
    """
    d = df[(df["experiment"] == "main_results") & (df["method"] == "base") & (df["metric"] == "IoU")]
    d = d[(d["test"] == "ss") & d["value"].notna()] if len(d) else d
    cols = ["dataset", "segmentor", "classes in val", f"classes with IoU > {threshold:g}%", "share"]
    if d.empty:
        return pd.DataFrame(columns=cols)
    out = []
    for (ds, seg), g in d.groupby(["dataset", "segmentor"], sort=True):
        per_class = g.groupby("class_name")["value"].mean() * 100.0
        found = int((per_class > threshold).sum())
        out.append([ds, seg, len(per_class), found, f"{found / len(per_class):.0%}"])
    return pd.DataFrame(out, columns=cols)


def still_improving(df: pd.DataFrame, experiment: str) -> list[str]:
    """Arms of ``experiment`` whose final-step curve (mean over seeds) has not flattened."""
    c = arm_curves(df, experiment)
    if c.empty:
        return []
    keys = [k for k in ("dataset", "segmentor", "arm") if k in c.columns]
    t = plateau_table(c, keys)
    t = t[t["status"] != "flat"]
    return [" / ".join(str(r[k]) for k in keys) for _, r in t.iterrows()]


# --------------------------------------------------------------------------------------------------------------
# figures


def curves_figure(curves: pd.DataFrame, hue: str, title: str = "", curve: str = "final_step") -> Figure:
    """mIoU against training iteration, one line per ``hue`` level (mean over seeds, band: min to max)."""
    if "curve" in curves.columns:
        base = curves[curves["curve"] == "base"]
        curves = curves[curves["curve"] == curve]
    else:
        base = curves.iloc[:0]
    panels = list(curves.groupby(["dataset", "segmentor"], sort=True)) if len(curves) else []
    n = max(1, len(panels))
    fig = Figure(figsize=(4.6 * min(n, 3), 3.4 * math.ceil(n / 3)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(math.ceil(n / 3), min(n, 3), squeeze=False)).ravel()
    for ax, ((ds, seg), g) in zip(axes, panels):
        for level, h in g.groupby(hue, sort=True):
            s = h.groupby("iteration")["value"].agg(["mean", "min", "max"])
            ax.plot(s.index, s["mean"], marker="o", ms=3, label=str(level))
            ax.fill_between(s.index, s["min"], s["max"], alpha=0.15)
        b = base[(base["dataset"] == ds) & (base["segmentor"] == seg)].groupby("iteration")["value"].mean()
        if len(b):
            ax.plot(b.index, b.values, ls="--", color="black", lw=1, label="base (same subset)")
        ax.set_title(f"{ds} / {seg}", fontsize=9)
        ax.set_xlabel("training iteration")
        ax.set_ylabel("mIoU (%)")
        ax.legend(fontsize=6)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def budget_figure(budgets: list[tuple[str, pd.DataFrame]]) -> Figure:
    """One panel per key contrast: mean paired difference against training iteration, 95% interval shaded."""
    n = max(1, len(budgets))
    fig = Figure(figsize=(5.0 * min(n, 2), 3.4 * math.ceil(n / 2)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(math.ceil(n / 2), min(n, 2), squeeze=False)).ravel()
    for ax, (title, b) in zip(axes, budgets):
        for setting, g in b.groupby("setting", sort=True):
            g = g.sort_values("iteration")
            ax.plot(g["iteration"], g["mean"], marker="o", ms=3, label=setting)
            hw = g["half_width"].fillna(0.0)
            ax.fill_between(g["iteration"], g["mean"] - hw, g["mean"] + hw, alpha=0.2)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("training iteration")
        ax.set_ylabel("paired difference (mIoU points)")
        ax.legend(fontsize=6)
    for ax in axes[len(budgets) :]:
        ax.set_visible(False)
    return fig
