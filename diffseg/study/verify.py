"""`diffseg verify`: which trainings of a results store to re-make, and how their first curve points compare.

A training's learning curve (`diffseg.curves`, the store's ``experiment == "learning_curves"`` rows) is recorded
while it runs, so re-training the same config with the same schedule up to its first curve point must give that
point again: on one CPU bit for bit (design.md), on another machine perhaps not (other kernels, other reduction
orders). This module picks the sample (`plan`), and compares (`compare`); `diffseg.study.verify_run` runs the
re-trainings in a temporary folder and prints the table.

The sample (`plan`), by default:

- every base segmentor of the store, re-trained up to its first curve point;
- one refiner per dataset x base segmentor (a ``main_results`` training, lowest seed), and one training of each
  finding's experiment whose first point is not already covered, each up to its first curve point. A refiner's
  first point depends on its fully trained frozen base, and run folders are not committed: its base is reused
  from a local ``runs/`` folder when one holds it (the folder is named by the base's identity), else trained
  fully here, once, and then every curve point of that base is compared, not only its first;
- ``--all``: every training of the store; ``--sample N``: the first N of the default order, then the rest.

A stored training that no config of the code's catalogue trains is reported as such (the code changed since the
store was made), never re-trained and never counted as a numeric mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from diffseg.config import ExperimentConfig
from diffseg.study.identity import base_run_id, is_two_stage, stage1_config, train_id

# Experiments whose arms test a finding of the paper (diffseg.findings); main_results is sampled per setting.
FINDING_EXPERIMENTS = ("naive_integration", "noise_object_and_type", "inference_scheme")
# On a GPU without deterministic algorithms two runs of one config differ; this is the default allowance there
# (mIoU as a fraction: 0.01 = one mIoU point). On CPU the default is 0: the points must be identical.
GPU_TOLERANCE = 0.01


@dataclass
class Check:
    """One stored training to re-make: its curve's store key, config (None: the code no longer trains it) and
    the iterations to compare (its first curve point; every point for a base trained fully)."""

    key: str
    kind: str  # "base" | "refiner"
    label: str
    cfg: ExperimentConfig | None
    points: list[int]
    why: str
    full_base: bool = False  # a base trained to its end, because a sampled refiner needs it
    base_key: str = ""  # a refiner's base curve key ("" for a base, or a base with its own weights)


@dataclass
class Plan:
    checks: list[Check]
    skipped: int  # stored trainings not sampled
    notes: list[str] = field(default_factory=list)


def catalogue(profile: str, curves: pd.DataFrame) -> tuple[dict[str, tuple[ExperimentConfig, str]], dict]:
    """The code's trainings that could have made the stored curves: ``{train_id: (config, label)}`` for refiners
    and ``{base_run_id: config}`` for bases trained from scratch, over the catalogue's arms at the profile's
    defaults and at the store's seeds, each of its base segmentors on its own."""
    from diffseg.study.catalogue import EXPERIMENTS
    from diffseg.study.sweep import _job_label, arms_of

    seeds = sorted({int(s) for s in curves["seed"].dropna()}) if "seed" in curves.columns else []
    segs = sorted({str(s) for s in curves["segmentor"].dropna()})
    refiners: dict[str, tuple[ExperimentConfig, str]] = {}
    bases: dict[str, ExperimentConfig] = {}
    for name in EXPERIMENTS:
        selections: list[dict[str, Any]] = [{}]
        selections += [{"segmentors": [s], "seeds": seeds or None} for s in segs]
        for sel in selections:
            try:
                arms = arms_of(name, profile, **sel)
            except ValueError:
                continue  # a segmentor this experiment does not run on this profile
            for arm in arms:
                refiners.setdefault(
                    train_id(arm.cfg), (arm.cfg, f"{name}: {_job_label(arm.cfg, arm.labels)}")
                )
                if arm.cfg.segmentor.weights is None and arm.cfg.segmentor.train_iterations > 0:
                    bases.setdefault(base_run_id(arm.cfg), arm.cfg)
    return refiners, bases


