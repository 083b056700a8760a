"""Learning curves: validation mIoU recorded while a training runs, so a reader can tell converged from not.

With ``train.eval_every = N > 0`` a training evaluates itself every N iterations and at its last one (the
iterations are global: a stage 2 that resumes a shared stage 1 at iteration S records S + N, S + 2N, ...), on a
fixed subset of the validation split (its first `MAX_IMAGES` images, single-scale). A base segmentor records its
own mIoU; a refiner records, in one pass, the base mIoU on that subset, the refined mIoU after the first network
evaluation (``first_step``) and after the arm's whole sampler (``final_step``), with the weights the final
evaluation would use (the EMA weights in stage 2). During stage 1 the refiner is a single-step decoder and is
evaluated with the single-step sampler, so its two refined values coincide there. An arm that samples with free
re-noising also records the strict posterior sampler at the same number of network evaluations
(``strict_final_step``), so finding 3's contrast has a budget curve from the same trainings. Only the steps kept
are upsampled and scored (the sampler runs whole), which makes a point about half as costly as a full evaluation.

Each point goes to ``<run folder>/curve.csv`` as soon as it is measured; the file is rewritten whole (atomically)
with the union of what it held and the new point, so a resumed training neither loses nor repeats points.
`diffseg.experiments` copies the curves into the results store (``experiment == "learning_curves"``).

`plateau` is the convergence criterion the reports state: the last two points of a curve within ``tol`` mIoU
points (default `PLATEAU_TOL`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from diffseg.atomic import atomic_write

CURVE_FILE = "curve.csv"
BASE_CURVE_FILE = "base_curve.csv"  # a base trained inside a refiner's run folder keeps its own file
MAX_IMAGES = 50
PLATEAU_TOL = 0.3  # mIoU points between the last two curve points
_FIELDS = ("iteration", "stage", "curve", "value")


def points(every: int, total: int, start: int = 0) -> list[int]:
    """The iterations in (start, total] at which a training of ``total`` iterations records a point."""
    if every <= 0 or total <= start:
        return []
    its = list(range((start // every + 1) * every, total + 1, every))
    return its if its and its[-1] == total else [*its, total]


def read(run_dir: str | Path, name: str = CURVE_FILE) -> pd.DataFrame:
    """The curve of a run folder: columns iteration, stage, curve, value (mIoU, a fraction); empty if none."""
    path = Path(run_dir) / name
    if not path.exists():
        return pd.DataFrame(columns=list(_FIELDS))
    df = pd.read_csv(path)
    missing = [c for c in _FIELDS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path} is not a learning curve (missing column(s) {missing}); delete it to re-record"
        )
    return df


def record(
    run_dir: str | Path, iteration: int, stage: int, values: dict[str, float], name: str = CURVE_FILE
) -> Path:
    """Add one point (``values``: curve name -> mIoU) to ``run_dir``'s curve, replacing any at that iteration."""
    old = read(run_dir, name)
    old = old[old["iteration"] != iteration]
    new = pd.DataFrame(
        [{"iteration": iteration, "stage": stage, "curve": k, "value": float(v)} for k, v in values.items()]
    )
    df = pd.concat([old, new], ignore_index=True) if len(old) else new
    df = df.sort_values(["iteration", "curve"], kind="stable")
    buf = io.StringIO()
    df.to_csv(buf, index=False, columns=list(_FIELDS), quoting=csv.QUOTE_MINIMAL)
    return atomic_write(Path(run_dir) / name, lambda tmp: Path(tmp).write_text(buf.getvalue()))


def attach(
    trainer,
    run_dir: str | Path,
    every: int,
    total: int,
    evaluate: Callable[[int], tuple[int, dict[str, float]]],
    is_writer: bool = True,
    name: str = CURVE_FILE,
) -> list[int]:
    """Evaluate at `points` (those the curve lacks) while ``trainer`` runs; returns the iterations it will record.

    ``evaluate(iteration) -> (stage, {curve: mIoU})`` runs on every process (its metrics all-reduce); only the
    ``is_writer`` process (rank 0) writes.
    """
    from ignite.engine import Events

    have = set(read(run_dir, name)["iteration"].astype(int))
    todo = [i for i in points(every, total) if i not in have]
    if not todo:
        return []
    wanted = set(todo)

    @trainer.on(Events.ITERATION_COMPLETED(event_filter=lambda _, i: i in wanted))
    def _point(engine) -> None:
        it = engine.state.iteration
        stage, values = evaluate(it)
        if is_writer:
            record(run_dir, it, stage, values, name)

    return todo


def eval_config(cfg, stage: int):
    """The evaluation settings of a curve point: the run's, single-scale; single step during stage 1."""
    from diffseg.config import replace

    ev = replace(cfg.eval, multi_scale=False)
    if stage == 1:
        ev = replace(ev, sampler="single_step", num_evals=1)
    return replace(cfg, eval=ev)


def records_strict(ecfg) -> bool:
    """Whether a curve point of evaluation config ``ecfg`` also records the strict sampler (finding 3)."""
    return ecfg.eval.sampler == "free_renoise" and not ecfg.eval.multi_scale and ecfg.train.curve_strict


def subset_loader(cfg, val_ds, rank: int = 0, world_size: int = 1):
    """The fixed validation subset of the curves (this rank's share of the first `MAX_IMAGES` images).

    Its own generator: creating the loader's iterator must not draw from the global RNG the training uses.
    """
    import torch
    from torch.utils.data import DataLoader, Subset

    from diffseg.data import collate

    n = min(MAX_IMAGES, len(val_ds))
    return DataLoader(
        Subset(val_ds, list(range(rank, n, world_size))),
        batch_size=cfg.eval.batch_size,
        shuffle=False,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(0),
    )


def plateau(values: pd.Series, tol: float = PLATEAU_TOL) -> bool:
    """Whether a curve (mIoU fractions, in iteration order) has flattened: last two points within ``tol`` points."""
    v = pd.Series(values, dtype=float).dropna()
    if len(v) < 2:
        return False
    return bool(abs(100.0 * (v.iloc[-1] - v.iloc[-2])) <= tol)
