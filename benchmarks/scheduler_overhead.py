"""What a scheduler costs per job: the smoke sweep run locally and through Slurm, side by side.

    .venv/bin/python benchmarks/scheduler_overhead.py [--experiments main_results] [--slots 2]

Each executor runs the same sweep into a fresh store (same synthetic data, so the same jobs). A job's own time is
what it measured itself (the sweep's job table, ``jobs.csv``: training or evaluation, imports of the worker
excluded); per phase, the driver's wall time times the job slots (``--slots``: local workers or Slurm CPUs) less
the jobs' own time is the scheduling cost: process start and imports, submission, queueing, polling. It is
given per job. Needs a Slurm cluster for the second column (``.ci/slurm-up.sh`` starts a one-node one here).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere


def _timed_sweep(
    executor: str, root: Path, experiments: list[str], slots: int
) -> dict[str, tuple[float, float, int]]:
    """Per phase: (driver wall seconds, sum of the jobs' own seconds, jobs)."""
    from diffseg import experiments as ex
    from diffseg.study import sweep as sweep_mod
    from diffseg.study.slurm import SlurmOptions

    walls: dict[str, float] = {}
    table_add = sweep_mod.JobTable.add
    marks: dict[str, float] = {}

    def add(self, phase, *args, **kwargs):  # the driver's clock at every finished job, per phase
        marks.setdefault(phase + ":first", time.perf_counter())
        marks[phase + ":last"] = time.perf_counter()
        return table_add(self, phase, *args, **kwargs)

    sweep_mod.JobTable.add = add
    try:
        t0 = time.perf_counter()
        ex.sweep(
            "smoke", root / "results", experiments, workers=slots, progress=False, executor=executor,
            slurm=SlurmOptions() if executor == "slurm" else None,
        )  # fmt: skip
        walls["total"] = time.perf_counter() - t0
    finally:
        sweep_mod.JobTable.add = table_add
    own: dict[str, list[float]] = {}
    with (root / "results" / "smoke" / "jobs.csv").open() as f:
        for row in csv.DictReader(f):
            own.setdefault(row["phase"], []).append(float(row["seconds"]))
    # a phase's wall: from the previous phase's last result (or the start) to its own last result
    out, start = {}, t0
    for phase, seconds in own.items():
        end = marks[phase + ":last"]
        out[phase] = (end - start, sum(seconds), len(seconds))
        start = end
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", nargs="*", default=["main_results"])
    ap.add_argument("--slots", type=int, default=2, help="jobs at a time (local workers; the cluster's CPUs)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DIFFSEG_DATA"] = str(Path(tmp) / "data")  # one dataset for both, so the same jobs
        results = {}
        for executor in ("local", "slurm"):
            try:
                results[executor] = _timed_sweep(executor, Path(tmp) / executor, args.experiments, args.slots)
            except Exception as e:  # no cluster: the local column alone
                print(f"{executor}: not measured ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    phases = list(next(iter(results.values())).keys()) if results else []
    print(
        f"\nscheduling cost per job, smoke sweep of {', '.join(args.experiments)}, {args.slots} slots (seconds)"
    )
    print(
        f"{'phase':<18}{'jobs':>6}"
        + "".join(f"{e + ' wall':>13}{e + ' own':>12}{e + ' /job':>13}" for e in results)
    )
    for phase in phases:
        line = f"{phase:<18}{next(iter(results.values()))[phase][2]:>6}"
        for r in results.values():
            wall, own, n = r[phase]
            line += f"{wall:>13.1f}{own:>12.1f}{max(0.0, wall * args.slots - own) / n:>13.2f}"
        print(line)
    if len(results) == 2:
        per = {e: sum(max(0.0, w * args.slots - o) for w, o, _ in r.values()) / sum(n for *_, n in r.values())
               for e, r in results.items()}  # fmt: skip
        print(f"\nall phases: local {per['local']:.2f} s/job, slurm {per['slurm']:.2f} s/job "
              f"({per['slurm'] / max(per['local'], 1e-9):.1f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
