"""How the study's tables and figures reach disk and the page: atomic, byte-stable files and inline PNGs.

A notebook calls `show_figure(fig, stem, figures_dir)` once per figure: it writes ``{stem}.png`` and
``{stem}.svg`` and displays the very same PNG bytes inline (``image/png``), so the executed notebook, its HTML
report and ``reports/figures/`` hold one image each, and re-rendering unchanged numbers rewrites identical bytes.

Byte stability, because committed reports must diff to exactly what the study changed:
- PNG: no ``Software`` text chunk (Agg writes no date); SVG: no ``Date`` and a fixed ``svg.hashsalt``, so the
  ids matplotlib generates for clip paths and glyphs are the same on every run.
- Figures are rendered at ``DPI`` and shown at ``CSS_DPI`` CSS pixels per inch: twice the density of the page,
  so they are sharp on a high-density laptop screen and a figure keeps its designed size on the page.

Figures are built on ``matplotlib.figure.Figure`` without pyplot (see `diffseg.viz`), so no IPython display
formatter exists for them: `register_figure_formatter` adds one (called on import inside a kernel), so that
``display(fig)`` or a figure as a cell's last value shows the image in JupyterLab as well.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from diffseg.atomic import atomic_write

DPI = 192
CSS_DPI = 96
SVG_HASH_SALT = "diffseg"
_PNG_META: dict[str, Any] = {"Software": None}
_SVG_META: dict[str, Any] = {"Date": None}


def _check_stem(stem: str, what: str) -> None:
    if not stem or "/" in stem or "\\" in stem:
        raise ValueError(f"{what}: stem must be a plain file name without suffix, got {stem!r}")


def figure_png(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes, identical for identical figures (no metadata that varies between runs)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata=_PNG_META)
    return buf.getvalue()


def figure_svg(fig: Figure) -> bytes:
    """The figure as SVG bytes with a fixed hash salt and no date, so its generated ids do not change."""
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": SVG_HASH_SALT}):
        fig.savefig(buf, format="svg", metadata=_SVG_META)
    return buf.getvalue()


def save_figure(fig: Figure, stem: str, out_dir: str | Path) -> list[Path]:
    """Write ``{out_dir}/{stem}.png`` (at ``DPI``) and ``.svg``, each atomically; returns the two paths."""
    _check_stem(stem, "save_figure")
    out = []
    for suffix, data in (("png", figure_png(fig)), ("svg", figure_svg(fig))):
        out.append(
            atomic_write(Path(out_dir) / f"{stem}.{suffix}", lambda tmp, d=data: Path(tmp).write_bytes(d))
        )
    return out


def display_width(fig: Figure) -> int:
    """The width in CSS pixels at which a figure shows at its designed size (``figsize`` inches x ``CSS_DPI``)."""
    return round(fig.get_figwidth() * CSS_DPI)


def show_figure(fig: Figure, stem: str, out_dir: str | Path) -> None:
    """`save_figure`, then display the saved PNG inline (``image/png``, ``display_width`` wide).

    Returns None on purpose: as a cell's last expression it must not print the paths of the build machine.
    Outside IPython nothing is displayed; the files are written all the same.
    """
    png, _ = save_figure(fig, stem, out_dir)
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:  # pragma: no cover - IPython is a dependency of the notebooks only
        return
    if get_ipython() is not None:
        alt = f"figure {stem} (also in {Path(out_dir).name}/{stem}.svg)"
        display(Image(data=png.read_bytes(), format="png", width=display_width(fig), alt=alt))


def _png_formatter(fig: Figure) -> tuple[bytes, dict[str, Any]]:
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    return figure_png(fig), {"width": display_width(fig), "alt": "; ".join(titles) or "figure"}


def register_figure_formatter() -> bool:
    """Let IPython display a bare ``Figure`` as PNG (pyplot-free figures have no formatter); False outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    if shell is None:
        return False
    shell.display_formatter.formatters["image/png"].for_type(Figure, _png_formatter)
    return True


def save_table(df: pd.DataFrame, stem: str, out_dir: str | Path) -> Path:
    """Write ``{out_dir}/{stem}.csv`` atomically (index included when it is not a plain range)."""
    _check_stem(stem, "save_table")
    keep_index = not isinstance(df.index, pd.RangeIndex)
    return atomic_write(Path(out_dir) / f"{stem}.csv", lambda tmp: df.to_csv(tmp, index=keep_index))


register_figure_formatter()
