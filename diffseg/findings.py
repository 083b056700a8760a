"""The study's answers at a glance: each of the paper's findings (and the main table) as claim, effect, verdict.

One function per claim turns the results store into `Contrast` rows (a paired difference over seeds with its 95%
interval) and one `Finding` (the claim, its report, its key figure and a verdict computed from those rows). The
index page and the top of every report show exactly these objects, so a reader gets the same answer from both,
and no page can state a verdict its numbers do not give.

The statistics are those of the notebooks (`diffseg.viz`): per seed, a difference in percent points; over seeds,
its mean and a Student-t 95% interval ``mean ± t_{0.975, n-1} · std / sqrt(n)``; the verdict of a contrast is
`viz.verdict` (significant at the 5% level in the expected direction: "supports"; in the other: "contradicts").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from diffseg import viz


@dataclass(frozen=True)
class Contrast:
    """One paired difference over seeds (percent points) for one setting, e.g. ADE20K / segformer-tiny."""

    setting: str
    label: str
    mean: float
    half_width: float  # of the 95% interval; NaN with fewer than two seeds
    n: int
    verdict: str  # "supports" | "contradicts" | "inconclusive", as `viz.verdict`

    @property
    def interval(self) -> str:
        if not np.isfinite(self.mean):
            return "no paired values"
        if not np.isfinite(self.half_width):
            return f"{self.mean:+.2f} ({self.n} seed, no interval)"
        lo, hi = self.mean - self.half_width, self.mean + self.half_width
        return f"{self.mean:+.2f} [{lo:+.2f}, {hi:+.2f}]"


@dataclass(frozen=True)
class Finding:
    """A claim of the paper, the contrasts that test it here, and the verdict they give."""

    key: str
    title: str
    claim: str
    report: str  # stem of the report that tests it, e.g. "04_inference_scheme"
    figure: str  # stem of its key figure under reports/figures
    contrasts: tuple[Contrast, ...]
    verdict: str  # "supported" | "contradicted" | "mixed" | "not shown" | "not run"
    rule: str  # how the contrasts combine into the verdict, in words
    convergence: str = ""  # whether the trainings it rests on have flattened (`convergence`)
    # its key contrasts over their budget curves, one row per contrast and setting: (contrast, setting, budget,
    # seeds, settled, resolved, reads), from `diffseg.budget.stability`
    stability: tuple[tuple[str, str, int, int, str, str, str], ...] = ()


def contrast(
    setting: str, label: str, a: Sequence[float], b: Sequence[float], expect: str = "increase"
) -> Contrast:
    """The paired difference ``a - b`` over seeds (aligned, percent points) as a `Contrast`."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = int(d.size)
    mean = float(d.mean()) if n else float("nan")
    std = float(d.std(ddof=1)) if n > 1 else float("nan")
    half = viz.t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
    return Contrast(setting, label, mean, half, n, viz.verdict(mean, std, n, expect))


def _setting(dataset: str, segmentor: str) -> str:
    return f"{dataset} / {segmentor}"


def combine(contrasts: Sequence[Contrast], mode: str = "all") -> str:
    """The verdict of a finding from its contrasts.

    ``mode="all"`` (the claim should hold in every setting): "supported" when every contrast supports it,
    "partly supported (k of n settings)" when some do and none contradicts, "mixed" when some support and
    some contradict, "contradicted" when some contradict and none supports, "not shown" when none is
    significant. ``mode="any"`` (an existence claim, e.g. "some naive arm is worse"): "supported" as soon as
    one contrast supports it.
    """
    if mode not in ("all", "any"):
        raise ValueError(f"combine: mode must be 'all' or 'any', got {mode!r}")
    if not contrasts:
        return "not run"
    v = [c.verdict for c in contrasts]
    sup, con = v.count("supports"), v.count("contradicts")
    if sup == len(v) or (mode == "any" and sup):
        return "supported"
    if sup and con:
        return "mixed"
    if sup:
        return f"partly supported ({sup} of {len(v)} settings)"
    if con:
        return "contradicted"
    return "not shown"


def _of(df: pd.DataFrame, experiment: str) -> pd.DataFrame:
    return df[df["experiment"] == experiment] if "experiment" in df.columns else df.iloc[:0]


def main_results(df: pd.DataFrame) -> Finding:
    """DDPS versus its frozen base: refined minus base mIoU (single-scale, final step) per dataset and segmentor."""
    d = _of(df, "main_results")
    rows = []
    if not d.empty:
        p = viz.paired_deltas(d, "mIoU", test="ss")
        for (ds, seg), g in p.groupby(["dataset", "segmentor"]):
            g = g.sort_values("seed")
            rows.append(contrast(_setting(ds, seg), "refined minus base", g["refined"], g["base"]))
    return Finding(
        "main",
        "Main results",
        "Refining a frozen segmentor's prediction with the mask prior raises its mIoU.",
        "01_main_results",
        "01_main_mIoU",
        tuple(rows),
        combine(rows, "all"),
        "supported when refined minus base mIoU (single-scale) is significantly positive in every setting",
    )


def naive_integration(df: pd.DataFrame) -> Finding:
    """Finding 1: each textbook (non-DDPS) arm minus the base it refines; the claim needs one significantly below."""
    d = _of(df, "naive_integration")
    rows = []
    if not d.empty:
        p = viz.paired_deltas(d, "mIoU", test="ss")
        p = p[~p["arm"].astype(str).str.startswith("DDPS")]
        for (ds, seg, arm), g in p.groupby(["dataset", "segmentor", "arm"]):
            g = g.sort_values("seed")
            rows.append(
                contrast(f"{_setting(ds, seg)}: {arm}", "arm minus base", g["refined"], g["base"], "decrease")
            )
    return Finding(
        "finding1",
        "Finding 1: a naive integration of diffusion is not enough",
        "A poorly designed diffusion process can make mIoU worse than the base segmentor.",
        "02_naive_integration",
        "02_naive_integration_mIoU",
        tuple(rows),
        combine(rows, "any"),
        "supported when some textbook arm is significantly below its base segmentor",
    )


