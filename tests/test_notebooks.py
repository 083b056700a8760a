"""Every notebook runs top to bottom under papermill on the `smoke` profile, and its page shows the study only.

The page checks read what a reader gets: every figure the notebook makes is an inline PNG in the executed
notebook and an ``<img>`` in the HTML; no cell wrote to stderr (warnings, progress bars); no path of the build
machine is on the page; and rendering again gives the same bytes. `test_committed_reports_*` hold the committed
`cpu` reports to the same standard.
"""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

from diffseg import experiments as ex
from diffseg.render import render_html
from diffseg.report import TITLES, page_title, write_index

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
# nbconvert's own stylesheet embeds data:image/png and data:image/svg icons, so count <img> tags, not data URIs.
IMG = re.compile(r"<img\b[^>]*\bsrc=\"data:image/png;base64,")
MACHINE_PATHS = (".venv", "/tmp/", f"{Path.home()}/", f"{ROOT}/")


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory) -> tuple[Path, Path]:
    """The smoke study's results, computed once for all notebooks (two worker processes, as `make` does)."""
    base = tmp_path_factory.mktemp("study")
    mp = pytest.MonkeyPatch()
    mp.setenv("DIFFSEG_DATA", str(base / "data"))  # the kernels inherit it
    results = base / "results"
    df = ex.sweep("smoke", results, workers=2, progress=False)
    assert set(df["experiment"]) >= {"main_results", "noise_object_and_type", "inference_scheme"}
    yield results, base / "reports"
    mp.undo()


def _execute(path: Path, results: Path, reports: Path, out_dir: Path) -> Path:
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = out_dir / f"{path.stem}.ipynb"
    nbformat.write(nb, src)
    out = out_dir / f"{path.stem}.executed.ipynb"
    # raises PapermillExecutionError, naming the cell, when a cell fails
    papermill.execute_notebook(
        str(src),
        str(out),
        parameters={"profile": "smoke", "results_dir": str(results), "reports_dir": str(reports)},
        kernel_name="python3",
        cwd=str(ROOT),
        progress_bar=False,
    )
    return out


def _outputs(cell) -> list:
    return cell.get("outputs", []) if cell.cell_type == "code" else []


def page_problems(page: str) -> list[str]:
    """What must never be on a report page: stderr blocks, tracebacks, figure reprs, build-machine paths."""
    problems = []
    if 'data-mime-type="application/vnd.jupyter.stderr"' in page:  # (the stylesheet names it in selectors)
        problems.append("a stderr output block")
    if "&lt;Figure size" in page or "<Figure size" in page:
        problems.append("a figure shown as its text repr")
    if "PosixPath(" in page:
        problems.append("a path's repr (a cell ended with a function returning a path)")
    problems += [f"the build-machine path {p!r}" for p in MACHINE_PATHS if p in page]
    return problems


def test_there_is_a_notebook_per_table_and_figure() -> None:
    names = {p.stem for p in NOTEBOOKS}
    assert set(TITLES) == names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_under_smoke_and_shows_its_figures(path: Path, smoke_study, tmp_path) -> None:
    results, reports = smoke_study
    executed = nbformat.read(_execute(path, results, reports, tmp_path), as_version=4)
    pngs = 0
    for i, cell in enumerate(executed.cells):
        outs = _outputs(cell)
        stderr = [o for o in outs if o.get("output_type") == "stream" and o.get("name") == "stderr"]
        assert not stderr, f"{path.stem} cell {i} wrote to stderr: {''.join(stderr[0]['text'])[:300]}"
        images = sum("image/png" in o.get("data", {}) for o in outs)
        if "show_figure(" in cell.source:
            assert images, f"{path.stem} cell {i} calls show_figure but displays no image"
        pngs += images
    saved = sorted((reports / "figures").glob(f"{path.stem[:2]}_*.png"))
    tables = sorted((reports / "tables").glob(f"{path.stem[:2]}_*.csv"))
    assert saved or tables, f"{path.stem} saved no table or figure under {reports}"
    assert pngs == len(saved), f"{path.stem}: {pngs} inline images for {len(saved)} saved figures"

    html = render_html(
        tmp_path / f"{path.stem}.executed.ipynb",
        tmp_path / "a" / f"{path.stem}.html",
        title=page_title(path.stem),
    )
    page = html.read_text()
    assert len(IMG.findall(page)) == len(saved), f"{path.stem}: <img> count differs from its figures"
    assert not page_problems(page), f"{path.stem}: {page_problems(page)}"
    assert 'href="index.html"' in page, f"{path.stem} does not link back to the index"
    again = render_html(
        tmp_path / f"{path.stem}.executed.ipynb",
        tmp_path / "b" / f"{path.stem}.html",
        title=page_title(path.stem),
    )
    assert again.read_bytes() == html.read_bytes()


