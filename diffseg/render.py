"""Executed notebook -> HTML report, byte-stable: unchanged results give identical pages.

papermill and jupytext leave things in a notebook that change on every run without the study changing: random
cell ids (nbconvert writes them into the page as anchors), execution timestamps and durations, the input and
output paths of the machine that ran it. `normalise` replaces the ids with their position and drops the rest;
the page then holds only what the notebook displayed. Anything a cell wrote to stderr (a warning, a progress
bar) does not belong in a report either: it is taken off the page and printed to the terminal that renders it,
with the cell it came from, so nothing is lost and the page stays clean.
"""

from __future__ import annotations

import html
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

import nbformat

from diffseg.atomic import atomic_write

_RUN_METADATA = ("papermill", "execution", "ExecuteTime", "collapsed", "scrolled")


def normalise(nb: Any, title: str | None = None, stream: TextIO | None = None) -> list[str]:
    """Make ``nb`` (nbformat v4, changed in place) independent of when and where it ran.

    Cell ids become ``cell-000``, ``cell-001``, ...; run metadata (`_RUN_METADATA`) and papermill's notebook
    metadata are removed; stderr streams are removed and echoed to ``stream`` (default stderr). Returns the
    echoed stderr texts, one per stream output.
    """
    nb.metadata.pop("papermill", None)
    if title:
        nb.metadata["title"] = title
    echoed = []
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
        for key in _RUN_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = "".join(out.get("text", ""))
                echoed.append(text)
                print(
                    f"[render] cell {i} wrote to stderr (kept off the page):\n{text}",
                    file=stream or sys.stderr,
                )
                continue
            kept.append(out)
        cell["outputs"] = kept
    return echoed


_PLACEHOLDER_ALT = "No description has been provided for this image"


def image_alts(nb: Any) -> list[str]:
    """The alt text of every image output of ``nb``, in page order (the placeholder where there is none)."""
    alts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = out.get("data", {})
            for mime in ("image/svg+xml", "image/png", "image/jpeg"):
                if mime in data:
                    alts.append(out.get("metadata", {}).get(mime, {}).get("alt") or _PLACEHOLDER_ALT)
                    break
    return alts


def render_html(executed: str | Path, html_path: str | Path, title: str | None = None) -> Path:
    """Write the report ``html_path`` of the executed notebook ``executed`` (code hidden, outputs shown)."""
    from nbconvert import HTMLExporter

    executed = Path(executed)
    if not executed.is_file():
        raise FileNotFoundError(f"render: no executed notebook at {executed}; run papermill on it first")
    nb = nbformat.read(executed, as_version=4)
    normalise(nb, title)
    exporter = HTMLExporter(
        template_name="lab", exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True
    )
    # nbconvert's template ignores an image's "alt" metadata, then fills in a placeholder and warns about it;
    # the placeholders are replaced below, in output order, by the alt texts the figures were displayed with
    exporter.log.setLevel(logging.ERROR)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": Path(html_path).stem}})
    for alt in image_alts(nb):
        body = body.replace(f'alt="{_PLACEHOLDER_ALT}"', f'alt="{html.escape(alt)}"', 1)
    return atomic_write(Path(html_path), lambda tmp: Path(tmp).write_text(body, encoding="utf-8"))
