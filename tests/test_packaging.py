"""The packaging promises: environment.yml pins equal pyproject's, and the CLI answers --help."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)==([^\s;]+)\s*", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_environment_yml_pins_equal_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"]) + list(project["optional-dependencies"]["dev"])
    py_pins = _pins(declared)
    assert len(py_pins) == len(declared), "every dependency in pyproject.toml must be pinned with =="
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    env_pins = _pins([p for p in pip_section if not p.startswith("-e")])
    assert env_pins == py_pins


def test_cli_help_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "diffseg", "--help"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    for command in ("data", "train", "eval", "refine"):
        assert command in out
