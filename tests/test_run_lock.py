"""Exactly once: the run-folder lock (atomic create, owner, heartbeat, stale rule, waiting), the job table's
concurrent appends, the log's torn last line, and two concurrent sweeps on one store training each run once."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from diffseg.engines import run_lock
from diffseg.engines.run_lock import RunLock, hold, read_owner
from diffseg.engines.run_log import _append_row, _drop_rows_after
from diffseg.study.jobs import COLUMNS, JobTable

ROOT = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(path: Path, host: str, pid: int, age_s: float = 0.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = {"host": host, "pid": pid, "slurm_job_id": "77", "started_at": time.time() - age_s, "token": "t"}
    path.write_text(json.dumps(owner))
    os.utime(path, (time.time() - age_s, time.time() - age_s))


def test_the_lock_is_exclusive_records_its_owner_and_is_removed_on_exit_and_on_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    path = tmp_path / "run" / run_lock.LOCK_FILE
    with hold(path) as lock:
        owner = read_owner(path)
        assert owner["host"] == socket.gethostname() and owner["pid"] == os.getpid()
        assert owner["slurm_job_id"] == "1234" and owner["token"] == lock.owner["token"]
        assert not RunLock(path).try_acquire()  # a second owner (the holder's pid is alive) is refused
        with hold(path):  # re-entrant in the holding process
            pass
        assert path.exists()
    assert not path.exists()
    with pytest.raises(RuntimeError, match="boom"), hold(path):
        raise RuntimeError("boom")
    assert not path.exists()


def test_a_lock_of_a_dead_pid_on_this_host_is_taken_over(tmp_path):
    path = tmp_path / run_lock.LOCK_FILE
    _write_lock(path, socket.gethostname(), _dead_pid())
    messages = []
    with hold(path, report=messages.append) as lock:
        assert read_owner(path)["token"] == lock.owner["token"]
    assert any("took over the stale lock" in m for m in messages)
    assert not list(tmp_path.glob("*.stale-*"))


def test_a_live_pid_on_this_host_holds_the_lock_however_old_its_heartbeat(tmp_path):
    path = tmp_path / run_lock.LOCK_FILE
    _write_lock(path, socket.gethostname(), os.getppid(), age_s=10_000)
    assert not RunLock(path, stale_after_s=60).try_acquire()
    assert path.exists()


def test_another_hosts_lock_is_stale_only_after_its_heartbeat_timeout(tmp_path):
    path = tmp_path / run_lock.LOCK_FILE
    _write_lock(path, "some-other-node", 1, age_s=5)
    assert not RunLock(path, stale_after_s=60).try_acquire()  # a fresh heartbeat: the owner is alive
    _write_lock(path, "some-other-node", 1, age_s=120)
    lock = RunLock(path, stale_after_s=60)
    assert not lock.try_acquire()  # this call removes the stale file ...
    assert lock.try_acquire()  # ... and the next creates this process's
    lock.release()
    assert not path.exists()


def test_an_unreadable_lock_waits_for_the_timeout(tmp_path):
    path = tmp_path / run_lock.LOCK_FILE
    path.write_text("")  # a creator killed between its create and its write
    assert not RunLock(path, stale_after_s=60).try_acquire()
    os.utime(path, (time.time() - 120, time.time() - 120))
    lock = RunLock(path, stale_after_s=60)
    assert not lock.try_acquire() and lock.try_acquire()
    lock.release()


def test_bad_timeouts_are_refused_with_their_names(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="stale_after_s"):
        RunLock(tmp_path / "x.lock", stale_after_s=10, heartbeat_s=30)
    monkeypatch.setenv(run_lock.STALE_ENV, "soon")
    with pytest.raises(ValueError, match=run_lock.STALE_ENV):
        RunLock(tmp_path / "x.lock")


_HOLDER = """
import sys, time
from pathlib import Path
from diffseg.engines.run_lock import hold
lock, held, release = map(Path, sys.argv[1:4])
with hold(lock):
    held.write_text("1")
    while not release.exists():
        time.sleep(0.01)
"""


def test_a_second_owner_waits_names_the_holder_then_gets_the_lock(tmp_path):
    path, held, release = tmp_path / "run" / run_lock.LOCK_FILE, tmp_path / "held", tmp_path / "release"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), str(held), str(release)], cwd=ROOT)
    try:
        while not held.exists():
            assert holder.poll() is None, "the holder process ended before taking the lock"
            time.sleep(0.01)
        messages: list[str] = []
        waiting = threading.Event()

        def report(message: str) -> None:
            messages.append(message)
            waiting.set()

        got = []
        waiter = threading.Thread(
            target=lambda: got.append(RunLock(path, poll_s=0.01, report=report).acquire())
        )
        waiter.start()
        waiting.wait()
        assert not got  # still waiting while the holder lives
        release.write_text("1")
        waiter.join()
        assert got == [None]
        assert f"held by host {socket.gethostname()} pid {holder.pid}" in messages[0]
        assert read_owner(path)["pid"] == os.getpid()
    finally:
        release.write_text("1")
        holder.wait()
    path.unlink()


_WRITER = """
import sys
from diffseg.study.jobs import JobTable
table = JobTable(sys.argv[1])
for i in range(40):
    table.add("refiners", f"writer {sys.argv[2]} job {i}", 1.0, 10, 0, "cpu")
