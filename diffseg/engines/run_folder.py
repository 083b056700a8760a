"""Run folders: their one owner at a time, the resolved config a run is bound to, and the base segmentor's
weights linked into it."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ignite.distributed as idist

from diffseg.config import ExperimentConfig, config_hash, load_config, save_config, to_dict
from diffseg.engines.run_lock import hold_run_folder


@contextlib.contextmanager
def owned_run_folder(run_dir: str | Path) -> Iterator[None]:
    """Run the ``with`` block as the run folder's only owner: rank 0 holds its lock (`diffseg.engines.run_lock`,
    waiting while another process, sweep or node holds it), the other ranks wait for rank 0 at a barrier."""
    if idist.get_rank() != 0:
        idist.barrier()
        yield
        return
    with hold_run_folder(run_dir):
        idist.barrier()
        yield


def resolved_run_dir(run_dir: str | Path, cfg: ExperimentConfig, allow_config_change: bool) -> Path:
    """The run folder bound to ``cfg``: created, or resumed when its config matches.

    A finished run (``metrics.json`` present) is immutable: a changed config is refused whatever the flags, since
    its checkpoints and metrics belong to the old one. ``allow_config_change`` continues an *unfinished* run
    with the new config and records what changed in ``config_changes.log``.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if cfg_path.exists():
        old = load_config(cfg_path)
        if config_hash(old) != config_hash(cfg):
            changed = _diff_keys(to_dict(old), to_dict(cfg))
            if (run_dir / "metrics.json").exists():
                raise ValueError(
                    f"{run_dir} holds a finished run with a different config (changed: {', '.join(changed)}); "
                    "a finished run is never changed: use a new run folder"
                )
            if not allow_config_change:
                raise ValueError(
                    f"{run_dir} holds a run with a different config (changed: {', '.join(changed)}); "
                    "use a new run folder, or pass --allow-config-change to continue it with the new config"
                )
            warnings.warn(f"continuing {run_dir} with a changed config: {', '.join(changed)}", stacklevel=2)
            if idist.get_rank() == 0:
                with (run_dir / "config_changes.log").open("a") as f:
                    f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {'; '.join(changed)}\n")
    if idist.get_rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, cfg_path)
    return run_dir


def _diff_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _diff_keys(a[k], b[k], prefix + k + ".")
        elif a.get(k) != b.get(k):
            out.append(f"{prefix}{k}: {a.get(k)!r} -> {b.get(k)!r}")
    return out


def link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    if not src.exists():
        raise FileNotFoundError(f"base segmentor weights {src} do not exist")
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
