"""The sweep through a real Slurm cluster (submitit): the same rows as the local sweep, failures reported by
name with their log, a restarted driver re-attaching to the jobs it submitted. `.ci/run` starts a one-node
cluster (`.ci/slurm-up.sh`); without one these tests skip, saying so."""

from __future__ import annotations

import shutil
import subprocess
import time

import pandas as pd
import pytest

from diffseg import experiments as ex
from diffseg.study.slurm import Failure, SlurmExecutor, SlurmOptions, parse_extra


def _cluster() -> str | None:
    if shutil.which("sinfo") is None:
        return "no Slurm client (sinfo) on this machine; .ci/slurm-up.sh starts a one-node cluster"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return f"sinfo failed: {e}"
    if out.returncode != 0 or not any(s in out.stdout for s in ("idle", "mix", "alloc")):
        return f"no Slurm node up (sinfo: {(out.stdout + out.stderr).strip()[:200]}); run .ci/slurm-up.sh"
    return None


pytestmark = [pytest.mark.slurm, pytest.mark.skipif(_cluster() is not None, reason=str(_cluster()))]

KEYS = ["run_id", "method", "step", "t", "test", "metric", "class_name", "curve"]


def _rows(df: pd.DataFrame) -> pd.DataFrame:
    out = df[[*KEYS, "value"]].copy()
    out["curve"] = out["curve"].fillna("")
    return out.sort_values(KEYS).reset_index(drop=True)


@pytest.mark.long
def test_a_smoke_sweep_through_slurm_gives_the_local_sweeps_rows_bit_for_bit(tmp_path, monkeypatch) -> None:
    """Submitted without waiting (every phase at once), shown by --status, then waited for by the same sweep
    started again, which re-attaches to the recorded jobs: the local sweep's rows, value for value."""
    from diffseg.study.slurm_sweep import status

    monkeypatch.setenv("DIFFSEG_DATA", str(tmp_path / "data"))  # the Slurm jobs inherit it
    local = ex.sweep("smoke", tmp_path / "local" / "results", ["main_results"], workers=2, progress=False)
    results = tmp_path / "slurm" / "results"
    ex.sweep(
        "smoke", results, ["main_results"], executor="slurm", slurm=SlurmOptions(), wait=False, progress=False
    )
    arms = [("main_results", a) for a in ex.arms_of("main_results", "smoke")]
    assert "slurm jobs: pending" in status(arms, "smoke", results)
    record = (results / "smoke" / "slurm" / "jobs.json").read_text()
    slurm = ex.sweep(
        "smoke", results, ["main_results"], executor="slurm", slurm=SlurmOptions(), progress=False
    )
    assert (
        results / "smoke" / "slurm" / "jobs.json"
    ).read_text() == record  # re-attached, nothing resubmitted
    assert len(local) and _rows(local).equals(_rows(slurm))
    assert "train-" in record and "eval-" in record and "base-" in record
    assert status(arms, "smoke", results).startswith("[smoke] store") and "complete" in status(
        arms, "smoke", results
    )


def test_a_failing_job_is_reported_with_its_error_and_log_and_the_rest_still_run(tmp_path) -> None:
    ex_ = SlurmExecutor(tmp_path / "slurm", "smoke", poll_s=1.0)
    done = []
    # an "eval" job whose argument is no arm: it raises inside the job, on the node
    jobs = [("eval", ("not an arm",), "the broken job")]
    failures = ex_.run(jobs, ["eval-broken"], done.append)
    assert not done and len(failures) == 1
    f = failures[0]
    assert isinstance(f, Failure) and f.name == "the broken job" and "AttributeError" in f.error
    assert f.log.endswith("_log.err") and "broken job" in f.line()


def test_a_restarted_driver_reattaches_to_its_running_jobs(tmp_path) -> None:
    import submitit

    folder = tmp_path / "slurm"
    first = SlurmExecutor(folder, "smoke")
    sub = submitit.AutoExecutor(folder=folder / "logs", cluster="slurm")
    sub.update_parameters(timeout_min=5, cpus_per_task=1)
    job = sub.submit(time.sleep, 30)
    first.record.update({"train-abc": job.job_id})
    try:
        again = SlurmExecutor(folder, "smoke").attach("train-abc")  # a new driver, the same record
        assert again is not None and again.job_id == job.job_id
        assert SlurmExecutor(folder, "smoke").attach("train-unknown") is None
    finally:
        job.cancel(check=False)


def test_slurm_options_override_the_profiles_resources() -> None:
    opts = SlurmOptions(partition="gpu", time_min=90, gpus_per_job=4, extra=parse_extra(["constraint=a100"]))
    params = opts.parameters("paper", "train")
    assert params["slurm_partition"] == "gpu" and params["timeout_min"] == 90 and params["gpus_per_node"] == 4
    assert params["slurm_additional_parameters"] == {"constraint": "a100"} and params["cpus_per_task"] == 8
    assert params["tasks_per_node"] == 4  # one DDP rank per GPU
    evaluation = opts.parameters("paper", "eval")  # evaluations keep one task and their one GPU
    assert evaluation["gpus_per_node"] == 1 and "tasks_per_node" not in evaluation
    assert SlurmOptions(tasks_per_node=2, nodes=2).parameters("smoke", "base")["tasks_per_node"] == 2
    assert SlurmOptions().parameters("smoke", "eval")["cpus_per_task"] == 1
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        parse_extra(["constraint"])


