"""Two gloo processes, each with half of the data, reproduce the single-process metrics exactly
(IgniteSegMetrics.compute and all_reduce_ over several SegMetrics at once)."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import ignite.distributed as idist
import torch

from diffseg.metrics import IgniteSegMetrics, SegMetrics, all_reduce_

NUM_CLASSES = 5
RATIO = 0.1


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    """(4, 16, 20) pred / target, the same in every process (fixed generator)."""
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, NUM_CLASSES, (4, 1, 4, 5), generator=gen)
    target = torch.nn.functional.interpolate(target.float(), scale_factor=4, mode="nearest")[:, 0].long()
    target[:, 6:9, 2:5] = 255
    noise = torch.randint(0, NUM_CLASSES, target.shape, generator=gen)
    pred = torch.where(
        torch.rand(target.shape, generator=gen) < 0.7, target.clamp(max=NUM_CLASSES - 1), noise
    )
    return pred, target


def _free_port() -> int:
    # Several test runs may share the machine: never use ignite's fixed default port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(local_rank: int, out_dir: str) -> None:
    rank, world = idist.get_rank(), idist.get_world_size()
    pred, target = _data()
    mine = slice(rank * len(pred) // world, (rank + 1) * len(pred) // world)  # this process's half

    adapter = IgniteSegMetrics(NUM_CLASSES, boundary_ratio=RATIO)
    adapter.reset()
    adapter.update((pred[mine], target[mine]))
    from_adapter = adapter.compute()
    again = adapter.compute()  # a second compute must not double-count

    # Several metrics reduced in one call; the second one counts pred against itself.
    a, b = SegMetrics(NUM_CLASSES, boundary_ratio=RATIO), SegMetrics(NUM_CLASSES, boundary_ratio=RATIO)
    a.update(pred[mine], target[mine])
    b.update(pred[mine], pred[mine])
    all_reduce_([a, b])
    result = {
        "world": world,
        "adapter": from_adapter,
        "again": again,
        "a": {k: v.tolist() for k, v in a.state_dict().items()},
        "b_mIoU": b.compute()["mIoU"],
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))


def _same(x, y) -> bool:
    if isinstance(x, list):
        return len(x) == len(y) and all(_same(u, v) for u, v in zip(x, y))
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, float) and math.isnan(x):
        return isinstance(y, float) and math.isnan(y)
    return x == y or abs(x - y) < 1e-12


def test_two_gloo_processes_match_single_process(tmp_path):
    with idist.Parallel(
        backend="gloo", nproc_per_node=2, master_addr="127.0.0.1", master_port=_free_port()
    ) as p:
        p.run(_worker, str(tmp_path))

    pred, target = _data()
    single = SegMetrics(NUM_CLASSES, boundary_ratio=RATIO)
    single.update(pred, target)
    expected = single.compute()
    expected_state = {k: v.tolist() for k, v in single.state_dict().items()}
    assert int(single.boundary_union.sum()) > 0 and expected["mIoU"] < 1.0  # a non-trivial example

    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["world"] == 2
        assert _same(result["adapter"], expected), rank
        assert _same(result["again"], expected), rank
        assert result["a"] == expected_state, rank
        assert result["b_mIoU"] == 1.0