@pytest.mark.long
@pytest.mark.parametrize("stem", ["01_main_results", "07_qualitative"])
def test_rerunning_a_notebook_gives_identical_bytes(stem: str, smoke_study, tmp_path) -> None:
    """Executed twice on unchanged results: the same HTML, figures (PNG and SVG) and tables, byte for byte."""
    results, reports = smoke_study
    path = ROOT / "notebooks" / f"{stem}.py"
    snapshots = []
    for run in ("first", "second"):
        out_dir = tmp_path / run
        out_dir.mkdir()
        html = render_html(_execute(path, results, reports, out_dir), out_dir / f"{stem}.html")
        files = sorted((reports / "figures").glob(f"{stem[:2]}_*")) + sorted(
            (reports / "tables").glob(f"{stem[:2]}_*")
        )
        snapshots.append({"html": html.read_bytes(), **{f.name: f.read_bytes() for f in files}})
    first, second = snapshots
    assert first.keys() == second.keys()
    changed = [k for k in first if first[k] != second[k]]
    assert not changed, f"{stem}: re-rendering changed {changed}"


def test_index_shows_the_findings_and_links_every_report(smoke_study, tmp_path) -> None:
    results, _ = smoke_study
    (tmp_path / "figures").mkdir()
    for p in NOTEBOOKS:
        (tmp_path / f"{p.stem}.html").write_text("<html></html>")
    (tmp_path / "figures" / "04_steps_mIoU.png").write_bytes(b"png")
    index = write_index("smoke", results, tmp_path).read_text()
    for p in NOTEBOOKS:
        assert f'href="{p.stem}.html"' in index
    assert "segformer-tiny" in index and "Δ mIoU" in index
    for title in ("Main results", "Finding 1", "Finding 2", "Finding 3"):
        assert title in index
    assert "Verdict here:" in index and "95% interval" in index
    assert '<img src="figures/04_steps_mIoU.png"' in index  # the thumbnail of a figure that exists ...
    assert "figures/03_noise_object_and_type_heatmap.png" not in index  # ... and none for one that does not
    assert "not ADE20K or Cityscapes results" in index
    assert not page_problems(index)
    assert write_index("smoke", results, tmp_path).read_text() == index


# ---- the committed reports of the cpu study -------------------------------------------------------------------
COMMITTED = ROOT / "reports"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_reports_show_every_figure_and_nothing_else(path: Path) -> None:
    page_path = COMMITTED / f"{path.stem}.html"
    if not page_path.is_file():
        pytest.skip(f"{page_path} is not committed")
    page = page_path.read_text()
    figures = sorted((COMMITTED / "figures").glob(f"{path.stem[:2]}_*.png"))
    assert len(IMG.findall(page)) == len(figures), (
        f"{page_path.name} shows {len(IMG.findall(page))} images for {len(figures)} figures in reports/figures"
    )
    assert not page_problems(page), f"{page_path.name}: {page_problems(page)}"
    assert "+dirty" not in page, f"{page_path.name}: the committed study was produced from a dirty tree"


def test_committed_index_shows_the_findings() -> None:
    index = (COMMITTED / "index.html").read_text()
    assert "Findings at a glance" in index and index.count('class="ds-finding"') == 4
    assert not page_problems(index) and "+dirty" not in index


