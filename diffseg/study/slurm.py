"""Where sweep jobs run on a cluster: Slurm, through submitit (no sbatch templating or squeue parsing here).

The sweep decides *what* runs (its phases of jobs, `diffseg.study.sweep`); `SlurmExecutor.run` submits one phase
as one job array and waits for it, printing a line per finished job with the pending / running / done / failed
counts. Every job is a sweep job (`sweep._call`) wrapped in a `submitit.helpers.Checkpointable`: on a timeout or a
preemption Slurm requeues it and it simply runs again, resuming from its run folder's last checkpoint.

The driver may die. The id of every submitted job is recorded beside the store (``<store>/slurm/jobs.json``,
keyed by what the job computes); a sweep started again re-attaches to a recorded job still pending or running
instead of submitting it again, and submits only what is missing. Each job's log is
``<store>/slurm/logs/<job id>_<task>_log.{out,err}``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from diffseg.atomic import atomic_write
from diffseg.study.failures import Failure

# Resources per job kind; the command line's --slurm-* options override them. GPUs only where the profile's
# trainings run on GPUs (paper); the synthetic profiles' jobs are single-threaded CPU processes, as on a laptop.
RESOURCES: dict[str, dict[str, dict[str, Any]]] = {
    "synthetic": {
        "base": {"timeout_min": 60, "cpus_per_task": 1, "mem_gb": 4},
        "stage1": {"timeout_min": 60, "cpus_per_task": 1, "mem_gb": 4},
        "train": {"timeout_min": 120, "cpus_per_task": 1, "mem_gb": 4},
        "eval": {"timeout_min": 60, "cpus_per_task": 1, "mem_gb": 4},
    },
    "paper": {
        "base": {"timeout_min": 240, "cpus_per_task": 8, "mem_gb": 64, "gpus_per_node": 1},
        "stage1": {"timeout_min": 24 * 60, "cpus_per_task": 8, "mem_gb": 64, "gpus_per_node": 1},
        "train": {"timeout_min": 48 * 60, "cpus_per_task": 8, "mem_gb": 64, "gpus_per_node": 1},
        "eval": {"timeout_min": 8 * 60, "cpus_per_task": 8, "mem_gb": 64, "gpus_per_node": 1},
    },
}
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING"}
JOBS_RECORD = "jobs.json"


def _quiet_sacct(record: logging.LogRecord) -> bool:
    """submitit falls back to squeue where Slurm keeps no accounting (no slurmdbd) and warns at every poll."""
    return "Bypassing sacct error" not in record.getMessage()


logging.getLogger("submitit").addFilter(_quiet_sacct)


@dataclass(frozen=True)
class SlurmOptions:
    """The command line's Slurm settings; None keeps the profile's value for the job kind."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int | None = None
    gpus_per_job: int | None = None  # GPUs per node of a training, one task (rank) each
    nodes: int | None = None
    tasks_per_node: int | None = None  # ranks per node of a training (default: its GPUs, else 1)
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    extra: dict[str, str] = field(default_factory=dict)  # --slurm-extra KEY=VALUE: any sbatch option

    def parameters(self, profile: str, kind: str) -> dict[str, Any]:
        """submitit's ``update_parameters`` for a job of ``kind`` ("base", "stage1", "train", "eval").

        A training given GPUs, nodes or tasks runs as one DDP job of ``nodes x tasks_per_node`` ranks, one task
        per GPU by default (`diffseg.study.process_group.in_slurm_tasks`); evaluations keep one task."""
        family = "paper" if profile.startswith("paper") else "synthetic"
        params = dict(RESOURCES[family][kind])
        ranks = {} if kind == "eval" else {
            "gpus_per_node": self.gpus_per_job,
            "nodes": self.nodes,
            "tasks_per_node": self.tasks_per_node or self.gpus_per_job,
        }  # fmt: skip
        for key, value in (
            ("slurm_partition", self.partition),
            ("slurm_account", self.account),
            ("slurm_qos", self.qos),
            ("timeout_min", self.time_min),
            *ranks.items(),
            ("cpus_per_task", self.cpus_per_task),
            ("mem_gb", self.mem_gb),
        ):
            if value is not None:
                params[key] = value
        if self.extra:
            params["slurm_additional_parameters"] = dict(self.extra)
        return params


