"""Computed prose: verdicts and sentences written from the numbers (Student-t 95% intervals), so a report can
never claim what its data do not show."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (scipy is not a dependency).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


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
