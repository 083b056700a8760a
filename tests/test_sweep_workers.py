"""The sweep's worker processes: started with the malloc settings that keep freed memory in the heap, without
changing the sweep process's own environment; single-threaded on CPU; on CUDA one per visible GPU, each pinned to
its own (tested on CPU: the assignment and the workers' CUDA_VISIBLE_DEVICES)."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest

from diffseg.study import sweep


def _worker_env(keys: list[str]) -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in keys}


def test_workers_start_with_the_malloc_settings_and_the_parent_keeps_its_own(monkeypatch):
    keys = list(sweep.WORKER_MALLOC_ENV)
    for k in keys:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MALLOC_TOP_PAD_", "12345")  # a user's own value wins in the workers
    pool = sweep._spawn_pool(mp.get_context("spawn"), 1)
    try:
        seen = pool.apply(_worker_env, (keys,))
    finally:
        pool.close()
        pool.join()
    assert seen == {**sweep.WORKER_MALLOC_ENV, "MALLOC_TOP_PAD_": "12345"}
    assert {k: os.environ.get(k) for k in keys} == {
        "MALLOC_MMAP_THRESHOLD_": None,
        "MALLOC_TRIM_THRESHOLD_": None,
        "MALLOC_TOP_PAD_": "12345",
    }


def test_jobs_run_in_the_sweep_process_use_one_thread_like_a_pool_worker(tmp_path, monkeypatch):
    """`--workers 1` on CPU runs the jobs in the sweep process: with its default threads they would give other
    numbers (float reductions are split by thread) than the single-threaded workers of a default sweep."""
    import torch

    from diffseg import machines

    seen = []

    def fake_call(job):
        seen.append(torch.get_num_threads())
        return "job", 0.0, None, 0, "cpu", machines.describe()

    monkeypatch.setattr(sweep, "_call", fake_call)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        sweep.sweep("smoke", tmp_path / "results", ["main_results"], workers=1, device="cpu", progress=False)
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2  # the caller's setting is back
    finally:
        torch.set_num_threads(threads)


def test_gpus_are_named_as_cuda_visible_devices_names_them(monkeypatch):
    from diffseg.study import devices

    monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(devices.torch.cuda, "device_count", lambda: 3)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert devices.visible_gpus() == [devices.GPU(0, "0"), devices.GPU(1, "1"), devices.GPU(2, "2")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4, 6,GPU-abc")
    assert [g.name for g in devices.visible_gpus()] == ["4", "6", "GPU-abc"]
    monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: False)
    assert devices.visible_gpus() == []


def test_workers_get_the_gpus_round_robin_and_none_on_cpu():
    from diffseg.study.devices import GPU, worker_devices

    gpus = [GPU(0, "4"), GPU(1, "6")]
    assert worker_devices(2, gpus) == gpus
    assert worker_devices(3, gpus) == [gpus[0], gpus[1], gpus[0]]  # more workers than GPUs share them
    assert worker_devices(2, []) == [None, None]
    with pytest.raises(ValueError, match="workers must be >= 1"):
        worker_devices(0, gpus)


def _pinned(barrier) -> tuple[int, str | None, int]:
    import torch

    barrier.wait()  # every worker holds one task at once: each reports its own pinning
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES"), torch.get_num_threads()


def test_each_pool_worker_is_pinned_to_its_own_gpu(monkeypatch):
    """On a CPU machine too: the pinning is the worker's CUDA_VISIBLE_DEVICES, set before CUDA starts there."""
    from diffseg.study.devices import GPU

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    ctx = mp.get_context("spawn")
    pool = sweep._spawn_pool(ctx, 2, [GPU(0, "4"), GPU(1, "6")])
    try:
        with ctx.Manager() as manager:
            barrier = manager.Barrier(2)
            seen = pool.map(_pinned, [barrier, barrier], chunksize=1)
    finally:
        pool.close()
        pool.join()
    assert len({pid for pid, _, _ in seen}) == 2
    assert sorted(dev for _, dev, _ in seen) == ["4", "6"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,6"  # the sweep process keeps its own


def test_the_default_on_cuda_is_one_worker_per_visible_gpu(tmp_path, monkeypatch):
    from diffseg.study.devices import GPU

    pools = []
    monkeypatch.setattr(sweep.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(sweep, "visible_gpus", lambda: [GPU(i, str(i)) for i in range(4)])

    class NoPool:
        def imap_unordered(self, fn, jobs):
            return iter([])

        def close(self):
            pass

        def join(self):
            pass

    def fake_pool(ctx, workers, gpus=None):
        pools.append((workers, gpus))
        return NoPool()

    from diffseg.study import workers

    monkeypatch.setattr(workers, "spawn_pool", fake_pool)
    sweep.sweep("smoke", tmp_path / "results", ["main_results"], device="cuda", progress=False)
    assert pools == [(4, [GPU(i, str(i)) for i in range(4)])]
    # --gpus-per-job 2: trainings on two workers of two GPUs each, evaluations on one worker per GPU
    pools.clear()
    sweep.sweep("smoke", tmp_path / "r2", ["main_results"], device="cuda", progress=False, gpus_per_job=2)
    assert sorted(pools) == [(2, [GPU(0, "0,1"), GPU(2, "2,3")]), (4, [GPU(i, str(i)) for i in range(4)])]
    with pytest.raises(ValueError, match=r"--gpus-per-job 8 .* sees 4 \(0, 1, 2, 3\)"):
        sweep.sweep("smoke", tmp_path / "r3", ["main_results"], device="cuda", progress=False, gpus_per_job=8)


def test_a_notebook_that_trains_uses_one_thread_like_a_sweep_worker(tmp_path, monkeypatch):
    """`run_arms` (what a notebook calls) trains missing arms on one torch thread, as the sweep's workers do,
    and gives the caller its thread count back."""
    import torch

    seen = []

    def fake_run_or_load(arm, name, profile, results_dir, progress=False):
        seen.append(torch.get_num_threads())
        return []

    monkeypatch.setattr(sweep, "run_or_load", fake_run_or_load)
    arms = sweep.arms_of("schedule_and_T", "smoke", device="cpu")[:2]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        sweep.run_arms(arms, "schedule_and_T", "smoke", tmp_path / "results")
        assert seen == [1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_a_failing_local_job_is_named_and_the_others_still_run(tmp_path, monkeypatch):
    """A job that raises does not stop the sweep: every other job runs, then the sweep fails listing it (its
    name, its error's last line, where its log is), and the CLI prints one line per failure and exits 1."""
    from diffseg import machines
    from diffseg.cli import main
    from diffseg.study.failures import SweepFailed

    ran = []

    def fake_call(job):
        kind, args, name = job
        ran.append(kind)
        if kind == "train" and ran.count("train") == 1:
            raise RuntimeError("the loss went away\nCUDA error: out of memory")
        return "job", 0.0, None, 0, "cpu", machines.describe()

    monkeypatch.setattr(sweep, "_call", fake_call)
    monkeypatch.setenv("DIFFSEG_DATA", str(tmp_path / "data"))
    with pytest.raises(SweepFailed) as err:
        sweep.sweep("smoke", tmp_path / "results", ["main_results"], workers=1, device="cpu", progress=False)
    assert len(err.value.failures) == 1
    f = err.value.failures[0]
    assert f.name.startswith("train ") and f.error == "RuntimeError: CUDA error: out of memory"
    assert f.log.endswith("log.csv")
    assert ran.count("train") == 2 and "eval" in ran  # the other refiner and the evaluations still ran
    ran.clear()
    args = [
        "sweep",
        "--profile",
        "smoke",
        "--results",
        str(tmp_path / "cli"),
        "--experiments",
        "main_results",
    ]
    assert main([*args, "--workers", "1"]) == 1


@pytest.mark.long
def test_a_grouped_training_runs_as_one_gloo_job_and_its_errors_come_back(tmp_path, monkeypatch):
    """``--gpus-per-job 2`` on CPU: a base training runs as 2 gloo ranks in a child interpreter (rank 0 writes the
    weights), its result names the group; a rank's error comes back as one line naming the config key."""
    from diffseg.config import apply_overrides
    from diffseg.profiles import profile_config
    from diffseg.study.execution import base_weights_path
    from diffseg.study.process_group import run_grouped

    cfg = apply_overrides(
        profile_config("smoke", "ade20k"),
        {"data.root": str(tmp_path / "data"), "segmentor.train_iterations": 4, "device": "cpu"},
    )
    runs = tmp_path / "runs"
    label, _, iterations, _, device, _ = run_grouped(("base", (cfg, runs), ""), 2)
    assert device == "cpu x2" and iterations == 4 and base_weights_path(cfg, runs).exists()
    odd = apply_overrides(cfg, {"data.batch_size": 7})
    with pytest.raises(
        RuntimeError, match=r"^rank \d: ValueError: config key 'data.batch_size' .* 1, 7 processes"
    ):
        run_grouped(("base", (odd, runs), ""), 2)