def parse_extra(items: Sequence[str]) -> dict[str, str]:
    """``["constraint=a100", ...]`` -> ``{"constraint": "a100"}``; a malformed item is an error naming it."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--slurm-extra {item!r} is not KEY=VALUE (e.g. constraint=a100)")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = value
    return out


def add_arguments(p: Any) -> None:
    """The sweep's ``--executor`` and ``--slurm-*`` options (an argparse parser)."""
    p.add_argument(
        "--executor",
        default="local",
        choices=("local", "slurm"),
        help="where jobs run: processes on this machine, or a Slurm cluster through submitit (one job array per "
        "phase; job logs under results/<profile>/slurm/logs)",
    )
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="with --executor slurm: submit every phase (each after the one before) and exit",
    )
    p.add_argument(
        "--status", action="store_true", help="print what the store lacks and the recorded Slurm jobs' states"
    )
    g = p.add_argument_group("Slurm (with --executor slurm; default: the profile's resources per job kind)")
    g.add_argument("--slurm-partition", default=None, help="partition (sbatch --partition)")
    g.add_argument("--slurm-account", default=None, help="account (sbatch --account)")
    g.add_argument("--slurm-qos", default=None, help="quality of service (sbatch --qos)")
    g.add_argument("--slurm-time", type=int, default=None, help="time limit of every job, in minutes")
    g.add_argument(
        "--slurm-gpus-per-job",
        type=int,
        default=None,
        help="GPUs per node of each training, one DDP rank (task) per GPU; evaluations keep one",
    )
    g.add_argument("--slurm-nodes", type=int, default=None, help="nodes per training (ranks: nodes x tasks)")
    g.add_argument(
        "--slurm-tasks-per-node",
        type=int,
        default=None,
        help="DDP ranks per node of each training (default: its GPUs, else 1; on CPU nodes: gloo ranks)",
    )
    g.add_argument("--slurm-cpus-per-task", type=int, default=None, help="CPUs per task")
    g.add_argument("--slurm-mem", type=int, default=None, help="memory per job, in GB")
    g.add_argument(
        "--slurm-extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other sbatch option, e.g. constraint=a100 (repeatable)",
    )


def options_from_args(args: Any) -> SlurmOptions:
    return SlurmOptions(
        partition=args.slurm_partition,
        account=args.slurm_account,
        qos=args.slurm_qos,
        time_min=args.slurm_time,
        gpus_per_job=args.slurm_gpus_per_job,
        nodes=args.slurm_nodes,
        tasks_per_node=args.slurm_tasks_per_node,
        cpus_per_task=args.slurm_cpus_per_task,
        mem_gb=args.slurm_mem,
        extra=parse_extra(args.slurm_extra),
    )


class SweepTask(submitit.helpers.Checkpointable):
    """One sweep job on a Slurm node. On a timeout or preemption submitit's default ``checkpoint`` requeues the
    same call, which resumes from the run folder's last checkpoint (every sweep job is resumable)."""

    def __call__(self, job: tuple[str, Any, str]) -> tuple[str, float, int | None, int, str, Any]:
        import os

        import torch

        from diffseg.study.sweep import _call

        # the threads Slurm gave the task: one under the synthetic profiles, as the local sweep's workers
        torch.set_num_threads(int(os.environ.get("SLURM_CPUS_PER_TASK", "1")))
        if int(os.environ.get("SLURM_NTASKS", "1")) > 1:  # one training over the job's tasks, rank 0 reports
            from diffseg.study.process_group import in_slurm_tasks

            result = in_slurm_tasks(job, _call)
            if result is not None:
                label, seconds, iterations, peak, device, machine = result
                result = label, seconds, iterations, peak, f"{device} x{os.environ['SLURM_NTASKS']}", machine
            return result
        return _call(job)


class JobRecord:
    """``jobs.json``: job key -> Slurm job id, written whole and renamed (a reader never sees half a file)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, str]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def update(self, ids: dict[str, str]) -> None:
        merged = {**self.load(), **ids}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(
            self.path, lambda tmp: Path(tmp).write_text(json.dumps(merged, indent=1, sort_keys=True))
        )


def error_line(text: str) -> str:
    """The last line of the traceback in submitit's FailedJobError text (which ends with the log paths)."""
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if len(line.strip()) > 5 and set(line.strip()) == {"-"}]
    block = lines[rules[0] + 1 : rules[1]] if len(rules) >= 2 else lines
    kept = [line.strip() for line in block if line.strip()]
    return kept[-1] if kept else text.strip()[:200]