def first_point_training(cfg: ExperimentConfig) -> str:
    """What a refiner's first curve point comes from: its shared stage 1 when it trains two stages (arms that
    differ only after stage 1 share that point), else its own training."""
    return train_id(stage1_config(cfg)) if is_two_stage(cfg) else train_id(cfg)


def plan(
    rows: pd.DataFrame,
    profile: str,
    sample: int | None = None,
    everything: bool = False,
    local_bases: set[str] | frozenset[str] = frozenset(),
) -> Plan:
    """The checks for the store's rows ``rows`` (see the module's docstring). ``local_bases``: base curve keys
    whose fully trained weights a local ``runs/`` folder holds (their refiners need no base training here)."""
    curves = rows[rows["experiment"] == "learning_curves"] if "experiment" in rows.columns else rows.iloc[:0]
    if curves.empty:
        return Plan([], 0, ["the store holds no learning curves: nothing to re-make"])
    refiners, bases = catalogue(profile, curves)
    evals = rows[rows["experiment"] != "learning_curves"]
    serves: dict[str, set[str]] = {}
    if "train_id" in evals.columns:
        for tid, exp in evals[["train_id", "experiment"]].drop_duplicates().itertuples(index=False):
            serves.setdefault(str(tid), set()).add(str(exp))
    by_key = {k: g for k, g in curves.groupby("run_id", sort=True)}
    base_keys = [k for k, g in by_key.items() if str(g["trained"].iloc[0]) == "base"]
    refiner_keys = [k for k in by_key if k not in base_keys]

    def first(key: str) -> int:
        return int(by_key[key]["step"].min())

    def setting(key: str) -> tuple[str, str]:
        g = by_key[key]
        return str(g["dataset"].iloc[0]), str(g["segmentor"].iloc[0])

    def seed(key: str) -> int:
        s = by_key[key]["seed"].dropna() if "seed" in by_key[key].columns else pd.Series([], dtype=float)
        return int(s.iloc[0]) if len(s) else 0

    def refiner_check(key: str, why: str) -> Check:
        tid = key.removeprefix("curve-")
        found = refiners.get(tid)
        ds, seg = setting(key)
        if found is None:
            return Check(
                key, "refiner", f"refiner {ds}/{seg} seed {seed(key)} {tid}", None, [first(key)], why
            )
        cfg, name = found
        if why.startswith("an arm of "):  # the catalogue names a shared training after its first experiment
            name = f"{why.removeprefix('an arm of ')}: {name.split(': ', 1)[-1]}"
        own = cfg.segmentor.weights is None and cfg.segmentor.train_iterations > 0
        base_key = f"curve-base-{base_run_id(cfg)}" if own else ""
        return Check(key, "refiner", name, cfg, [first(key)], why, base_key=base_key)

    default: list[Check] = []
    for key in base_keys:
        ds, seg = setting(key)
        cfg = bases.get(key.removeprefix("curve-base-"))
        default.append(Check(key, "base", f"base {ds}/{seg}", cfg, [first(key)], "every base"))
    picked: set[str] = set()
    covered: dict[str, str] = {}  # first-point training -> the label of the check that covers it
    main = sorted(
        (k for k in refiner_keys if "main_results" in serves.get(k.removeprefix("curve-"), set())),
        key=lambda k: (setting(k), seed(k), k),
    )
    for ds_seg in sorted({setting(k) for k in refiner_keys}):
        keys = [k for k in main if setting(k) == ds_seg] or [k for k in refiner_keys if setting(k) == ds_seg]
        matched = [k for k in keys if k.removeprefix("curve-") in refiners] or keys
        key = matched[0]
        check = refiner_check(key, "one refiner per dataset x segmentor")
        default.append(check)
        picked.add(key)
        if check.cfg is not None:
            covered[first_point_training(check.cfg)] = check.label
    notes = []
    for exp in FINDING_EXPERIMENTS:
        keys = sorted(
            (k for k in refiner_keys if exp in serves.get(k.removeprefix("curve-"), set())),
            key=lambda k: (seed(k), k),
        )
        fresh = [k for k in keys if k.removeprefix("curve-") in refiners and _fpt(refiners, k) not in covered]
        if fresh:
            check = refiner_check(fresh[0], f"an arm of {exp}")
            default.append(check)
            picked.add(fresh[0])
            covered[first_point_training(check.cfg)] = check.label  # type: ignore[arg-type]
        elif keys:
            by = next((covered[_fpt(refiners, k)] for k in keys if _fpt(refiners, k) in covered), "")
            notes.append(
                f"{exp}: its trainings' first points are those already checked ({by or 'none matched'})"
            )
    rest = [refiner_check(k, "--all") for k in refiner_keys if k not in picked]
    if everything:
        chosen = default + rest
    elif sample is not None:
        chosen = (default + rest)[: max(0, sample)]
    else:
        chosen = default
    _mark_full_bases(chosen, default + rest, local_bases)
    skipped = len(by_key) - len(chosen)
    return Plan(chosen, skipped, notes)


