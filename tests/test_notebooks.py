"""Every notebook runs top to bottom under papermill on the `smoke` profile, and the index links them all."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

from diffseg import experiments as ex
from diffseg.report import write_index

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory) -> tuple[Path, Path]:
    """The smoke study's results, computed once for all notebooks (two worker processes, as `make` does)."""
    base = tmp_path_factory.mktemp("study")
    mp = pytest.MonkeyPatch()
    mp.setenv("DIFFSEG_DATA", str(base / "data"))  # the kernels inherit it
    results = base / "results"
    df = ex.sweep("smoke", results, workers=2)
    assert set(df["experiment"]) >= {"main_results", "noise_object_and_type", "inference_scheme"}
    yield results, base / "reports"
    mp.undo()


def test_there_is_a_notebook_per_table_and_figure() -> None:
    names = {p.stem for p in NOTEBOOKS}
    assert {
        "00_data",
        "01_main_results",
        "02_naive_integration",
        "03_noise_object_and_type",
        "04_inference_scheme",
        "05_schedule_and_T",
        "06_condition_and_training",
        "07_qualitative",
        "08_mask_prior",
    } <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_under_smoke(path: Path, smoke_study, tmp_path) -> None:
    results, reports = smoke_study
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / f"{path.stem}.ipynb"
    nbformat.write(nb, src)
    out = tmp_path / f"{path.stem}.out.ipynb"
    papermill.execute_notebook(
        str(src),
        str(out),
        parameters={"profile": "smoke", "results_dir": str(results), "reports_dir": str(reports)},
        kernel_name="python3",
        cwd=str(ROOT),
        progress_bar=False,
    )
    executed = nbformat.read(out, as_version=4)
    errors = [
        o
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    written = [
        *(reports / "tables").glob(f"{path.stem[:2]}_*.csv"),
        *(reports / "figures").glob(f"{path.stem[:2]}_*.png"),
    ]
    assert written, f"{path.stem} saved no table or figure under {reports}"


def test_index_links_every_report(smoke_study, tmp_path) -> None:
    results, _ = smoke_study
    for p in NOTEBOOKS:
        (tmp_path / f"{p.stem}.html").write_text("<html></html>")
    index = write_index("smoke", results, tmp_path).read_text()
    for p in NOTEBOOKS:
        assert f'href="{p.stem}.html"' in index
    assert "segformer-tiny" in index and "Δ mIoU" in index
