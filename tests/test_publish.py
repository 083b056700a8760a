"""diffseg.publish, render, findings and progress: byte-stable figures and pages, computed verdicts, line progress."""

from __future__ import annotations

import io
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from diffseg import findings as fd
from diffseg import publish
from diffseg.progress import JobLog, wanted
from diffseg.render import image_alts, normalise


def _figure() -> Figure:
    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.plot(np.arange(5), np.arange(5) ** 2, label="curve")
    ax.set_title("a title")
    ax.legend()
    return fig


def test_figures_are_byte_stable_and_carry_no_date(tmp_path):
    a = publish.save_figure(_figure(), "f", tmp_path / "a")
    b = publish.save_figure(_figure(), "f", tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    png, svg = (p.read_bytes() for p in a)
    assert png.startswith(b"\x89PNG") and b"Software" not in png
    assert b"<dc:date>" not in svg and b"<svg" in svg
    assert png == publish.figure_png(_figure())  # what is displayed is what is saved
    assert not list((tmp_path / "a").glob("*.tmp"))


def test_svg_ids_do_not_depend_on_the_global_salt(tmp_path):
    import matplotlib

    first = publish.figure_svg(_figure())
    with matplotlib.rc_context({"svg.hashsalt": "something else"}):
        assert publish.figure_svg(_figure()) == first


def test_show_figure_outside_ipython_writes_files_and_returns_nothing(tmp_path):
    assert publish.show_figure(_figure(), "g", tmp_path) is None
    assert (tmp_path / "g.png").is_file() and (tmp_path / "g.svg").is_file()
    assert publish.register_figure_formatter() is False  # no IPython shell here
    assert publish.display_width(_figure()) == 4 * publish.CSS_DPI


def test_bad_stem_and_failed_write_leave_nothing(tmp_path):
    with pytest.raises(ValueError, match="stem"):
        publish.save_figure(_figure(), "a/b", tmp_path)

    def fail(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        publish.atomic_write(tmp_path / "x.csv", fail)
    assert list(tmp_path.iterdir()) == []


def _executed_notebook():
    nb = nbformat.v4.new_notebook(
        metadata={"papermill": {"start_time": "2026-01-01", "input_path": "/tmp/x"}}
    )
    cell = nbformat.v4.new_code_cell("x", id="random-id")
    cell.metadata["papermill"] = {"duration": 1.5}
    cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00"}
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="IProgress not found\n"),
        nbformat.v4.new_output("stream", name="stdout", text="kept\n"),
        nbformat.v4.new_output(
            "display_data", data={"image/png": "iVBO"}, metadata={"image/png": {"alt": "fig"}}
        ),
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# t", id="other"), cell]
    return nb


def test_normalise_removes_what_varies_between_runs_and_moves_stderr_to_the_terminal():
    nb, echo = _executed_notebook(), io.StringIO()
    moved = normalise(nb, title="04 · A title", stream=echo)
    assert [c["id"] for c in nb.cells] == ["cell-000", "cell-001"]
    assert "papermill" not in nb.metadata and nb.metadata["title"] == "04 · A title"
    assert not nb.cells[1].metadata
    assert [o.get("name") for o in nb.cells[1].outputs] == ["stdout", None]
    assert moved == ["IProgress not found\n"] and "IProgress not found" in echo.getvalue()
    assert image_alts(nb) == ["fig"]


def _frame(deltas: dict[str, list[float]], experiment: str = "main_results") -> pd.DataFrame:
    """Base 40% for every seed; refined = base + delta (percent points) per setting (segmentor name) and seed."""
    rows = []
    for seg, ds in deltas.items():
        for seed, d in enumerate(ds):
            run = f"{seg}-{seed}"
            common = dict(run_id=run, experiment=experiment, dataset="ade20k", segmentor=seg, seed=seed,
                          test="ss", metric="mIoU", class_name="", arm="DDPS")  # fmt: skip
            rows.append({**common, "method": "base", "step": 0, "value": 0.40})
            rows.append(
                {**common, "method": "refined", "step": 1, "value": 0.40 + d / 200}
            )  # an earlier step
            rows.append({**common, "method": "refined", "step": 2, "value": 0.40 + d / 100})
    return pd.DataFrame(rows)


def test_main_finding_interval_and_verdicts_from_the_numbers():
    f = fd.main_results(_frame({"up": [1.0, 1.2, 0.8], "flat": [0.5, -0.5, 0.0]}))
    by = {c.setting: c for c in f.contrasts}
    up = by["ade20k / up"]
    # mean 1.0, std 0.2, n 3: half-width t(2) * 0.2 / sqrt(3) = 4.303 * 0.11547
    assert up.mean == pytest.approx(1.0) and up.half_width == pytest.approx(
        4.303 * 0.2 / np.sqrt(3), rel=1e-3
    )
    assert up.verdict == "supports" and by["ade20k / flat"].verdict == "inconclusive"
    assert f.verdict == "partly supported (1 of 2 settings)"
    assert up.interval == "+1.00 [+0.50, +1.50]"


@pytest.mark.parametrize(
    "verdicts, mode, out",
    [
        (["supports", "supports"], "all", "supported"),
        (["supports", "contradicts"], "all", "mixed"),
        (["contradicts", "inconclusive"], "all", "contradicted"),
        (["inconclusive"], "all", "not shown"),
        (["inconclusive", "supports"], "any", "supported"),
        ([], "all", "not run"),
    ],
)
def test_combine(verdicts, mode, out):
    cs = [fd.Contrast("s", "l", 1.0, 0.5, 3, v) for v in verdicts]
    assert fd.combine(cs, mode) == out


def test_findings_of_an_empty_store_say_not_run():
    for f in fd.all_findings(pd.DataFrame()):
        assert f.verdict.startswith("not") and not f.contrasts
    assert fd.finding_of_report(pd.DataFrame(), "04_inference_scheme").key == "finding3"
    assert fd.finding_of_report(pd.DataFrame(), "05_schedule_and_T") is None


def test_progress_lines_and_when_they_are_printed():
    out = io.StringIO()
    log = JobLog("[cpu] refiners", 2, stream=out)
    log.finished("ade20k/segformer-tiny seed 0", 10.0, 200)
    log.finished("ade20k/segformer-tiny seed 1", 5.0)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[cpu] refiners 1/2 ade20k/segformer-tiny seed 0: 10.0 s, 20.0 it/s")
    assert "left" in lines[0] and lines[1].startswith("[cpu] refiners 2/2") and "left" not in lines[1]
    # slow iterations read as seconds per iteration (not "0.0 it/s"), and a job's peak memory is shown
    slow = JobLog("[paper-dry] stage 1", 1, stream=out).finished(
        "ade20k/segformer-b5-mmseg", 83.0, 2, 3 * 2**30
    )
    assert slow.startswith(
        "[paper-dry] stage 1 1/1 ade20k/segformer-b5-mmseg: 83.0 s, 41.5 s/it, peak 3.0 GiB |"
    )
    assert wanted(True) and not wanted(False)
    assert not wanted(None)  # pytest captures stderr: not a terminal


def test_the_job_table_keeps_every_finished_job_across_sweeps(tmp_path):
    from diffseg.study.jobs import COLUMNS, JobTable

    path = tmp_path / "cpu" / "jobs.csv"
    JobTable(path).add("refiners", "ade20k/segformer-tiny seed 0", 12.345, 500, 3 * 2**29, "cpu")
    table = JobTable(path)  # a resumed sweep appends to what the first one wrote
    table.add("evaluations", "main_results: x", 1.0, None, 2**30, "cpu")
    df = pd.read_csv(path)
    assert tuple(df.columns) == COLUMNS and len(df) == 2
    assert df["seconds"].tolist() == [12.35, 1.0] and df["peak_memory_gib"].tolist() == [1.5, 1.0]
    assert pd.isna(df["iterations"][1]) and not list(path.parent.glob(".jobs.csv*"))  # no temporary left


_PEAK_WINDOW = """
import torch
from diffseg.memory import peak_memory, reset_peak_memory
big = torch.ones(512 * 2**20 // 4)  # 512 MiB, touched, then handed back to the OS
peak_with_big = peak_memory("cpu")
del big
reset_peak_memory("cpu")
before = peak_memory("cpu")
held = torch.ones(256 * 2**20 // 4)  # 256 MiB more resident than at the reset
print(peak_with_big, before, peak_memory("cpu"))
"""


def test_a_peak_memory_window_measures_what_happens_inside_it():
    import subprocess
    import sys

    # in a fresh process: the test process's own heap and threads (hundreds of tests in) could move its resident
    # set inside the window, which is what the sweep's per-job figure tolerates but this test must not
    out = subprocess.run([sys.executable, "-c", _PEAK_WINDOW], capture_output=True, text=True, check=True)
    peak_with_big, before, after = map(int, out.stdout.split())
    assert before < peak_with_big - 300 * 2**20  # the window forgot the earlier peak
    assert after - before >= 200 * 2**20
