"""Where relative paths point: the project root, not the working directory of whoever runs the code.

A notebook's kernel starts in the folder of the notebook (``notebooks/`` under JupyterLab or ``papermill --cwd
notebooks``), the Makefile runs from the project root, and a researcher may call the CLI from a sub-folder. So
that all of them read and write the same results store, reports and data, a relative path is taken relative to:

1. ``$DIFFSEG_ROOT`` when it is set (an explicit root, e.g. a results checkout somewhere else);
2. else the diffseg checkout that holds the working directory (the nearest folder at or above it with the
   project's ``pyproject.toml``);
3. else the working directory itself (code run outside any checkout behaves as any program does).

Absolute paths are left as they are.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

ROOT_ENV = "DIFFSEG_ROOT"


@lru_cache(maxsize=32)
def _checkout_holding(cwd: str) -> Path | None:
    for folder in (Path(cwd), *Path(cwd).parents):
        marker = folder / "pyproject.toml"
        if marker.is_file() and (folder / "diffseg").is_dir():
            try:
                if 'name = "diffseg"' in marker.read_text(encoding="utf-8"):
                    return folder
            except OSError:
                continue
    return None


def project_root() -> Path:
    """The folder relative paths are taken against (see the module docstring for the rule)."""
    explicit = os.environ.get(ROOT_ENV)
    if explicit:
        return Path(explicit).expanduser().resolve()
    cwd = os.getcwd()
    return _checkout_holding(cwd) or Path(cwd)


def resolve(path: str | os.PathLike[str]) -> Path:
    """``path`` as an absolute path: unchanged when absolute, else under `project_root`."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


__all__ = ["ROOT_ENV", "project_root", "resolve"]
