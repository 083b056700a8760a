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
    assert SlurmOptions().parameters("smoke", "eval")["cpus_per_task"] == 1
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        parse_extra(["constraint"])
