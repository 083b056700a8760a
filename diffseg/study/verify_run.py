"""Running `diffseg verify`: the sample's re-trainings in a temporary folder on single-threaded worker processes,
the comparison table on stdout, one progress line per training on stderr, and an exit status (0: every point
identical, or within ``--tolerance``).

Nothing is written under the results store or ``runs/``: trainings go to a temporary folder that is removed at the
end, and the machine this runs on is described, not registered. A base that a local ``runs/`` folder already
holds is read (hard-linked into the temporary run folder), never changed. The synthetic profiles' data are
written to ``data/`` if missing, as the sweep does.

Threads and kernels decide the bits: the sweep's workers run one thread each, so verify's do too (``--threads``),
and ``--cpu-kernels`` sets which CPU kernels torch (``ATEN_CPU_CAPABILITY``), oneDNN (``ONEDNN_MAX_CPU_ISA``) and
MKL (``MKL_ENABLE_INSTRUCTIONS``) may use in the workers; by default the level of the machine that made the rows
when the store records it, else AVX2 (the level the committed cpu store was reproduced at, README), where this
CPU has it.
"""

from __future__ import annotations

import os
import queue
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from diffseg import machines
from diffseg.study.verify import GPU_TOLERANCE, Check, lines_of, plan, report

KERNELS = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "avx512": {
        "ATEN_CPU_CAPABILITY": "avx512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
        "MKL_ENABLE_INSTRUCTIONS": "AVX512",
    },
    "native": {},  # none set: every kernel this CPU has
}


def _init_worker(threads: int) -> None:
    import torch

    from diffseg.study.workers import die_with_parent

    torch.set_num_threads(threads)
    die_with_parent()


def _run_base(cfg, folder: str, stop_after: int | None) -> dict[str, Any]:
    """Train ``cfg``'s base in ``folder`` (to ``stop_after``, or to its end); its curve and this machine."""
    from diffseg import curves
    from diffseg.engines import train_base_segmentor
    from diffseg.study.identity import base_weights_path

    t0 = time.perf_counter()
    out = base_weights_path(cfg, Path(folder))
    train_base_segmentor(cfg, out, progress=False, stop_after=stop_after)
    frame = curves.read(out.parent, curves.BASE_CURVE_FILE)
    return {
        "curve": frame,
        "seconds": time.perf_counter() - t0,
        "machine": machines.describe(),
        "weights": str(out) if out.exists() else None,
    }


def _run_refiner(cfg, folder: str, base_weights: str | None, point: int) -> dict[str, Any]:
    """Train ``cfg``'s refiner in ``folder`` up to iteration ``point`` (through its shared stage 1 when it trains
    two stages, as the sweep does), with the frozen base ``base_weights``; its curve and this machine."""
    from diffseg import curves
    from diffseg.engines import training
    from diffseg.study.identity import is_two_stage, stage1_config, train_id

    t0 = time.perf_counter()
    root = Path(folder)
    s1 = cfg.train.stage1_iterations
    frames = []
    init = None
    if is_two_stage(cfg):
        s1cfg = stage1_config(cfg)
        init = root / "stage1" / train_id(s1cfg)
        stop = point if point < s1 else None
        training(
            s1cfg, init, progress=False, evaluate_at_end=False, stop_after=stop, base_weights=base_weights
        )
        frames.append(curves.read(init))
    if not is_two_stage(cfg) or point > s1:
        total = s1 + cfg.train.stage2_iterations
        run_dir = root / train_id(cfg)
        stop = point if point < total else None
        training(
            cfg,
            run_dir,
            progress=False,
            evaluate_at_end=False,
            stop_after=stop,
            base_weights=base_weights,
            init_from=init,
        )
        frames.append(curves.read(run_dir))
    frame = pd.concat(frames, ignore_index=True)
    return {"curve": frame, "seconds": time.perf_counter() - t0, "machine": machines.describe()}


def default_kernels(committed: pd.DataFrame, unrecorded: bool) -> tuple[str, str]:
    """(``--cpu-kernels`` level, why) for rows made on the machines ``committed`` (their table lines);
    ``unrecorded``: some of the rows name no machine."""
    import torch

    here = str(torch.backends.cpu.get_cpu_capability()).lower()
    levels = {str(c).lower() for c in committed["cpu_capability"]}
    if not unrecorded and len(levels) == 1 and levels <= set(KERNELS):
        level = levels.pop()
        why = f"the level recorded for the machine that made the rows, {level.upper()}"
        return ("native" if level == here else level), why
    if here in ("avx2", "avx512"):  # x86 with AVX2 at least
        why = "the machine that made the rows is unrecorded; the committed cpu store reproduces at AVX2 (README)"
        return "avx2", why
    return "native", "the machine that made the rows is unrecorded"


