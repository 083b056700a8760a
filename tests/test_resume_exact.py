"""Exact resume on CPU: a training stopped at any phase boundary or between checkpoints (base segmentor, stage 1,
stage 2), then run again, ends with the numbers of an uninterrupted run, bit for bit; repeated runs agree too.

The stop is in-process: an ignite handler raises after iteration k of one trainer, as a SIGKILL there would leave
the run folder (its checkpoints, log and curves as written so far); `test_engines.py` and the SIGKILL case below
kill a real process.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from safetensors.torch import load_file

import diffseg.engines.base_training as base_training
import diffseg.engines.runner as runner
from diffseg.config import apply_overrides
from diffseg.engines import training
from diffseg.profiles import profile_config

ROOT = Path(__file__).resolve().parents[1]


def tiny_cfg(data_root: Path, **overrides):
    """`test_engines.tiny_cfg` (seconds per training), every iteration logged, a curve point every 5."""
    base = {
        "data.root": str(data_root),
        "data.synth_n_train": 16,
        "data.synth_n_val": 4,
        "segmentor.train_iterations": 20,
        "train.stage1_iterations": 10,
        "train.stage2_iterations": 10,
        "train.checkpoint_every": 5,
        "train.log_every": 1,
        "train.eval_every": 5,
        "device": "cpu",
    }
    return apply_overrides(profile_config("smoke", "ade20k"), {**base, **overrides})


class Killed(RuntimeError):
    """Stands for a SIGKILL after an iteration."""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data") / "ade20k"


def _kill_after(monkeypatch, job: str, iteration: int, when: str = "before_checkpoint") -> None:
    """Make trainer ``job`` ("base" or "refiner") raise `Killed` at iteration ``iteration``: ``when`` is
    "before_checkpoint" (after its log row and curve point, before its checkpoint, if it has one) or
    "after_checkpoint" (right after its checkpoint is written)."""
    module = base_training if job == "base" else runner
    if when == "after_checkpoint":
        original_save = module.save_checkpoint

        def save(ckpt_dir, it, state, *args, **kwargs):
            path = original_save(ckpt_dir, it, state, *args, **kwargs)
            if it == iteration:
                raise Killed(f"{job} stopped after its checkpoint {it}")
            return path

        monkeypatch.setattr(module, "save_checkpoint", save)
        return
    original = module.attach_logging

    def attach(trainer, run_dir, cfg, progress, desc):
        original(trainer, run_dir, cfg, progress, desc)

        @trainer.on(Events.ITERATION_COMPLETED(once=iteration))
        def _kill(_):
            raise Killed(f"{desc} stopped after iteration {iteration}")

    monkeypatch.setattr(module, "attach_logging", attach)


def _log_values(run_dir: Path) -> list[list[str]]:
    """log.csv without its wall-clock column."""
    with (run_dir / "log.csv").open(newline="") as f:
        return [row[:5] for row in csv.reader(f)]


def _assert_same_run(a: Path, b: Path) -> None:
    """Every number two finished run folders hold: base weights, final refiner state, metrics, log, curves."""
    wa, wb = load_file(a / "base.safetensors"), load_file(b / "base.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"base.safetensors: {k} differs between {a} and {b}"
    sa = torch.load(max((a / "checkpoints").glob("*.pt"), key=os.path.getmtime), weights_only=True)
    sb = torch.load(max((b / "checkpoints").glob("*.pt"), key=os.path.getmtime), weights_only=True)
    assert sa["iteration"] == sb["iteration"]
    for key in ("denoiser", "ema"):
        for name, t in (sa[key] or {}).items():
            assert torch.equal(t, sb[key][name]), (
                f"final checkpoint: {key}.{name} differs between {a} and {b}"
            )
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    for key in ("base", "refined", "t"):
        assert ma[key] == mb[key], f"metrics.json: {key} differs between {a} and {b}"
    la, lb = _log_values(a), _log_values(b)
    assert la == lb, f"log.csv differs between {a} and {b}"
    for name in ("curve.csv", "base_curve.csv"):
        assert (a / name).read_text() == (b / name).read_text(), f"{name} differs between {a} and {b}"


def _no_repeated_iteration(run_dir: Path) -> None:
    rows = _log_values(run_dir)[1:]
    keys = [(r[0], int(r[1])) for r in rows]
    assert len(keys) == len(set(keys)), f"{run_dir / 'log.csv'} repeats an iteration: {keys}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_root) -> Path:
    run_dir = tmp_path_factory.mktemp("straight") / "r"
    training(tiny_cfg(data_root), run_dir, progress=False)
    return run_dir


# (trainer, iteration, when): base checkpoints every 5 of 20 iterations; the refiner's stage 1 is iterations
# 1-10, stage 2 11-20, checkpoints every 5. "before" stops after the iteration's log row and curve point but before
# its checkpoint; "after" right after the checkpoint.
STOPS = {
    "base-mid-phase": ("base", 7, "before_checkpoint"),
    "base-before-checkpoint": ("base", 10, "before_checkpoint"),
    "base-after-checkpoint": ("base", 10, "after_checkpoint"),
    "base-end-before-weights": ("base", 20, "after_checkpoint"),
    "stage1-first-iteration": ("refiner", 1, "before_checkpoint"),
    "stage1-mid-phase": ("refiner", 7, "before_checkpoint"),
    "stage1-to-stage2-before-checkpoint": ("refiner", 10, "before_checkpoint"),
    "stage1-to-stage2-after-checkpoint": ("refiner", 10, "after_checkpoint"),
    "stage2-mid-phase": ("refiner", 13, "before_checkpoint"),
    "stage2-end-before-metrics": ("refiner", 20, "after_checkpoint"),
}


@pytest.mark.parametrize("where", list(STOPS))
def test_a_stopped_training_resumes_to_the_uninterrupted_numbers(
    where, tmp_path, data_root, uninterrupted, monkeypatch
) -> None:
    job, iteration, when = STOPS[where]
    run_dir = tmp_path / "r"
    cfg = tiny_cfg(data_root)
    with monkeypatch.context() as m:
        _kill_after(m, job, iteration, when)
        with pytest.raises(Killed):
            training(cfg, run_dir, progress=False)
    assert not (run_dir / "metrics.json").exists()
    training(cfg, run_dir, progress=False)
    _no_repeated_iteration(run_dir)
    _assert_same_run(uninterrupted, run_dir)


def test_stopped_twice_in_the_base_resumes_exactly(tmp_path, data_root, uninterrupted, monkeypatch) -> None:
    run_dir = tmp_path / "r"
    cfg = tiny_cfg(data_root)
    for iteration in (6, 13):
        with monkeypatch.context() as m:
            _kill_after(m, "base", iteration)
            with pytest.raises(Killed):
                training(cfg, run_dir, progress=False)
    training(cfg, run_dir, progress=False)
    _no_repeated_iteration(run_dir)
    _assert_same_run(uninterrupted, run_dir)


@pytest.mark.parametrize("job", ["base", "refiner"])
def test_resuming_with_another_thread_count_warns(job, tmp_path, data_root, monkeypatch) -> None:
    """CPU numbers depend on the torch thread count: a resume with another one continues, but says it is not
    exact and how to make it so."""
    run_dir = tmp_path / "r"
    cfg = tiny_cfg(data_root)
    with monkeypatch.context() as m:
        _kill_after(m, job, 7)
        with pytest.raises(Killed):
            training(cfg, run_dir, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        with pytest.warns(UserWarning, match=f"OMP_NUM_THREADS={threads} to resume exactly"):
            training(cfg, run_dir, progress=False, evaluate_at_end=False)
    finally:
        torch.set_num_threads(threads)


def test_repeated_uninterrupted_runs_are_identical(tmp_path, data_root, uninterrupted) -> None:
    for i in range(2):  # with the fixture's, three runs
        run_dir = tmp_path / f"r{i}"
        training(tiny_cfg(data_root), run_dir, progress=False)
        _no_repeated_iteration(run_dir)
        _assert_same_run(uninterrupted, run_dir)


def _train_cmd(run_dir: Path, data_root: Path) -> list[str]:
    overrides = {
        "data.root": data_root,
        "data.synth_n_train": 16,
        "data.synth_n_val": 4,
        "segmentor.train_iterations": 60,
        "train.stage1_iterations": 5,
        "train.stage2_iterations": 5,
        "train.checkpoint_every": 5,
        "train.log_every": 1,
        "device": "cpu",
    }
    return [
        sys.executable,
        "-m",
        "diffseg",
        "train",
        "--profile",
        "smoke",
        "--out",
        str(run_dir),
        "--no-progress",
    ] + [f"{k}={v}" for k, v in overrides.items()]


@pytest.mark.long
def test_base_killed_by_sigkill_after_a_checkpoint_resumes_exactly(tmp_path, data_root) -> None:
    """The issue's case: a real process killed after the base's first checkpoint, while the base still trains."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_train_cmd(straight, data_root), check=True, env=env, capture_output=True, cwd=ROOT)
    proc = subprocess.Popen(
        _train_cmd(killed, data_root), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    first = killed / "base_checkpoints" / "checkpoint_5.pt"
    while proc.poll() is None and not first.exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists() and not (killed / "base.safetensors").exists(), "the base finished before the kill"
    subprocess.run(_train_cmd(killed, data_root), check=True, env=env, capture_output=True, cwd=ROOT)
    _no_repeated_iteration(killed)
    _assert_same_run(straight, killed)
