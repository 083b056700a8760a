"""One owner at a time for a run folder (or any path): a lock file made by an atomic exclusive create.

Works across processes, sweeps and nodes on a shared file system where ``flock`` may not (NFS, Lustre, GPFS
mounts often lack it): ``os.open(O_CREAT | O_EXCL)`` either creates the file or fails for everyone but one
caller. The file holds its owner (host, pid, Slurm job id when ``SLURM_JOB_ID`` is set, start time and a random
token) as JSON; while held, a daemon thread refreshes its mtime every `HEARTBEAT_S` seconds. It is removed on
release, also when the holder raises.

A lock is stale, and the next caller takes it over, when
- its owner is on this host and its pid is no longer alive (a killed training), or
- its owner is on another host and its heartbeat is older than ``stale_after_s`` (default `STALE_AFTER_S`;
  ``$DIFFSEG_LOCK_STALE_S`` overrides it), or its content is unreadable (a creator killed between the create and
  the write) and its mtime that old.
A live owner on this host is waited for however old its heartbeat (a pid reused by another process after a
crash holds the lock until that process ends: delete the file by hand then). Waiting polls every ``poll_s``
seconds and prints who holds the lock, once when the wait starts and then every `REPORT_EVERY_S` seconds.

Within one process the lock is re-entrant: a training that holds its run folder and trains its base segmentor
in the same folder takes it once.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

LOCK_FILE = "run.lock"  # a run folder's lock: <run folder>/run.lock
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0  # ten missed heartbeats
REPORT_EVERY_S = 60.0
STALE_ENV = "DIFFSEG_LOCK_STALE_S"

_held: dict[str, list[Any]] = {}  # lock path -> [RunLock, depth] for the locks this process holds
_held_guard = threading.Lock()


def owner_info() -> dict[str, Any]:
    """Who takes a lock now: host, pid, Slurm job id (or None), start time (epoch s) and a fresh token."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "started_at": round(time.time(), 3),
        "token": uuid.uuid4().hex,
    }


def read_owner(path: Path) -> dict[str, Any] | None:
    """The owner recorded in lock file ``path``; None when it is empty or unreadable (FileNotFoundError when it
    is gone)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise
    except OSError:
        return None
    try:
        owner = json.loads(text)
    except ValueError:
        return None
    return owner if isinstance(owner, dict) and "host" in owner and "pid" in owner else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def is_stale(owner: dict[str, Any] | None, heartbeat_age_s: float, stale_after_s: float) -> bool:
    """The stale rule (module docstring): same host and dead pid, or another host (or no readable owner) and a
    heartbeat older than ``stale_after_s``."""
    if owner is None or owner.get("host") != socket.gethostname():
        return heartbeat_age_s > stale_after_s
    return not _pid_alive(int(owner["pid"]))


def describe(owner: dict[str, Any] | None) -> str:
    if owner is None:
        return "an owner not recorded yet (or an unreadable lock file)"
    job = f", Slurm job {owner['slurm_job_id']}" if owner.get("slurm_job_id") else ""
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(float(owner.get("started_at", 0))))
    return f"host {owner['host']} pid {owner['pid']}{job} since {since}"


def _default_report(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class RunLock:
    """The lock file ``path`` (see the module docstring); use `hold` for the re-entrant context manager."""

    def __init__(
        self,
        path: str | Path,
        stale_after_s: float | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        poll_s: float = 1.0,
        report: Callable[[str], None] = _default_report,
    ) -> None:
        self.path = Path(path)
        if stale_after_s is None:
            env = os.environ.get(STALE_ENV)
            try:
                stale_after_s = float(env) if env else STALE_AFTER_S
            except ValueError:
                raise ValueError(f"${STALE_ENV} must be a number of seconds, got {env!r}") from None
        if stale_after_s <= heartbeat_s:
            raise ValueError(
                f"lock {self.path}: stale_after_s ({stale_after_s}) must exceed heartbeat_s ({heartbeat_s}), or "
                "a live owner on another host would be taken over between two heartbeats"
            )
        self.stale_after_s, self.heartbeat_s, self.poll_s, self.report = (
            stale_after_s,
            heartbeat_s,
            poll_s,
            report,
        )
        self.owner: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def try_acquire(self) -> bool:
        """Create the lock file if nobody holds it (taking over a stale one); True when this process now holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        owner = owner_info()
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            self._take_over_if_stale()
            return False
        try:
            os.write(fd, json.dumps(owner).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.owner = owner
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name=f"lock {self.path}", daemon=True)
        self._beat.start()
        return True

    def acquire(self) -> None:
        """Wait until this process holds the lock, reporting who holds it while it waits."""
        last_report, reported_owner = None, None
        while not self.try_acquire():
            try:
                owner = read_owner(self.path)
            except FileNotFoundError:
                continue  # released between our create and our read: try again at once
            now = time.monotonic()
            if last_report is None or now - last_report >= REPORT_EVERY_S or owner != reported_owner:
                self.report(f"waiting for {self.path}: held by {describe(owner)}")
                last_report, reported_owner = now, owner
            time.sleep(self.poll_s)

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file, if it is still this process's."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        if self.owner is not None and self._still_mine():
            self.path.unlink(missing_ok=True)
        self.owner = None

    def _still_mine(self) -> bool:
        try:
            current = read_owner(self.path)
        except FileNotFoundError:
            return False
        return current is not None and self.owner is not None and current.get("token") == self.owner["token"]

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self._still_mine():
                self.report(
                    f"lock {self.path} was taken over by another owner; this process no longer holds it"
                )
                return
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def _take_over_if_stale(self) -> None:
        """Remove the lock file if it is stale. The file is first renamed to a name of our own (only one of
        several takers can rename it) and checked to be the one judged stale; a fresh lock that another taker made
        in between is put back."""
        try:
            owner = read_owner(self.path)
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return
        if not is_stale(owner, age, self.stale_after_s):
            return
        moved = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return  # another taker was first
        try:
            taken = read_owner(moved)
        except FileNotFoundError:
            return
        if taken != owner:  # not the lock we judged: give it back unless someone made a new one meanwhile
            with contextlib.suppress(FileExistsError):
                os.link(moved, self.path)
            moved.unlink(missing_ok=True)
            return
        self.report(f"took over the stale lock {self.path} of {describe(owner)}")
        moved.unlink(missing_ok=True)


@contextlib.contextmanager
def hold(path: str | Path, **kwargs: Any) -> Iterator[RunLock]:
    """Hold lock file ``path`` for the ``with`` block (waiting for it first); re-entrant within a process.
    ``kwargs`` go to `RunLock`."""
    key = str(Path(path).resolve())
    with _held_guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
    if entry is not None:
        try:
            yield entry[0]
        finally:
            with _held_guard:
                entry[1] -= 1
        return
    lock = RunLock(path, **kwargs)
    lock.acquire()
    with _held_guard:
        _held[key] = [lock, 1]
    try:
        yield lock
    finally:
        with _held_guard:
            _held.pop(key, None)
        lock.release()


def hold_run_folder(run_dir: str | Path, **kwargs: Any) -> contextlib.AbstractContextManager[RunLock]:
    """`hold` the lock of a run folder: ``<run_dir>/run.lock``."""
    return hold(Path(run_dir) / LOCK_FILE, **kwargs)
