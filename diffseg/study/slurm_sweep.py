"""The sweep's phases on Slurm: each phase one job array (`diffseg.study.slurm`), waited for in turn or all
submitted at once (``--no-wait``), and the ``--status`` report of a store and its recorded jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffseg import machines
from diffseg.study.failures import SweepFailed
from diffseg.study.identity import base_run_id, eval_id, stage1_config, train_id
from diffseg.study.jobs import JobTable
from diffseg.study.plan import plan_work
from diffseg.study.slurm import SlurmExecutor
from diffseg.study.store import open_store


def job_key(job: tuple[str, Any, str]) -> str:
    """What a sweep job computes, as a stable key (its Slurm job is recorded under it)."""
    kind, args, _ = job
    if kind == "eval":
        arm, experiment = args[0], args[1]
        return f"eval-{eval_id(arm.cfg, arm.evals[0], experiment, arm.labels)}"
    cfg = args[0]
    if kind == "base":
        return f"base-{base_run_id(cfg)}"
    if kind == "stage1":
        return f"stage1-{train_id(stage1_config(cfg))}"
    return f"train-{train_id(cfg)}"


def run_on_slurm(
    phases, profile: str, folder: Path, options: Any, table: JobTable, progress: bool, wait: bool = True
) -> None:
    """Each phase as one Slurm job array, waited for before the next; failures listed at the end. Without
    ``wait``, every phase is submitted at once, each array starting after the previous one ended."""
    import sys

    from diffseg.progress import JobLog

    ex = SlurmExecutor(folder, profile, options)
    store_root = Path(folder).parent
    failures = []
    if not wait:
        after: list[str] = []
        n = 0
        for _, jobs in phases:
            if jobs:
                after = [h.job_id for h in ex.submit(jobs, [job_key(j) for j in jobs], after)]
                n += len(jobs)
        print(
            f"[{profile}] {n} job(s) submitted or re-attached (ids in {ex.record.path}); `diffseg sweep --status` "
            "shows them, and the same sweep command again waits for them and consolidates the store",
            file=sys.stderr,
        )
        return
    for title, jobs in phases:
        if not jobs:
            continue
        log = JobLog(f"[{profile}] {title} (slurm)", len(jobs), enabled=progress)

        def finished(res: tuple[str, float, int | None, int, str, Any], log=log, title=title) -> None:
            label, seconds, iterations, peak, dev, machine = res
            log.finished(label, seconds, iterations, peak)
            # the node's machine (its CPU, threads, GPU), added to the store's table by this driver
            table.add(title, label, seconds, iterations, peak, dev, machines.register(store_root, machine))

        failures += ex.run(jobs, [job_key(j) for j in jobs], finished)
    if failures:
        raise SweepFailed(failures)


def status(arms: list[tuple[str, Any]], profile: str = "cpu", results_dir: str | Path = "results") -> str:
    """What the store lacks for ``arms`` ((experiment, arm) pairs; per phase) and the state of every Slurm job
    recorded beside it, as text."""
    work = plan_work(arms, results_dir, profile)
    lines = [f"[{profile}] store {open_store(results_dir, profile).root}: " + (
        "complete" if work.empty else f"missing {work.describe()}"
    )]  # fmt: skip
    states = SlurmExecutor(open_store(results_dir, profile).root / "slurm", profile).states()
    if states:
        counts = {s: sum(v == s for v in states.values()) for s in ("pending", "running", "done", "failed")}
        lines.append("slurm jobs: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        lines += [f"  failed: {k}" for k, v in states.items() if v == "failed"]
    else:
        lines.append("slurm jobs: none recorded")
    return "\n".join(lines)


__all__ = ["job_key", "run_on_slurm", "status"]