"""


def test_concurrent_writers_of_the_job_table_lose_no_row(tmp_path):
    path = tmp_path / "cpu" / "jobs.csv"
    JobTable(path).add("base segmentors", "before", 2.0, 20, 2**30, "cpu")
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(w)], cwd=ROOT) for w in range(3)]
    assert all(p.wait() == 0 for p in procs)
    df = pd.read_csv(path)
    assert tuple(df.columns) == COLUMNS and len(df) == 1 + 3 * 40
    assert set(df["job"]) == {"before"} | {f"writer {w} job {i}" for w in range(3) for i in range(40)}
    assert not list(path.parent.glob("*.lock*"))


def test_a_torn_last_line_of_the_job_table_stays_one_line(tmp_path):
    path = tmp_path / "jobs.csv"
    JobTable(path).add("refiners", "a", 1.0, 10, 0, "cpu")
    with path.open("a") as f:
        f.write("refiners,torn,1.")  # a writer killed mid-line
    JobTable(path).add("refiners", "b", 1.0, 10, 0, "cpu")
    lines = path.read_text().splitlines()
    assert lines[-2] == "refiners,torn,1." and lines[-1].startswith("refiners,b,")


def test_a_resumed_log_drops_rows_past_the_checkpoint_and_a_torn_line(tmp_path):
    path = tmp_path / "log.csv"
    for job, it in [("base", 10), ("base", 20), ("refiner", 5), ("refiner", 10)]:
        _append_row(path, [job, it, 1, 0.5, 0.1, 0.0])
    with path.open("a") as f:
        f.write("refiner,15,2,0.3")  # killed mid-write
    _drop_rows_after(path, "refiner", 5)
    _append_row(path, ["refiner", 10, 1, 0.4, 0.1, 0.0])
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert [(r[0], r[1]) for r in rows[1:]] == [
        ("base", "10"),
        ("base", "20"),
        ("refiner", "5"),
        ("refiner", "10"),
    ]


_SWEEP = """
import sys, time
from pathlib import Path
import diffseg.study.jobs as jobs
from diffseg.study.sweep import sweep

results, go, mine = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
add = jobs.JobTable.add

def recorded(self, phase, job, *args):
    with mine.open("a") as f:
        f.write(f"{phase}|{job}\\n")
    add(self, phase, job, *args)

jobs.JobTable.add = recorded
while not go.exists():  # both sweeps plan on the same empty store
    time.sleep(0.01)
sweep("smoke", results, ["main_results"], workers=1, device="cpu", progress=True)
"""


def test_two_concurrent_sweeps_on_one_store_train_each_run_once(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIFFSEG_DATA": str(tmp_path / "data")}
    results, go = tmp_path / "results", tmp_path / "go"
    mine = [tmp_path / f"sweep{i}.jobs" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SWEEP, str(results), str(go), str(m)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for m in mine
    ]
    go.write_text("1")
    outs = [p.communicate()[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs

    runs = tmp_path / "runs" / "smoke"
    attempts = list(runs.rglob("attempts.csv"))
    assert attempts, f"no training ran under {runs}"
    for path in attempts:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        # base and refiner of one folder each once, from iteration 0 (or from a shared stage 1)
        assert len(rows) == len({r["job"] for r in rows}), f"{path} trained more than once: {rows}"
    for path in runs.rglob("log.csv"):
        with path.open(newline="") as f:
            keys = [(r["job"], r["iteration"]) for r in csv.DictReader(f)]
        assert len(keys) == len(set(keys)), f"{path} repeats an iteration"
    assert not list(runs.rglob("*.lock")), "a lock file was left behind"

    table = pd.read_csv(results / "smoke" / "jobs.csv")
    ran = [line for m in mine for line in m.read_text().splitlines()]
    assert sorted(f"{r.phase}|{r.job}" for r in table.itertuples()) == sorted(ran)
    assert {line.split("|")[0] for line in ran} >= {"base segmentors", "refiners", "evaluations"}
    rows = pd.read_parquet(results / "smoke" / "results.parquet")
    assert set(rows["experiment"]) >= {"main_results"}
