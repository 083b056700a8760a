"""Which machine made a result: the store's machines table (``results/<profile>/machines.csv``).

Results of one seeded training are bit-identical on one CPU, but another CPU can run other kernels (AVX2 vs
AVX-512 code paths, other reduction orders) and a GPU other algorithms, so every result row and every line of the
sweep's job table names its machine by an id, and the id's line here says what that machine was: CPU model,
torch's CPU capability, the process's threads, GPU name and count, CUDA / cuDNN versions, whether deterministic
algorithms were on, the kernel limits set in the environment, OS and library versions. The id is a short hash of
those fields, so one machine configuration is one line whoever writes it.

Several processes write one store at once (the sweep's workers), so a line is added under an exclusive lock on
the store folder, read-check-rewrite (atomically): no line is lost and none is written twice. Rows and job lines
written before this table existed carry no machine; they read as `UNRECORDED`, never as a guess.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
import platform
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import pandas as pd

from diffseg.atomic import atomic_write_text

MACHINES_FILE = "machines.csv"
UNRECORDED = "unrecorded"
# Environment variables that restrict which CPU kernels torch, oneDNN and MKL dispatch to: a machine that sets
# them computes as a machine of that level would, so they are part of what a machine is.
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
FIELDS = (
    "machine",
    "cpu_model",
    "cpu_capability",
    "threads",
    "gpu_name",
    "gpu_count",
    "cuda",
    "cudnn",
    "deterministic",
    "kernel_env",
    "os",
    "python",
    "torch",
    "libraries",
)


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` says), or "unknown"."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return " ".join(line.split(":", 1)[1].split())
    return platform.processor() or platform.machine() or "unknown"


@lru_cache(maxsize=1)
def _libraries() -> str:
    import ignite
    import transformers

    return json.dumps(
        {"ignite": ignite.__version__, "transformers": transformers.__version__}, sort_keys=True
    )


def describe() -> dict[str, str]:
    """This process's machine as the table's fields (all strings), its id included.

    Threads are this process's own (`torch.get_num_threads`): a sweep worker runs one, a notebook kernel the
    default; the kernels torch picks depend on it, so it is part of the machine.
    """
    import torch

    cuda = torch.cuda.is_available()
    fields = {
        "cpu_model": cpu_model(),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "threads": str(torch.get_num_threads()),
        "gpu_name": torch.cuda.get_device_name(0) if cuda else "",
        "gpu_count": str(torch.cuda.device_count() if cuda else 0),
        "cuda": str(torch.version.cuda or "") if cuda else "",
        "cudnn": str(torch.backends.cudnn.version() or "") if cuda else "",
        "deterministic": str(torch.are_deterministic_algorithms_enabled()).lower(),
        "kernel_env": " ".join(f"{k}={os.environ[k]}" for k in KERNEL_ENV if os.environ.get(k)),
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "libraries": _libraries(),
    }
    blob = json.dumps(fields, sort_keys=True).encode()
    return {"machine": hashlib.sha256(blob).hexdigest()[:10], **fields}


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` itself (flock on its descriptor): no lock file is left in the store."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def load(root: str | Path) -> pd.DataFrame:
    """The machines table of the store at ``root`` (every field a string); empty with `FIELDS` if none."""
    path = Path(root) / MACHINES_FILE
    if not path.is_file():
        return pd.DataFrame(columns=list(FIELDS))
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in FIELDS if c not in df.columns]
    if missing:
        raise ValueError(f"{path} is not a machines table (missing column(s) {missing}); expected {FIELDS}")
    return df


def register(root: str | Path, machine: dict[str, str] | None = None) -> str:
    """Add ``machine`` (default: this process's, `describe`) to the store at ``root`` unless its id is there
    already; return its id. Safe with several processes writing the store at once."""
    machine = machine or describe()
    root = Path(root)
    with _locked(root):
        table = load(root)
        if machine["machine"] in set(table["machine"]):
            return machine["machine"]
        rows = table.to_dict("records") + [{k: machine.get(k, "") for k in FIELDS}]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(root / MACHINES_FILE, buf.getvalue())
    return machine["machine"]


def with_machine(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` (result rows or job lines) with a ``machine`` column, `UNRECORDED` where a row has none."""
    if "machine" not in df.columns:
        return df.assign(machine=UNRECORDED)
    if df["machine"].isna().any():
        return df.assign(machine=df["machine"].fillna(UNRECORDED))
    return df


def label(machine: dict[str, str] | pd.Series | None) -> str:
    """A machine in a few words: ``"AMD EPYC (AVX512), 1 thread, cpu"``; `UNRECORDED` for none."""
    if machine is None:
        return UNRECORDED
    m = dict(machine)
    threads = m.get("threads", "")
    words = [f"{m.get('cpu_model', '?')} ({m.get('cpu_capability', '?')})"]
    if threads:
        words.append(f"{threads} thread{'' if threads == '1' else 's'}")
    if m.get("kernel_env"):
        words.append(m["kernel_env"])
    gpus = int(m.get("gpu_count") or 0)
    words.append(f"{gpus} x {m.get('gpu_name')}, CUDA {m.get('cuda')}" if gpus else "cpu")
    if gpus and m.get("deterministic") == "true":
        words.append("deterministic")
    return ", ".join(words)


def made_on(rows: pd.DataFrame, machines: pd.DataFrame) -> str:
    """Which machine(s) made ``rows``, most rows first: ``"Made on: unrecorded (all 1,234 rows)."`` or
    ``"Made on: AMD EPYC (AVX512), 1 thread, cpu: 812 rows; unrecorded: 422 rows."`` Only the store's data is
    read (never the host that renders), so unchanged results give the same sentence."""
    if rows.empty:
        return "Made on: no results yet."
    counts = with_machine(rows)["machine"].value_counts()
    by_id = {str(r["machine"]): r for _, r in machines.iterrows()}
    # two ids can share a label (e.g. the same CPU with other library versions): their counts add up
    labelled: dict[str, int] = {}
    for mid, n in counts.items():
        name = (
            UNRECORDED if mid == UNRECORDED else label(by_id.get(str(mid))) if str(mid) in by_id else str(mid)
        )
        labelled[name] = labelled.get(name, 0) + int(n)
    order = sorted(labelled.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(order) == 1:
        name, n = order[0]
        return f"Made on: {name} (all {_rows(n)})."
    return "Made on: " + "; ".join(f"{name}: {_rows(n)}" for name, n in order) + "."


def _rows(n: int) -> str:
    return f"{n:,} row{'' if n == 1 else 's'}"
