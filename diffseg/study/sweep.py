"""The sweep: every experiment's missing work on worker processes (one per core, or one per GPU), one progress
line per finished job; ``run_experiment`` for one experiment (what a notebook calls); the datasets' descriptions."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from diffseg import machines, profiles
from diffseg.config import ExperimentConfig, replace
from diffseg.engines.runner import check_base_weights
from diffseg.study.ablation import ABLATION_COLUMN, make_ablation
from diffseg.study.arms import Arm
from diffseg.study.catalogue import EXPERIMENTS
from diffseg.study.devices import visible_gpus
from diffseg.study.execution import ensure_trained, missing_rows, run_or_load, train_base, train_stage1
from diffseg.study.failures import Failure, SweepFailed
from diffseg.study.identity import train_id
from diffseg.study.jobs import JOBS_FILE, JobTable
from diffseg.study.plan import plan_work
from diffseg.study.store import open_store, runs_folder
from diffseg.study.workers import (
    WORKER_MALLOC_ENV,  # noqa: F401 (the sweep's public name for it)
    Pools,
)
from diffseg.study.workers import spawn_pool as _spawn_pool  # noqa: F401 (tests start one worker through it)


def _job_label(cfg: ExperimentConfig, labels: Mapping[str, Any] | None = None) -> str:
    arm = ", ".join(f"{k}={v}" for k, v in (labels or {}).items() if k != "arm")
    name = (labels or {}).get("arm") or arm
    return f"{cfg.data.dataset}/{cfg.segmentor.name} seed {cfg.seed}" + (f" {name}" if name else "")


def _call(job: tuple[str, Any, str]) -> tuple[str, float, int | None, int, str, dict[str, str]]:
    """Run one sweep job; returns (label, seconds, iterations trained or None, peak memory in bytes, device, the
    worker's machine: `diffseg.machines.describe`) for its progress line and the sweep's job table."""
    from diffseg.engines.common import resolve_device
    from diffseg.memory import peak_memory, reset_peak_memory

    kind, args, name = job
    cfg = args[0].cfg if kind == "eval" else args[0]
    device = resolve_device(cfg.device)
    # the previous job's models can still sit in reference cycles: collect them, so this job's peak is its own
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    reset_peak_memory(device)
    t0 = time.perf_counter()
    its: int | None = None
    if kind == "base":
        train_base(*args)
        label, its = f"{cfg.data.dataset}/{cfg.segmentor.name}", cfg.segmentor.train_iterations
    elif kind == "stage1":
        train_stage1(*args)
        label, its = f"{_job_label(cfg)} {name}", cfg.train.stage1_iterations
    elif kind == "train":
        ensure_trained(*args)
        two_stage = cfg.train.stage1_iterations > 0 and cfg.train.stage2_iterations > 0
        its = (
            cfg.train.stage2_iterations
            if two_stage
            else cfg.train.stage1_iterations + cfg.train.stage2_iterations
        )
        label = f"{_job_label(cfg)} {name}"
    else:
        run_or_load(*args)
        label = f"{args[1]}: {_job_label(cfg, args[0].labels)}"
    return label, time.perf_counter() - t0, its, peak_memory(device), str(device), machines.describe()


def _guarded_call(job: tuple[str, Any, str], processes: int = 1) -> tuple[Any, Failure | None]:
    """`_call` (as a ``processes``-process training when > 1, `diffseg.study.process_group`), with a job's failure
    returned instead of raised, so the sweep's other jobs still run."""
    try:
        if processes > 1:
            from diffseg.study.process_group import run_grouped

            return run_grouped(job, processes), None
        return _call(job), None
    except Exception as e:  # a failed job, named with its error's last line and where its output is
        kind, args, name = job
        cfg = args[0].cfg if kind == "eval" else args[0]
        where = "this terminal (the worker's stderr)"
        if kind == "train":
            where = str(args[1] / train_id(cfg) / "log.csv")
        label = name or _job_label(cfg, args[0].labels if kind == "eval" else None)
        last = (str(e).strip().splitlines() or [""])[-1]
        return None, Failure(f"{kind} {label}", f"{type(e).__name__}: {last}", where)


def sweep(
    profile: str = "cpu",
    results_dir: str | Path = "results",
    experiments: list[str] | None = None,
    workers: int | None = None,
    device: str = "auto",
    progress: bool = True,
    executor: str = "local",
    slurm: Any = None,
    wait: bool = True,
    gpus_per_job: int = 1,
) -> pd.DataFrame:
    """Run everything the store lacks for ``experiments`` (default: all), ``workers`` processes at a time.

    ``executor``: "local" (processes on this machine) or "slurm" (one job array per phase through submitit,
    `diffseg.study.slurm`; ``slurm`` its `SlurmOptions`). What runs is decided here either way; the executor only
    decides where. ``wait=False`` (Slurm only) submits every phase, each waiting for the one before, and returns.

    With ``progress``, one line per finished job goes to stderr (`diffseg.progress.JobLog`).

    Phases, each a set of independent jobs: base segmentors, shared stage-1 trainings, full trainings, then
    evaluations. Every job is resumable and idempotent, so an interrupted sweep, started again, redoes only what
    is missing. On CPU the default is one single-threaded process per core; on CUDA one process per visible GPU,
    each pinned to its own (`diffseg.study.devices`). ``gpus_per_job`` > 1 runs each training (base, stage 1,
    refiner) as one DDP job over that many GPUs (on CPU: single-threaded gloo processes), as many at once as the
    GPUs (cores) allow; evaluations keep one GPU (core) each.
    """
    import multiprocessing as mp

    from diffseg.progress import JobLog

    names = experiments or list(EXPERIMENTS)
    arms = [(name, arm) for name in names for arm in arms_of(name, profile, device=device)]
    store = open_store(results_dir, profile)
    runs = runs_folder(results_dir, profile)
    work = plan_work(arms, results_dir, profile)
    todo, cfgs, bases, stage1 = work.todo, work.refiners, work.bases, work.stage1
    check_base_checkpoints(list(cfgs.values()))
    for c in cfgs.values():  # every training's base is known before the first job starts
        check_base_weights(c)
    on_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    gpus = visible_gpus() if on_cuda else []
    if workers is None:
        workers = max(1, len(gpus)) if on_cuda else (os.cpu_count() or 1)
    arm_of = {}  # training -> the first experiment arm that needs it, to name it in the progress lines
    for n, a in todo:
        arm_of.setdefault(
            train_id(a.cfg), f"{n}: {a.labels.get('arm') or ', '.join(map(str, a.labels.values()))}"
        )
    phases = [
        ("base segmentors", [("base", (c, runs), "") for c in bases.values()]),
        ("stage 1", [("stage1", (c, runs), f"stage 1 {k[:8]}") for k, c in stage1.items()]),
        ("refiners", [("train", (c, runs), arm_of.get(k, "")) for k, c in cfgs.items()]),
        ("evaluations", [("eval", (a, n, profile, results_dir), "") for n, a in todo]),
    ]
    table = JobTable(store.root / JOBS_FILE)
    if executor == "slurm" and gpus_per_job > 1:
        raise ValueError(
            "--gpus-per-job is the local executor's; on Slurm give --slurm-gpus-per-job N (one task per GPU) "
            "or --slurm-tasks-per-node N (CPU ranks), and --slurm-nodes"
        )
    if executor == "slurm":
        from diffseg.study.slurm_sweep import run_on_slurm

        run_on_slurm(phases, profile, store.root / "slurm", slurm, table, progress, wait)
        return store.consolidate()
    if executor != "local":
        raise ValueError(f"unknown executor '{executor}'; valid executors: local, slurm")
    pools = Pools(mp.get_context("spawn"), workers, gpus, gpus_per_job)
    threads = torch.get_num_threads()
    failures: list[Failure] = []
    if pools.get(False) is None and not on_cuda:
        # Float reductions are split by thread, so CPU numbers depend on the thread count: jobs run here, as with
        # --workers 1, use the single thread of a pool worker and write the rows a pooled sweep writes.
        torch.set_num_threads(1)
    try:
        for title, jobs in phases:
            if not jobs:
                continue
            processes = gpus_per_job if title != "evaluations" else 1
            call = partial(_guarded_call, processes=processes)
            pool = pools.get(processes > 1)
            it = pool.imap_unordered(call, jobs) if pool else map(call, jobs)
            log = JobLog(f"[{profile}] {title}", len(jobs), enabled=progress)
            for result, failure in it:
                if failure is not None:
                    failures.append(failure)
                    log.failed(failure.line())
                    continue
                label, seconds, iterations, peak, dev, machine = result
                log.finished(label, seconds, iterations, peak)
                # the worker's machine (its threads, not this process's), added to the store's table here
                table.add(
                    title, label, seconds, iterations, peak, dev, machines.register(store.root, machine)
                )
    finally:
        torch.set_num_threads(threads)
        pools.close()
    df = store.consolidate()
    if failures:  # every other job ran first; a second sweep does only what is still missing
        raise SweepFailed(failures)
    return df


def one_of_each_kind(arms: list[Arm]) -> list[Arm]:
    """The arms, in order, that first show each value of each factor: dataset, base, T and every label (the
    ``arm`` label only where it is the sole one). The dry run's selection: every kind of arm and every base
    runs at least once, not their cartesian product (finding 2's 12-arm grid becomes 6 arms)."""
    seen: set[tuple[str, Any]] = set()
    kept = []
    for arm in arms:
        labels = {k: v for k, v in arm.labels.items() if k != "arm"} or arm.labels
        kinds = {
            ("dataset", arm.cfg.data.dataset),
            ("segmentor", arm.cfg.segmentor.name),
            ("T", arm.cfg.diffusion.num_steps),
            *labels.items(),
        }
        if kinds - seen:
            kept.append(arm)
            seen |= kinds
    return kept


def check_base_checkpoints(cfgs: list[ExperimentConfig]) -> None:
    """Every base checkpoint file the planned trainings need must exist: one error line lists all that are
    missing (a paper study needs up to twelve zoo files), before the first job starts."""
    from diffseg.config import ConfigError
    from diffseg.segmentors.weights import is_state_file
    from diffseg.segmentors.zoo import CHECKPOINTS_ENV, missing_checkpoints

    files = [c.segmentor.weights for c in cfgs if c.segmentor.weights and is_state_file(c.segmentor.weights)]
    missing = missing_checkpoints(files)
    if missing:
        raise ConfigError(
            f"{len(missing)} base checkpoint file(s) missing: {'; '.join(missing)}; download them there or set "
            f"${CHECKPOINTS_ENV} to the folder that holds them (README: 'Real datasets and GPUs')"
        )


def arms_of(
    name: str,
    profile: str = "cpu",
    datasets: list[str] | None = None,
    segmentors: list[str] | None = None,
    seeds: int | list[int] | None = None,
    device: str = "auto",
    overrides: Any = None,
    levels: Any = None,
) -> list[Arm]:
    """The arms of experiment ``name`` for a profile (datasets / segmentors / seeds default to the profile's).

    ``overrides`` and ``levels`` make it an ablation (`diffseg.study.ablation`): both are checked before any
    arm is built, and every arm of an ablation carries the label ``ablation = <id>``."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment '{name}'; valid experiments: {', '.join(EXPERIMENTS)}")
    profiles._check(profile=profile)
    ablation = make_ablation(name, profile, overrides, levels)
    exp = EXPERIMENTS[name]
    ds = tuple(datasets) if datasets else exp.default_datasets[profile]
    for d in ds:
        profiles._check(dataset=d)
    if seeds is None:
        seed_list: tuple[int, ...] = tuple(range(exp.default_seeds[profile]))
    elif isinstance(seeds, int):
        seed_list = tuple(range(seeds))
    else:
        seed_list = tuple(seeds)
    arms = exp.arms(ablation, ds, tuple(segmentors) if segmentors else None, seed_list)
    if profile == "paper-dry":
        arms = one_of_each_kind(arms)
    if device != "auto":
        for a in arms:
            a.cfg = replace(a.cfg, device=device)
    if not ablation.is_default:
        for a in arms:
            a.labels = {**a.labels, ABLATION_COLUMN: ablation.id}
    return arms


def run_experiment(
    name: str,
    profile: str = "cpu",
    results_dir: str | Path = "results",
    datasets: list[str] | None = None,
    segmentors: list[str] | None = None,
    seeds: int | list[int] | None = None,
    device: str = "auto",
    progress: bool | None = None,
    overrides: Any = None,
    levels: Any = None,
) -> pd.DataFrame:
    """Run what the store lacks for experiment ``name`` and return its rows (an ablation's with ``overrides`` /
    ``levels``, see `arms_of`).

    ``progress``: one line per arm that had work to do; None (the default) prints them only when stderr is a
    terminal, so a notebook's report never carries them (`diffseg.progress.wanted`).
    """
    arms = arms_of(name, profile, datasets, segmentors, seeds, device, overrides, levels)
    return run_arms(arms, name, profile, results_dir, progress)


def run_arms(
    arms: list[Arm],
    name: str,
    profile: str,
    results_dir: str | Path = "results",
    progress: bool | None = None,
) -> pd.DataFrame:
    """Evaluate ``arms`` of experiment ``name`` where the store lacks them, one after the other in this process
    (training or resuming what they need); return their rows. Work on CPU runs on one torch thread, as the
    sweep's workers do, so a notebook that trains writes the rows a sweep would have written (float reductions
    are split by thread: another thread count gives other bits)."""
    from diffseg.progress import JobLog, wanted

    store = open_store(results_dir, profile)
    log = JobLog(f"[{profile}] {name}", len(arms), enabled=wanted(progress))
    ids: list[str] = []
    threads = torch.get_num_threads()
    try:
        for arm in arms:
            todo = bool(missing_rows(arm, name, store))
            t0 = time.perf_counter()
            if todo and cfg_on_cpu(arm.cfg):
                torch.set_num_threads(1)
            ids += run_or_load(arm, name, profile, results_dir)
            torch.set_num_threads(threads)
            if todo:
                log.finished(_job_label(arm.cfg, arm.labels), time.perf_counter() - t0)
            else:
                log.done += 1
    finally:
        torch.set_num_threads(threads)
    return open_store(results_dir, profile).load(list(dict.fromkeys(ids)))


def cfg_on_cpu(cfg: ExperimentConfig) -> bool:
    return cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())


def dataset_info(name: str) -> dict[str, Any]:
    """Class names and palette of a dataset (no data needed)."""
    from diffseg.data import ADE20K_CLASSES, ADE20K_PALETTE, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

    profiles._check(dataset=name)
    if name == "ade20k":
        return {"class_names": tuple(ADE20K_CLASSES), "palette": np.asarray(ADE20K_PALETTE, dtype=np.uint8)}
    return {
        "class_names": tuple(CITYSCAPES_CLASSES),
        "palette": np.asarray(CITYSCAPES_PALETTE, dtype=np.uint8),
    }