def test_a_two_task_gloo_training_through_slurm_trains_the_one_process_weights(tmp_path) -> None:
    """A refiner training submitted with two tasks (``--slurm-tasks-per-node 2``) runs as one gloo DDP job whose
    ranks ignite builds from Slurm's environment, sharing the global batch: its weights are the 1-process
    training's up to float summation order (the bound of the 2-process test in test_engines.py)."""
    import torch

    from diffseg.config import apply_overrides
    from diffseg.engines import build_models, load_latest_checkpoint
    from diffseg.profiles import profile_config
    from diffseg.study.execution import train_base
    from diffseg.study.identity import train_id
    from diffseg.study.sweep import _call

    cfg = apply_overrides(
        profile_config("smoke", "ade20k"),
        {"data.root": str(tmp_path / "data"), "segmentor.train_iterations": 6, "device": "cpu"},
    )
    base = train_base(cfg, tmp_path / "base")  # one fixed base for both
    cfg = apply_overrides(
        cfg,
        {"segmentor.weights": base, "train.stage1_iterations": 0, "train.stage2_iterations": 4},
    )
    job = ("train", (cfg, tmp_path / "slurm-runs"), "two ranks")
    ex_ = SlurmExecutor(tmp_path / "slurm", "smoke", SlurmOptions(tasks_per_node=2), poll_s=1.0)
    done: list = []
    assert ex_.run([job], ["train-two-ranks"], done.append) == []
    assert done and done[0][4] == "cpu x2"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _call(("train", (cfg, tmp_path / "local-runs"), "one process"))
    finally:
        torch.set_num_threads(threads)
    one, _ = load_latest_checkpoint(tmp_path / "local-runs" / train_id(cfg) / "checkpoints")
    two, _ = load_latest_checkpoint(tmp_path / "slurm-runs" / train_id(cfg) / "checkpoints")
    assert one["iteration"] == two["iteration"] == 4
    _, fresh = build_models(cfg, torch.device("cpu"), base, num_classes=150)
    initial = fresh.denoiser.state_dict()
    for key, w in one["denoiser"].items():
        if w.is_floating_point():
            moved = (w - initial[key]).abs().max().item()
            assert (w - two["denoiser"][key]).abs().max().item() <= 1e-2 * moved, (key, moved)


def _curve(run_dir) -> str:
    return (run_dir / "curve.csv").read_text()


def _final_denoiser(run_dir) -> dict:
    import os

    import torch

    state = torch.load(max((run_dir / "checkpoints").glob("*.pt"), key=os.path.getmtime), weights_only=True)
    return {"iteration": state["iteration"], **{f"denoiser.{k}": v for k, v in state["denoiser"].items()}}


@pytest.mark.slow
def test_a_job_signalled_as_at_its_time_limit_is_requeued_and_resumes_to_the_uninterrupted_result(
    tmp_path, monkeypatch
) -> None:
    """A refiner training gets the signal Slurm sends before a time limit (USR2, which submitit turns into a
    checkpoint and a requeue) once its stage 2 has a checkpoint; requeued (Slurm holds it ~2 min), it resumes
    from that checkpoint and ends with the weights and curve of the same training run without interruption.
    Slow: the hold is Slurm's."""
    import submitit
    import torch

    from diffseg.config import apply_overrides
    from diffseg.profiles import profile_config
    from diffseg.study.execution import ensure_trained
    from diffseg.study.identity import train_id
    from diffseg.study.slurm import SweepTask

    monkeypatch.setenv("DIFFSEG_DATA", str(tmp_path / "data"))
    cfg = apply_overrides(profile_config("smoke", "ade20k", seed=3), ["train.stage2_iterations=300"])
    runs = tmp_path / "slurm-runs"
    sub = submitit.AutoExecutor(folder=tmp_path / "logs", cluster="slurm")
    sub.update_parameters(timeout_min=30, cpus_per_task=1, slurm_signal_delay_s=60)
    job = sub.submit(SweepTask(), ("train", (cfg, runs), "requeue test"))
    ckpts = runs / train_id(cfg) / "checkpoints"
    deadline = time.time() + 600
    while not any(ckpts.glob("*.pt")) and not job.done() and time.time() < deadline:
        time.sleep(0.5)
    assert not job.done(), "the training finished before it could be signalled: give it more iterations"
    subprocess.run(["scancel", "--signal=USR2", str(job.job_id)], check=True)
    job.result()  # waits through the requeue
    attempts = (runs / train_id(cfg) / "attempts.csv").read_text().splitlines()
    assert len([a for a in attempts[1:] if a]) >= 2, f"no resume recorded: {attempts}"
    # the same training, uninterrupted, here (one thread, as the Slurm task)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref, _ = ensure_trained(cfg, tmp_path / "local-runs")
    finally:
        torch.set_num_threads(threads)
    got = _final_denoiser(runs / train_id(cfg))
    want = _final_denoiser(ref)
    assert got.keys() == want.keys() and got.pop("iteration") == want.pop("iteration")
    assert all(torch.equal(got[k], want[k]) for k in got), "the requeued training's weights differ"
    assert _curve(runs / train_id(cfg)) == _curve(ref)
