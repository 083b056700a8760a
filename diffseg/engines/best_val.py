"""``eval.select = "best_val"``: keep the refiner weights of the best learning-curve point, as the release reports
its best checkpoint on the val set (e.g. ``best_mIoU_iter_144000``).

The selection is made on the learning curve's validation subset (`diffseg.curves`: its first ``MAX_IMAGES`` val
images, final-step mIoU of the arm's sampler), among the points of the refiner's last stage (stage 2 of a
two-stage training: stage 1 is a single-step decoder the release never reports). Selecting on the split that is
also reported is optimistic; that is why the final weights are always evaluated too and every row says which
weights it comes from (``method == "refined (best val)"`` beside the final weights' ``"refined"``).

Files in the run folder, both written atomically (weights first, so the record never names missing weights):
``best_val.pt`` (the weights as evaluated: the EMA weights in stage 2, a state dict loaded with
``weights_only=True``) and ``best_val.json`` (``{"iteration": it, "mIoU": value}``). A resumed training reads the
record and only replaces it with a strictly better point.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from diffseg.atomic import atomic_write_text
from diffseg.engines.common import atomic_torch_save

BEST_WEIGHTS = "best_val.pt"
BEST_RECORD = "best_val.json"
BEST_METHOD = "refined (best val)"  # the `method` of rows evaluated with the selected weights


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """``{"iteration", "mIoU"}`` of the selected point, or None when none was kept (yet)."""
    path = Path(run_dir) / BEST_RECORD
    if not path.exists() or not (Path(run_dir) / BEST_WEIGHTS).exists():
        return None
    record = json.loads(path.read_text())
    if not {"iteration", "mIoU"} <= set(record):
        raise ValueError(
            f"{path} is not a best-val record (expected keys iteration, mIoU); delete it to re-select"
        )
    return record


def offer(run_dir: str | Path, iteration: int, miou: float, state: dict[str, torch.Tensor]) -> bool:
    """Keep ``state`` (the weights just evaluated at ``iteration``) if ``miou`` beats the kept point; True if kept."""
    record = read_record(run_dir)
    if record is not None and miou <= record["mIoU"]:
        return False
    atomic_torch_save({k: v.detach().cpu().clone() for k, v in state.items()}, Path(run_dir) / BEST_WEIGHTS)
    atomic_write_text(
        Path(run_dir) / BEST_RECORD, json.dumps({"iteration": int(iteration), "mIoU": float(miou)})
    )
    return True


def load_weights(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The kept weights and their record; a clear error when the run kept none."""
    record = read_record(run_dir)
    if record is None:
        raise FileNotFoundError(
            f"{run_dir} holds no best-val weights ({BEST_WEIGHTS}, {BEST_RECORD}): train it with "
            f"eval.select=best_val and train.eval_every > 0"
        )
    return torch.load(Path(run_dir) / BEST_WEIGHTS, map_location="cpu", weights_only=True), record