# ---- parameterised runs and the kernel's working folder ------------------------------------------------------
def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_an_ablation_run_from_notebooks_runs_only_its_arms_and_states_its_parameters(
    smoke_study, tmp_path
) -> None:
    """The README's worked ablation, from a kernel started in notebooks/ and with papermill's text parameters:
    its own arms only (the default level as the reference), its own folder, the default study untouched."""
    from diffseg.notebook import rendered_page
    from diffseg.results import ResultsStore

    results, reports = smoke_study
    store = ResultsStore(results / "smoke")
    default_rows = store.load()
    default_tables = {p.name: p.read_bytes() for p in (reports / "tables").glob("05_*")}
    before = _listing(ROOT / "notebooks")
    nb = jupytext.read(ROOT / "notebooks" / "05_schedule_and_T.py")
    src = tmp_path / "05_schedule_and_T.ipynb"
    nbformat.write(nb, src)
    out = tmp_path / "05_ablation.ipynb"
    levels, overrides = '{"num_steps": [5]}', '["train.stage2_iterations=6"]'
    papermill.execute_notebook(
        str(src),
        str(out),
        parameters={"profile": "smoke", "results_dir": str(results), "reports_dir": str(reports),
                    "levels": levels, "overrides": overrides},
        kernel_name="python3",
        cwd=str(ROOT / "notebooks"),
        progress_bar=False,
    )  # fmt: skip
    assert _listing(ROOT / "notebooks") == before, "the run wrote under notebooks/"
    assert store.load().equals(default_rows), "the default study's table changed"
    assert {p.name: p.read_bytes() for p in (reports / "tables").glob("05_*")} == default_tables
    ablation = ex.arms_of("schedule_and_T", "smoke", overrides=overrides, levels=levels)[0].labels["ablation"]
    rows = store.load_ablation(ablation)
    refined = rows[(rows["method"] == "refined") & (rows["test"] == "ss")]
    assert set(zip(refined["schedule"], refined["num_steps"])) == {
        ("linear", 10),
        ("linear", 5),
        ("cosine", 5),
    }
    page, title = rendered_page(out, reports, "smoke")
    assert page == reports / "ablations" / f"05_schedule_and_T-{ablation}.html" and ablation in title
    html = render_html(out, page, title=title).read_text()
    assert (
        "A parameterised run" in html
        and "levels of num_steps: 5" in html
        and "train.stage2_iterations=6" in html
    )
    assert 'href="../index.html"' in html and not page_problems(html)
    assert (
        reports / "ablations" / f"05_schedule_and_T-{ablation}" / "tables" / "05_schedule_and_T.csv"
    ).is_file()


COMMITTED_STORE = ROOT / "results" / "cpu" / "results.parquet"


@pytest.mark.skipif(not COMMITTED_STORE.is_file(), reason="no committed cpu study")
def test_a_kernel_started_in_notebooks_reads_the_committed_study(tmp_path) -> None:
    """`papermill --cwd notebooks` (as JupyterLab starts kernels) and a run from the project root read the same
    committed store and give the same tables; nothing appears under notebooks/ and nothing trains."""
    before = _listing(ROOT / "notebooks")
    nb = jupytext.read(ROOT / "notebooks" / "01_main_results.py")
    src = tmp_path / "01.ipynb"
    nbformat.write(nb, src)
    tables = {}
    for where, cwd in (("notebooks", ROOT / "notebooks"), ("root", ROOT)):
        papermill.execute_notebook(
            str(src),
            str(tmp_path / f"01-{where}.ipynb"),
            parameters={"reports_dir": str(tmp_path / where), "train": False},  # missing rows would raise
            kernel_name="python3",
            cwd=str(cwd),
            progress_bar=False,
        )
        tables[where] = {p.name: p.read_bytes() for p in (tmp_path / where / "tables").glob("*")}
    assert tables["notebooks"] and tables["notebooks"] == tables["root"]
    committed = ROOT / "reports" / "tables" / "01_main_results.csv"
    assert tables["root"]["01_main_results.csv"] == committed.read_bytes()
    assert _listing(ROOT / "notebooks") == before
