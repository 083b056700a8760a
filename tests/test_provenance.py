"""Provenance: every new result row and sweep job line names the machine that made it (the store's
machines.csv); rows and lines from before read as "unrecorded"; reports say which machines made the results."""

from __future__ import annotations

import multiprocessing as mp

import pandas as pd

from diffseg import machines
from diffseg.results import ResultsStore
from diffseg.study.jobs import JobTable


def test_new_rows_and_job_lines_name_the_machine_that_made_them(smoke_store):
    root = smoke_store / "smoke"
    rows = ResultsStore(root).load()
    table = machines.load(root)
    jobs = pd.read_csv(root / "jobs.csv", dtype=str)
    assert set(machines.FIELDS) <= set(table.columns)
    assert table["machine"].is_unique  # two workers wrote rows at once: one line per machine, none lost
    assert set(rows["machine"]) <= set(table["machine"]) and machines.UNRECORDED not in set(rows["machine"])
    assert "machine" in jobs.columns and set(jobs["machine"]) <= set(table["machine"])
    worker = table.set_index("machine").loc[rows["machine"].iloc[0]]
    assert worker["threads"] == "1"  # the sweep's workers' thread count, not the driver's
    assert worker["cpu_capability"] and worker["torch"]
    made_on = machines.made_on(rows, table)
    assert made_on.startswith("Made on: ") and f"(all {len(rows):,} rows)" in made_on


def _register_many(args: tuple[str, int]) -> None:
    root, i = args
    me = machines.describe()
    for _ in range(5):
        machines.register(root, me)  # the same machine from every process
        machines.register(root, {**me, "machine": f"other{i}"})  # and one of its own


def test_concurrent_writers_neither_lose_nor_duplicate_a_machine(tmp_path):
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_register_many, [(str(tmp_path), i) for i in range(8)])
    ids = machines.load(tmp_path)["machine"].tolist()
    assert sorted(ids) == sorted({machines.describe()["machine"], *(f"other{i}" for i in range(8))})
    assert [p.name for p in tmp_path.iterdir()] == [machines.MACHINES_FILE]  # no lock or temporary file left


def test_rows_and_job_lines_from_before_the_table_read_as_unrecorded(tmp_path):
    store = ResultsStore(tmp_path)
    store.rows_dir.mkdir()
    pd.DataFrame({"run_id": ["old"] * 3, "experiment": "x", "value": [0.1, 0.2, 0.3]}).to_parquet(
        store.rows_dir / "old.parquet"
    )
    store.write_rows("new", [{"experiment": "x", "value": 0.4}], {})
    rows = store.load()
    assert rows.set_index("run_id")["machine"].loc["old"].eq(machines.UNRECORDED).all()
    assert (tmp_path / "rows" / "old.parquet").stat().st_size > 0  # read as unrecorded, not rewritten
    text = machines.made_on(rows, machines.load(tmp_path))
    assert text.startswith("Made on: unrecorded: 3 rows; ") and text.endswith(", 1 thread, cpu: 1 row.")
    assert machines.made_on(rows[rows["run_id"] == "old"], machines.load(tmp_path)) == (
        "Made on: unrecorded (all 3 rows)."
    )
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(
        "phase,job,seconds,iterations,peak_memory_gib,device,finished_at\nb,j,1.00,5,0.100,cpu,t\n"
    )
    table = JobTable(jobs)
    table.add("refiners", "r", 2.0, 10, 2**30, "cpu", "abc")
    assert pd.read_csv(jobs)["machine"].tolist() == [machines.UNRECORDED, "abc"]


def test_reports_name_the_machines_from_the_store_not_from_the_host(smoke_store, tmp_path, monkeypatch):
    from diffseg.report import page_header, write_index

    rows = ResultsStore(smoke_store / "smoke").load()
    line = machines.made_on(rows, machines.load(smoke_store / "smoke"))
    header = page_header("01_main_results", "smoke", smoke_store)
    index = write_index("smoke", smoke_store, tmp_path).read_bytes()
    assert line in header and line.encode() in index
    other = {**machines.describe(), "cpu_model": "Another CPU", "threads": "64"}
    monkeypatch.setattr(machines, "describe", lambda: {**other, "machine": "another"})
    assert page_header("01_main_results", "smoke", smoke_store) == header  # rendered elsewhere: same bytes
    assert write_index("smoke", smoke_store, tmp_path).read_bytes() == index