def _fpt(refiners: dict[str, tuple[ExperimentConfig, str]], key: str) -> str:
    found = refiners.get(key.removeprefix("curve-"))
    return first_point_training(found[0]) if found else key


def _mark_full_bases(chosen: list[Check], every: list[Check], local_bases: set[str] | frozenset[str]) -> None:
    """A base that a chosen refiner needs and no local run folder holds is trained to its end (once): its check,
    added when the sample left it out, then compares every point of its curve."""
    needed = {c.base_key for c in chosen if c.kind == "refiner" and c.cfg is not None and c.base_key}
    needed -= set(local_bases)
    have = {c.key: c for c in chosen if c.kind == "base"}
    for key in sorted(needed):
        check = have.get(key) or next((c for c in every if c.key == key), None)
        if check is None:
            continue  # the store lacks that base's curve: the refiner's base is trained without a comparison
        check.full_base = True
        check.why = "its refiners need it trained fully"
        if key not in have:
            chosen.insert(0, check)


def compare(
    committed: pd.DataFrame, here: pd.DataFrame, points: list[int], tolerance: float
) -> list[dict[str, Any]]:
    """One line per (iteration, curve) of the committed curve at ``points``: committed and re-made values, their
    difference and whether it is within ``tolerance`` (0: identical). A point missing here is a mismatch."""
    made = {(int(r.iteration), str(r.curve)): float(r.value) for r in here.itertuples()}
    lines = []
    for r in committed[committed["step"].isin(points)].sort_values(["step", "curve"]).itertuples():
        key = (int(r.step), str(r.curve))
        value = made.get(key)
        diff = None if value is None else value - float(r.value)
        ok = value is not None and (value == float(r.value) or abs(diff) <= tolerance)  # type: ignore[arg-type]
        lines.append(
            {
                "point": key[0],
                "curve": key[1],
                "committed": float(r.value),
                "here": value,
                "diff": diff,
                "match": ok,
            }
        )
    return lines


def lines_of(check: Check, res: dict[str, Any], rows: pd.DataFrame, tolerance: float) -> list[dict[str, Any]]:
    committed = rows[rows["run_id"] == check.key]
    return compare(committed, res["curve"], check.points, tolerance)


