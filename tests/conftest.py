"""Test-wide settings: one torch thread per process.

The suite runs on 2-core machines where several processes (pytest, papermill kernels, gloo workers) compete;
torch's default of one thread per core then oversubscribes the cores and small ops slow down many times over.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smoke_store(tmp_path_factory):
    """The smoke profile's main results, made by a sweep on two worker processes (as `make` runs it), shared by
    the provenance and `diffseg verify` tests. Read-only: a test that changes it works on a copy; its data are in
    ``results/../data`` (``$DIFFSEG_DATA`` while it is made)."""
    from diffseg import experiments as ex

    base = tmp_path_factory.mktemp("smoke-store")
    results = base / "results"
    with pytest.MonkeyPatch.context() as mp:  # its data beside it (a test re-making it sets this again)
        mp.setenv("DIFFSEG_DATA", str(base / "data"))
        ex.sweep("smoke", results, experiments=["main_results"], workers=2, progress=False)
    return results
