"""What a study notebook's first cell calls: parameters checked, paths resolved, work planned, rows loaded.

A notebook is a view over the results store. `open_experiment` is the one place that turns its parameters
(profile, datasets, segmentors, seeds, device, ``overrides``, ``levels``, ``train``) into rows:

- the ablation parameters are checked before anything else (`diffseg.study.ablation`), so a typo fails in
  seconds with one line naming the key and what is allowed;
- ``results_dir`` and ``reports_dir`` resolve against the project root (`diffseg.paths`), so a kernel started
  in ``notebooks/`` (JupyterLab, ``papermill --cwd notebooks``) reads the committed study and writes nothing
  there; an ablation's tables and figures go to ``<reports>/ablations/<stem>-<id>/``, never over the default
  study's;
- missing rows are named before any training, with the count and an estimate of the time; inside JupyterLab
  (or with ``train=False``) the notebook then stops and says how to ask for the training, elsewhere (papermill,
  ``make``) it trains, as the sweep would.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from diffseg.paths import resolve
from diffseg.study.ablation import Ablation, make_ablation

# Jupyter's server names the notebook of every kernel it starts in this variable; papermill and nbconvert,
# which start kernels themselves, do not set it.
LAB_SESSION_ENV = "JPY_SESSION_NAME"


def default_reports(profile: str) -> str:
    """The reports folder of a profile, as the Makefile names it (``reports``, ``reports-<profile>``)."""
    return "reports" if profile == "cpu" else f"reports-{profile}"


def in_jupyter_server() -> bool:
    """True in a kernel started by a Jupyter server (JupyterLab), False under papermill or a plain script."""
    return bool(os.environ.get(LAB_SESSION_ENV))


class TrainingNotRequested(RuntimeError):
    """The store lacks rows this notebook needs, and training was not asked for. IPython shows only the
    message (``_render_traceback_``), not a traceback: nothing went wrong."""

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


@dataclass
class Opened:
    """What `open_experiment` gives a notebook: its rows and where its outputs go."""

    rows: pd.DataFrame
    provenance: pd.DataFrame
    ablation: Ablation
    results_dir: Path
    tables_dir: Path
    figures_dir: Path


def output_dirs(stem: str, reports_dir: Path, ablation: Ablation | None = None) -> tuple[Path, Path]:
    """(tables, figures) folders of report ``stem``: the report folder's own, or the ablation's."""
    root = (
        reports_dir
        if ablation is None or ablation.is_default
        else ablation_folder(reports_dir, stem, ablation)
    )
    return root / "tables", root / "figures"


def ablation_folder(reports_dir: Path, stem: str, ablation: Ablation) -> Path:
    return reports_dir / "ablations" / f"{stem}-{ablation.id}"


def changed_parameters(ablation: Ablation, **selection: Any) -> list[str]:
    """Every parameter that differs from the profile's defaults, one phrase each (empty for the default run).
    The folders are left out: they say where, not what."""
    lines = [f"{k} = {v!r}" for k, v in selection.items() if v not in (None, "auto", [], ())]
    return lines + (ablation.describe().splitlines() if not ablation.is_default else [])


def parameters_html(stem: str, ablation: Ablation, changed: list[str]) -> str:
    """The box a parameterised run opens with (its parameters, the ablation id and where its outputs are)."""
    import html

    items = "".join(f"<li><code>{html.escape(c)}</code></li>" for c in changed)
    where = (
        f" Ablation <code>{ablation.id}</code>: its rows are told apart in the store by "
        f"<code>ablation = {ablation.id}</code>; its tables and figures are in "
        f"<code>ablations/{html.escape(stem)}-{ablation.id}/</code>. The profile's default level of each "
        "factor runs as the reference."
        if not ablation.is_default
        else ""
    )
    return (
        '<div class="ds-scale" style="margin-bottom:.6rem"><b>A parameterised run</b> of this report, '
        f"different from the default study in:<ul>{items}</ul>{where}</div>"
    )


def open_experiment(
    stem: str,
    name: str,
    profile: str,
    results_dir: str | Path = "results",
    reports_dir: str | Path | None = None,
    *,
    datasets: list[str] | None = None,
    segmentors: list[str] | None = None,
    seeds: int | list[int] | None = None,
    device: str = "auto",
    overrides: Any = None,
    levels: Any = None,
    train: bool | None = None,
) -> Opened:
    """Check the parameters, run what the store lacks for experiment ``name`` (see the module docstring for
    when it trains), display the opening of report ``stem`` and return its rows and output folders."""
    from IPython.display import HTML, Markdown, display

    from diffseg import experiments as ex
    from diffseg import report, viz
    from diffseg.study.plan import jobs_table, plan_work
    from diffseg.study.sweep import arms_of, run_arms

    ablation = make_ablation(name, profile, overrides, levels)
    arms = arms_of(name, profile, datasets, segmentors, seeds, device, overrides, levels)
    results = resolve(results_dir)
    reports = resolve(reports_dir or default_reports(profile))
    plan = plan_work([(name, a) for a in arms], results, profile)
    progress = None
    if not plan.empty:
        what = plan.describe(jobs_table(results, profile))
        interactive = in_jupyter_server()
        if train is False or (train is None and interactive):
            raise TrainingNotRequested(
                f"{stem}: the store {results / profile} lacks rows of {len(plan.todo)} arm(s); running them "
                f"means {what}. Set train = True in the parameters cell to run them here (progress shows "
                "below the cell), or run `make reproduce` (or `diffseg sweep`) in a terminal."
            )
        print(f"{stem}: {what}", file=sys.stderr)
        progress = True if interactive else None
    df = run_arms(arms, name, profile, results, progress)
    changed = changed_parameters(
        ablation, datasets=datasets, segmentors=segmentors, seeds=seeds, device=device
    )
    if changed:
        display(HTML(parameters_html(stem, ablation, changed)))
    display(HTML(report.page_header(stem, profile, results, ablation=ablation)))
    spec = ex.EXPERIMENTS[name]
    display(
        Markdown(viz.experiment_intro(spec.title, spec.finding, spec.description, ex.profile_notes(profile)))
    )
    provenance = viz.provenance_table(df)
    display(provenance)
    tables, figures = output_dirs(stem, reports, ablation)
    return Opened(df, provenance, ablation, results, tables, figures)


def rendered_page(executed: str | Path, reports_dir: str | Path | None, profile: str) -> tuple[Path, str]:
    """Where `diffseg report --notebook` writes an executed notebook's page, and its title.

    The report's stem comes from the notebook papermill ran (its recorded input path, else the file's name);
    papermill's recorded parameters say whether it was an ablation, whose page then goes to
    ``<reports>/ablations/<stem>-<id>.html`` beside its tables and figures, never over the default study's."""
    import nbformat

    from diffseg.report import page_title
    from diffseg.study.catalogue import EXPERIMENTS

    executed = Path(executed)
    meta = nbformat.read(executed, as_version=4).metadata.get("papermill", {}) if executed.is_file() else {}
    stem = Path(meta.get("input_path") or executed.name).name.split(".")[0]
    params = meta.get("parameters", {})
    profile = params.get("profile", profile)
    reports = resolve(reports_dir or params.get("reports_dir") or default_reports(profile))
    name = stem[3:]
    if name in EXPERIMENTS and (params.get("overrides") or params.get("levels")):
        ablation = make_ablation(name, profile, params.get("overrides"), params.get("levels"))
        return ablation_folder(reports, stem, ablation).with_suffix(".html"), (
            f"{page_title(stem)} · ablation {ablation.id}"
        )
    return reports / f"{stem}.html", page_title(stem)


def open_report(profile: str, results_dir: str | Path = "results", reports_dir: str | Path | None = None):
    """(results, tables, figures) folders of a report that reads the whole default study (00, 10)."""
    results = resolve(results_dir)
    tables, figures = output_dirs("", resolve(reports_dir or default_reports(profile)))
    return results, tables, figures


__all__ = [
    "LAB_SESSION_ENV",
    "Opened",
    "TrainingNotRequested",
    "ablation_folder",
    "changed_parameters",
    "default_reports",
    "in_jupyter_server",
    "open_experiment",
    "open_report",
    "output_dirs",
    "rendered_page",
]