def differences(
    committed: pd.DataFrame, here: dict[str, str], device_committed: str, device_here: str
) -> str:
    """What differs between the machine(s) that made a training's rows and this one, in one line."""
    fields = ("cpu_capability", "threads", "torch", "kernel_env", "cpu_model", "gpu_name")
    parts = []
    if device_committed != device_here:
        parts.append(f"device {device_committed} there, {device_here} here")
    if committed.empty:
        shown = ", ".join(f"{f} {here.get(f) or '-'}" for f in fields[:4])
        return "; ".join([*parts, f"committed machine unrecorded; here: {shown}"])
    for f in fields:
        there = sorted({str(v) for v in committed[f]})
        if there != [str(here.get(f, ""))]:
            parts.append(f"{f} {' / '.join(there) or '-'} there, {here.get(f) or '-'} here")
    return "; ".join(parts) or "no difference in the recorded provenance (same machine, same libraries)"


def _fmt(v: float | None) -> str:
    return "missing" if v is None else repr(float(v))


def report(checks, results, rows, table, device, tolerance, seconds, out) -> int:
    """The table (job, point, committed, here, difference, match), the summary line and what differs."""
    header = ("job", "point", "committed", "here", "difference", "match")
    body, mismatched, config, failed = [], [], [], []
    n = same = 0
    for c in checks:
        if c.cfg is None:
            config.append(c)
            continue
        res = results.get(c.key, {"error": "not run"})
        if "error" in res:
            failed.append((c, res["error"]))
            continue
        for line in lines_of(c, res, rows, tolerance):
            n += 1
            same += line["match"]
            diff = "-" if line["diff"] is None else f"{line['diff']:+.3g}" if line["diff"] else "0"
            body.append(
                (
                    c.label,
                    f"{line['point']} {line['curve']}",
                    _fmt(line["committed"]),
                    _fmt(line["here"]),
                    diff,
                    "yes" if line["match"] else "NO",
                )
            )
            if not line["match"]:
                mismatched.append((c, res, line))
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    for r in [header, *body]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip(), file=out)
    exact = sum(1 for r in body if r[4] == "0")  # a difference of exactly zero
    summary = f"{exact}/{n} points identical"
    if tolerance:
        summary += f"; {same}/{n} within the tolerance {tolerance:g}"
    print(f"{summary} ({len(checks) - len(config) - len(failed)} training(s), {seconds:.0f} s)", file=out)
    first: dict[str, tuple[Check, dict[str, Any], dict[str, Any], int]] = {}
    for c, res, line in mismatched:  # one line per training: its first differing point, and how many differ
        k = first.get(c.key)
        first[c.key] = (c, res, line, 1) if k is None else (*k[:3], k[3] + 1)
    for c, res, line, count in first.values():
        ids = set(rows.loc[rows["run_id"] == c.key, "machine"].astype(str))
        made = table[table["machine"].isin(ids)]
        dev = ", ".join(sorted(set(rows.loc[rows["run_id"] == c.key, "device"].astype(str))))
        more = f" (and {count - 1} more value(s) of this training)" if count > 1 else ""
        print(
            f"mismatch: {c.label} ({c.key}) at iteration {line['point']} ({line['curve']}): committed "
            f"{_fmt(line['committed'])}, here {_fmt(line['here'])}{more}. What differs: "
            f"{differences(made, res['machine'], dev, device)}",
            file=out,
        )
    if first and not device.startswith("cuda"):
        print(
            "hint: a CPU with other vector units runs other kernels (oneDNN's convolutions above all) and other "
            "summation orders, so its bits differ; --cpu-kernels avx2 runs the AVX2 ones, with which the committed "
            "cpu store was reproduced bit for bit (README)",
            file=out,
        )
    for c in config:
        print(
            f"config changed: {c.label} ({c.key}): no training config of the code's catalogue (profile "
            f"{rows['profile'].dropna().iloc[0] if 'profile' in rows.columns else '?'}) has this identity, so the "
            "code no longer makes this training: its rows come from other code, not re-made (re-run the sweep)",
            file=out,
        )
    for c, error in failed:
        print(f"failed: {c.label} ({c.key}): {error}", file=out)
    return 0 if (same == n and not config and not failed) else 1
