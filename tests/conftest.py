"""Test-wide settings: one torch thread per process.

The suite runs on 2-core machines where several processes (pytest, papermill kernels, gloo workers) compete;
torch's default of one thread per core then oversubscribes the cores and small ops slow down many times over.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