def _queued(arrays: set[str]) -> set[str] | None:
    """Which of the job arrays ``arrays`` (base job ids) are still in the queue, in one ``squeue`` call; None
    when the queue does not answer."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", ",".join(sorted(arrays)), "-o", "%F"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def _array_of(job: submitit.Job) -> str:
    return str(job.job_id).split("_")[0]


_ASK = object()  # `_alive` without this poll's queue: ask squeue about the one job


def _alive(job: submitit.Job, queued: Any = _ASK) -> bool:
    """Is ``job`` still pending or running? Where Slurm keeps no accounting (no slurmdbd), submitit cannot tell
    (state UNKNOWN): then the queue is asked, unless ``queued`` (`_queued` of this poll) already says."""
    state = job.state
    if state != "UNKNOWN":
        return state in ACTIVE_STATES
    if queued is _ASK:
        queued = _queued({_array_of(job)})
    return True if queued is None else _array_of(job) in queued  # no answer: wait rather than call it lost


class SlurmExecutor:
    """Runs sweep phases as Slurm job arrays under ``folder`` (the store's ``slurm/`` folder)."""

    def __init__(self, folder: Path, profile: str, options: SlurmOptions | None = None, poll_s: float = 2.0):
        self.folder, self.profile = Path(folder), profile
        self.options = options or SlurmOptions()
        self.poll_s = poll_s
        self.record = JobRecord(self.folder / JOBS_RECORD)

    def _executor(self, kind: str, after: Sequence[str] = ()) -> submitit.AutoExecutor:
        """submitit's executor for jobs of ``kind``; with ``after`` (job ids) they start once those ended, well
        or not (a job whose input failed trains or fails on its own, and is reported by name)."""
        ex = submitit.AutoExecutor(folder=self.folder / "logs", cluster="slurm")
        params = self.options.parameters(self.profile, kind)
        if after:
            arrays = sorted({str(i).split("_")[0] for i in after})
            extra = dict(params.pop("slurm_additional_parameters", {}))
            params["slurm_additional_parameters"] = {**extra, "dependency": "afterany:" + ":".join(arrays)}
        ex.update_parameters(name=f"diffseg-{self.profile}-{kind}", **params)
        return ex

    def attach(self, key: str) -> submitit.Job | None:
        """The recorded job of ``key`` when it is still pending or running (else None)."""
        job_id = self.record.load().get(key)
        if not job_id:
            return None
        job = submitit.SlurmJob(folder=self.folder / "logs", job_id=job_id)
        return job if not job.done() and _alive(job) else None

    def submit(self, jobs: list[tuple[str, Any]], keys: list[str], after: Sequence[str] = ()) -> list[Any]:
        """Submit ``jobs`` (sweep jobs, one kind) as one array, or re-attach to each one's running job;
        ``after``: job ids the new ones wait for (the previous phase, when the driver does not wait)."""
        handles: list[Any] = [self.attach(k) for k in keys]
        fresh = [i for i, h in enumerate(handles) if h is None]
        if fresh:
            kind = jobs[fresh[0]][0]
            submitted = self._executor(kind, after).map_array(SweepTask(), [jobs[i] for i in fresh])
            for i, job in zip(fresh, submitted):
                handles[i] = job
            self.record.update({keys[i]: handles[i].job_id for i in fresh})
        return handles

    def run(
        self,
        jobs: list[tuple[str, Any, str]],
        keys: list[str],
        finished: Callable[[Any], None],
        status: Callable[[str], None] | None = None,
    ) -> list[Failure]:
        """Run one phase: submit (or re-attach), then wait, calling ``finished(result)`` for each job that
        ends well; returns the failures (the phase's other jobs still run to their end)."""
        handles = self.submit(jobs, keys)
        return self.wait(jobs, keys, handles, finished, status)

    def wait(
        self,
        jobs: list[tuple[str, Any, str]],
        keys: list[str],
        handles: list[Any],
        finished: Callable[[Any], None],
        status: Callable[[str], None] | None = None,
    ) -> list[Failure]:
        """Wait for submitted ``handles`` (see `run`)."""
        pending = dict(enumerate(handles))
        failures: list[Failure] = []
        while pending:
            # one squeue call per poll for the jobs whose state submitit cannot tell (no accounting), if any
            unknown = {_array_of(h) for h in pending.values() if not h.done() and h.state == "UNKNOWN"}
            queued = _queued(unknown) if unknown else None
            for i, job in list(pending.items()):
                if not job.done():
                    if not _alive(job, queued):  # cancelled, or lost with its node: no result will come
                        del pending[i]
                        failures.append(Failure(jobs[i][2] or keys[i], "left the queue without a result",
                                                str(job.paths.stderr)))  # fmt: skip
                    continue
                del pending[i]
                try:
                    finished(job.results()[0])  # a multi-task training: rank 0's (task 0's) result
                except Exception as e:  # a failed job: named, with its error's last line and its log
                    failures.append(Failure(jobs[i][2] or keys[i], error_line(str(e)), str(job.paths.stderr)))
                if status:
                    status(self.counts(handles, failures))
            if pending:
                time.sleep(self.poll_s)
        return failures

    def states(self) -> dict[str, str]:
        """Every recorded job's state: pending, running, done or failed (for ``diffseg sweep --status``)."""
        out = {}
        for key, job_id in sorted(self.record.load().items()):
            job = submitit.SlurmJob(folder=self.folder / "logs", job_id=job_id)
            if job.done():
                try:
                    job.result()
                    out[key] = "done"
                except Exception:
                    out[key] = "failed"
            elif _alive(job):
                out[key] = "running" if job.state == "RUNNING" else "pending"
            else:
                out[key] = "failed"
        return out

    @staticmethod
    def counts(handles: list[Any], failures: list[Failure]) -> str:
        states = [h.state for h in handles]
        running = sum(s == "RUNNING" for s in states)
        waiting = sum(s in ACTIVE_STATES and s != "RUNNING" for s in states)
        done = sum(h.done() for h in handles) - len(failures)
        return f"pending {waiting}, running {running}, done {done}, failed {len(failures)}"


__all__ = [
    "ACTIVE_STATES",
    "RESOURCES",
    "Failure",
    "JobRecord",
    "SlurmExecutor",
    "SlurmOptions",
    "parse_extra",
]