def noise_object_and_type(df: pd.DataFrame) -> Finding:
    """Finding 2: per seed, the range of the noise object's effect minus the range of the kernel's (main effects on
    a full grid, simple effects along the arms of the synthetic profiles' L: `viz.effect_range`)."""
    d = _of(df, "noise_object_and_type")
    rows = []
    if not d.empty and d["noise_object"].nunique() > 1 and d["kernel"].nunique() > 1:
        ranges = viz.main_effect_ranges(d, ["noise_object", "kernel"], test="ss")
        for (ds, seg), g in ranges.groupby(["dataset", "segmentor"]):
            g = g.sort_values("seed")
            rows.append(
                contrast(
                    _setting(ds, seg),
                    "noise-object range minus noise-type range",
                    g["noise_object"],
                    g["kernel"],
                )
            )
    return Finding(
        "finding2",
        "Finding 2: what the noise is added to matters more than the type of noise",
        "In training, the object the noise is added to moves mIoU more than the type of noise does.",
        "03_noise_object_and_type",
        "03_noise_object_and_type_heatmap",
        tuple(rows),
        combine(rows, "all"),
        "supported when the noise-object effect's range exceeds the noise-type effect's range significantly",
    )


def inference_scheme(df: pd.DataFrame) -> Finding:
    """Finding 3: free re-noising minus each strict sampler (the exact posterior, and the release's step) at the
    largest number of evaluations both ran."""
    d = _of(df, "inference_scheme")
    rows = []
    refined = d[d["method"] == "refined"] if not d.empty else d
    samplers = set(refined["sampler"].astype(str)) if not refined.empty else set()
    evals = refined["num_evals"].astype(str) if not refined.empty else pd.Series(dtype=str)
    for strict, name in (("strict", "strict"), ("strict_release", "the release's strict step")):
        if not {"free_renoise", strict} <= samplers:
            continue
        common = set(evals[refined["sampler"] == "free_renoise"]) & set(evals[refined["sampler"] == strict])
        if not common:
            continue
        top = max(common, key=float)
        pairs = viz.compare_levels(d[d["num_evals"].astype(str) == top], "sampler", "free_renoise", strict)
        for (ds, seg), g in pairs.groupby(["dataset", "segmentor"]):
            g = g.sort_values("seed")
            rows.append(
                contrast(
                    f"{_setting(ds, seg)}, {top} evaluations", f"free re-noising minus {name}", g["a"], g["b"]
                )
            )
    verdict = combine(rows, "all")
    if verdict == "not shown":
        # the claim has two parts: "not needed" (no worse) holds without significance; "even better" does not
        verdict = "not shown (no significant difference)"
    return Finding(
        "finding3",
        "Finding 3: the strict denoising scheme is not needed at inference",
        "At inference a relaxed scheme (free re-noising) works at least as well as the strict posterior, even better.",
        "04_inference_scheme",
        "04_steps_mIoU",
        tuple(rows),
        verdict,
        "supported when free re-noising is significantly better than both strict samplers (the exact posterior "
        "and the release's step) at equal network evaluations",
    )


def convergence(df: pd.DataFrame, experiment: str) -> str:
    """Whether the learning curves of ``experiment``'s arms have flattened (`diffseg.budget.still_improving`)."""
    from diffseg import budget

    if budget.arm_curves(df, experiment).empty:
        return "unknown: no learning curves were recorded for these trainings."
    moving = budget.still_improving(df, experiment)
    if not moving:
        return "yes: every arm's learning curve is flat at the end of training (see report 10)."
    return f"no: still improving at the end of training: {', '.join(moving)} (see report 10)."


_EXPERIMENT_OF = {
    "main": "main_results",
    "finding1": "naive_integration",
    "finding2": "noise_object_and_type",
    "finding3": "inference_scheme",
}


def _with_convergence(f: Callable[[pd.DataFrame], Finding]) -> Callable[[pd.DataFrame], Finding]:
    def wrapped(df: pd.DataFrame) -> Finding:
        finding = f(df)
        from diffseg import budget

        experiment = _EXPERIMENT_OF[finding.key]
        conv = convergence(df, experiment) if len(df) else "unknown: no results yet."
        t = budget.contrast_status(df, experiment) if len(df) else pd.DataFrame()
        cols = ["contrast", "setting", "budget", "seeds", "settled", "resolved", "reads"]
        stable = tuple(tuple(r) for r in t[cols].itertuples(index=False)) if len(t) else ()
        return replace(finding, convergence=conv, stability=stable)

    wrapped.__doc__, wrapped.__name__ = f.__doc__, f.__name__
    return wrapped


FINDINGS: tuple[Callable[[pd.DataFrame], Finding], ...] = tuple(
    _with_convergence(f) for f in (main_results, naive_integration, noise_object_and_type, inference_scheme)
)


def all_findings(df: pd.DataFrame) -> list[Finding]:
    """Every finding of the study, computed from the results frame of one profile."""
    return [f(df) for f in FINDINGS]


def finding_of_report(df: pd.DataFrame, report: str) -> Finding | None:
    """The finding a report tests (``report`` a stem like "03_noise_object_and_type"), or None."""
    for f in FINDINGS:
        finding = f(df.iloc[:0] if df.empty else df)
        if finding.report == report:
            return finding
    return None
