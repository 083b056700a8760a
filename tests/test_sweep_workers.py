"""The sweep's worker processes: started with the malloc settings that keep freed memory in the heap, without
changing the sweep process's own environment."""

from __future__ import annotations

import multiprocessing as mp
import os

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

    seen = []

    def fake_call(job):
        seen.append(torch.get_num_threads())
        return "job", 0.0, None, 0, "cpu"

    monkeypatch.setattr(sweep, "_call", fake_call)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        sweep.sweep("smoke", tmp_path / "results", ["main_results"], workers=1, device="cpu", progress=False)
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2  # the caller's setting is back
    finally:
        torch.set_num_threads(threads)