def verify(
    profile: str = "cpu",
    results_dir: str | Path = "results",
    sample: int | None = None,
    everything: bool = False,
    tolerance: float | None = None,
    device: str | None = None,
    cpu_kernels: str | None = None,
    workers: int | None = None,
    threads: int = 1,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Re-make the sample's first curve points (`diffseg.study.verify.plan`) and compare them with the store's;
    returns the exit status: 0 when every point matches and every sampled training's config is the code's.

    ``workers``: processes (default: one per core on CPU, one on CUDA); 0 runs in this process (tests: the
    kernel limits of ``cpu_kernels`` then do not apply). ``device``: default the one the rows record.
    """
    import torch

    from diffseg.study.store import open_store, runs_folder

    out, err = out or sys.stdout, err or sys.stderr
    store = open_store(results_dir, profile)
    rows = store.load()
    if rows.empty:
        raise FileNotFoundError(f"{store.root} holds no results to verify (no rows under {store.rows_dir})")
    table = machines.load(store.root)
    runs = runs_folder(results_dir, profile)
    curves_rows = rows[rows["experiment"] == "learning_curves"]
    local = (
        {f"curve-base-{p.parent.name}" for p in (runs / "base").glob("*/base.safetensors")}
        if (runs / "base").is_dir()
        else set()
    )
    pl = plan(rows, profile, sample, everything, local)
    recorded = (
        curves_rows["device"].dropna().astype(str) if "device" in curves_rows.columns else pd.Series([])
    )
    device = device or (recorded.mode().iloc[0] if len(recorded) else "auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"verify: the rows were made on {device}, which this machine lacks; training on cpu", file=err)
        device = "cpu"
    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    made_by = table[table["machine"].isin(set(curves_rows["machine"]))]
    if tolerance is None:
        deterministic = len(made_by) > 0 and set(made_by["deterministic"]) == {"true"}
        tolerance = GPU_TOLERANCE if on_gpu and not deterministic else 0.0
    why = "given"
    if cpu_kernels is None:
        cpu_kernels, why = default_kernels(made_by, machines.UNRECORDED in set(curves_rows["machine"]))
    if cpu_kernels not in KERNELS:
        raise ValueError(f"--cpu-kernels must be one of {', '.join(KERNELS)}, got {cpu_kernels!r}")
    if workers is None:
        workers = 1 if on_gpu else (os.cpu_count() or 1)
    for c in pl.checks:
        if c.cfg is not None:
            c.cfg = _on(c.cfg, device)
    _ensure_data(pl.checks)
    runnable = [c for c in pl.checks if c.cfg is not None]
    bases = [c for c in runnable if c.kind == "base"]
    refs = [c for c in runnable if c.kind == "refiner"]
    n_full = sum(c.full_base for c in bases)
    lines = [
        f"verify {profile}: {len(pl.checks)} of {len(pl.checks) + pl.skipped} stored trainings (--all: every "
        "one; --sample N: the first N)",
        f"  {len(bases)} base segmentor(s): {n_full} trained to their end (the sampled refiners need them, and "
        f"then every point of their curve is compared), {len(bases) - n_full} to their first curve point",
        f"  {len(refs)} refiner(s) to their first curve point",
        "  trade-off: run folders are not committed, so a refiner's first point costs its base's whole training "
        f"here, unless {_shown(runs / 'base')} holds that base (then it is reused, read only)",
        f"  {workers} worker(s) x {threads} thread(s), CPU kernels {cpu_kernels} ({why}), device {device}, "
        f"tolerance {tolerance:g}",
    ]
    print("\n".join(lines), file=err)
    for note in pl.notes:
        print(f"verify: {note}", file=err)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="diffseg-verify-") as tmp:
        results = _run_all(pl.checks, tmp, runs, workers, threads, cpu_kernels, tolerance, rows, err)
    return report(pl.checks, results, rows, table, device, tolerance, time.perf_counter() - t0, out)


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when inside it (the terminal's view), else as it is."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _on(cfg, device: str):
    from diffseg.config import replace

    return replace(cfg, device=device)  # the device is not part of a training's identity


def _ensure_data(checks: list[Check]) -> None:
    from diffseg.data import ensure_synthetic

    for data in {c.cfg.data.root: c.cfg.data for c in checks if c.cfg is not None}.values():
        if data.synthetic:
            ensure_synthetic(data)


def _run_all(checks, tmp, runs, workers, threads, kernels, tolerance, rows, err) -> dict[str, dict[str, Any]]:
    """Every runnable check, bases first (longest first) and each refiner as soon as its base is there.

    Refiners whose first point comes from one training (arms sharing a stage 1) are trained once, and each job
    has its own folder, so two workers never write one run folder."""
    import torch

    from diffseg.study.identity import base_weights_path
    from diffseg.study.verify import first_point_training

    results: dict[str, dict[str, Any]] = {}
    bases = sorted(
        (c for c in checks if c.kind == "base" and c.cfg is not None),
        key=lambda c: (not c.full_base, -c.cfg.segmentor.train_iterations),
    )
    groups: dict[tuple[str, int], list[Check]] = {}
    for c in checks:
        if c.kind == "refiner" and c.cfg is not None:
            groups.setdefault((first_point_training(c.cfg), c.points[0]), []).append(c)
    waiting: dict[str, list[list[Check]]] = {}
    ready: list[tuple[list[Check], str | None]] = []
    full = {c.key for c in bases if c.full_base}
    for group in groups.values():
        c = group[0]
        local = base_weights_path(c.cfg, runs)
        if c.base_key in full:
            waiting.setdefault(c.base_key, []).append(group)
        elif c.base_key and local.exists():
            ready.append((group, str(local)))  # read only: hard-linked into the temporary run folder
        else:
            ready.append(
                (group, None)
            )  # a base that brings its own weights, or one the training makes itself
    total = len(bases) + sum(len(g) for g in groups.values())
    done: queue.Queue = queue.Queue()
    folders = iter(range(1_000_000))

    def submit(call, group: list[Check], *args: Any) -> None:
        args = (group[0].cfg, str(Path(tmp) / f"job{next(folders)}"), *args)
        if pool is None:
            try:
                done.put((group, call(*args), None))
            except Exception as e:  # a failed training is a failed check, named in the table
                done.put((group, None, e))
            return
        pool.apply_async(
            call,
            args,
            callback=lambda r: done.put((group, r, None)),
            error_callback=lambda e: done.put((group, None, e)),
        )

    pool = _pool(workers, threads, kernels) if workers > 0 else None
    own_threads = torch.get_num_threads()
    if pool is None:
        torch.set_num_threads(threads)  # in this process: its thread count for the trainings, then back
    try:
        for c in bases:
            submit(_run_base, [c], None if c.full_base else c.points[0])
        for group, weights in ready:
            submit(_run_refiner, group, weights, group[0].points[0])
        while len(results) < total:
            group, res, error = done.get()
            if res is not None and group[0].full_base:
                group[0].points = sorted(int(i) for i in res["curve"]["iteration"].unique())
                for g in waiting.pop(group[0].key, []):
                    submit(_run_refiner, g, res.get("weights"), g[0].points[0])
            failed = [] if res is not None else waiting.pop(group[0].key, [])
            for check in group + [c for g in failed for c in g]:
                if res is not None:
                    results[check.key] = res
                elif check in group:
                    results[check.key] = {"error": f"{type(error).__name__}: {error}"}
                else:
                    results[check.key] = {"error": f"its base ({group[0].label}) failed to train"}
                _progress(check, results[check.key], rows, tolerance, len(results), total, err)
    finally:
        torch.set_num_threads(own_threads)
        if pool is not None:
            pool.close()
            pool.join()
    return results


def _pool(workers: int, threads: int, kernels: str):
    """Spawned workers with the sweep's malloc settings and the kernel limits of ``kernels`` in their environment
    (this process's own environment is restored at once)."""
    import multiprocessing as mp

    from diffseg.study.workers import WORKER_MALLOC_ENV, worker_environment

    env = {**{k: None for k in machines.KERNEL_ENV}, **KERNELS[kernels]}
    with worker_environment(WORKER_MALLOC_ENV, env):
        return mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(threads,))


def _progress(check, res, rows, tolerance, i, total, err) -> None:
    if "error" in res:
        print(f"[verify {i}/{total}] {check.label}: FAILED ({res['error']})", file=err)
        return
    lines = lines_of(check, res, rows, tolerance)
    same = sum(line["match"] for line in lines)
    how = "to its end" if check.full_base else f"to iteration {check.points[0]}"
    print(
        f"[verify {i}/{total}] {check.label} ({how}): {same}/{len(lines)} value(s) match, {res['seconds']:.1f} s",
        file=err,
    )
