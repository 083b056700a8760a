"""papermill reads the notebooks as they are committed: jupytext percent scripts (``notebooks/*.py``).

papermill loads its input as notebook JSON, so ``papermill notebooks/05_schedule_and_T.py out.ipynb`` would fail
on the text format the project keeps its notebooks in. papermill's I/O handlers are a plugin point (entry point
group ``papermill.io``); this module's `LOCAL` takes the place of papermill's own local-file handler: it reads
a ``.py`` / ``.md`` notebook through jupytext (adding the ``python3`` kernel where the file names none) and
leaves everything else, ``.ipynb`` files and every write, to papermill's handler unchanged.

papermill registers handlers by a path prefix and takes the last one named ``local`` as its fallback, so the
original local handler is taken out of its list when this module is loaded: without that, papermill would keep
using it for every plain path.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nbformat
from papermill.iorw import LocalHandler

TEXT_FORMATS = {".py": "py:percent", ".md": "md"}
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}

# papermill warns that an input "does not end in one of ['.ipynb', '.json']" before any handler is asked
warnings.filterwarnings("ignore", message=r"The specified file \(.*\.(py|md)\) does not end in one of")


class TextNotebookHandler(LocalHandler):
    """papermill's local handler, which also reads jupytext text notebooks as notebook JSON."""

    def read(self, path: str) -> str:
        text = super().read(path)
        fmt = TEXT_FORMATS.get(Path(str(path)).suffix)
        if fmt is None or text.lstrip().startswith("{"):
            return text
        import jupytext

        nb = jupytext.reads(text, fmt=fmt)
        nb.metadata.setdefault("kernelspec", dict(KERNELSPEC))
        return nbformat.writes(nb)


def _take_over_local() -> TextNotebookHandler:
    """papermill's other ``local`` handlers out, this one in (papermill registers it again from the entry
    point; a second copy of the same handler is harmless)."""
    from papermill.iorw import papermill_io

    handler = TextNotebookHandler()
    papermill_io._handlers = [
        (scheme, h)
        for scheme, h in papermill_io._handlers
        if scheme != "local" or isinstance(h, TextNotebookHandler)
    ]
    papermill_io.register("local", handler)
    return handler


LOCAL = _take_over_local()

__all__ = ["LOCAL", "TEXT_FORMATS", "TextNotebookHandler"]
