"""Random streams under DDP: ranks draw the global batch's augmentations and independent refiner noise."""

from __future__ import annotations

import itertools

import pytest
import torch

import diffseg.engines.trainers as trainers
from diffseg.config import apply_overrides
from diffseg.engines import build_models, get_dataflow
from diffseg.engines.common import STREAM_AUGMENT, STREAM_EVAL, STREAM_REFINER, iteration_seed
from diffseg.engines.dataflow import IterationSampler
from diffseg.engines.schedule import Stages
from diffseg.profiles import profile_config


def test_ranks_together_draw_what_one_process_draws_for_the_global_batch() -> None:
    one = list(IterationSampler(num_items=10, batch_size=6, total_iters=5, seed=3))
    ranks = [
        list(IterationSampler(num_items=10, batch_size=3, total_iters=5, seed=3, rank=r, world_size=2))
        for r in (0, 1)
    ]
    for it in range(5):
        assert ranks[0][it] + ranks[1][it] == one[it], it  # same items, same augmentation seeds


def test_stream_seeds_do_not_collide() -> None:
    """Every (stream, iteration, key) is its own seed; item 1's augmentation is not the refiner's stream."""
    assert iteration_seed(0, 4, STREAM_AUGMENT, 1) != iteration_seed(0, 4, STREAM_REFINER, 0)
    tuples = list(
        itertools.product(range(3), range(20), (STREAM_AUGMENT, STREAM_REFINER, STREAM_EVAL), range(8))
    )
    seeds = {iteration_seed(s, i, stream, k) for s, i, stream, k in tuples}
    assert len(seeds) == len(tuples)
    assert all(0 <= s < 2**62 for s in seeds)
    assert iteration_seed(1, 2, 3, 4) == iteration_seed(1, 2, 3, 4)


def _first_loss(cfg, batch, rank: int, monkeypatch) -> float:
    monkeypatch.setattr(trainers.idist, "get_rank", lambda: rank)
    device = torch.device("cpu")
    torch.manual_seed(0)  # the random-weight frozen segmentor; the denoiser is seeded by the run's seed
    _, refiner = build_models(cfg, device, None, num_classes=150)  # same seed: same initial weights
    optimizer = torch.optim.AdamW(refiner.denoiser.parameters(), lr=1e-3)
    trainer = trainers.create_refiner_trainer(refiner, optimizer, cfg, device, 1e-3, Stages(0, 4))
    trainer.run([batch], max_epochs=1)
    return trainer.state.output["loss"]


def test_each_rank_draws_its_own_refiner_noise(tmp_path, monkeypatch) -> None:
    cfg = apply_overrides(
        profile_config("smoke", "ade20k"),
        {
            "data.root": str(tmp_path / "ade20k"),
            "data.synth_n_train": 4,
            "data.synth_n_val": 1,
            "device": "cpu",
        },
    )
    train_loader, _, _ = get_dataflow(cfg, total_iters=1)
    batch = next(iter(train_loader))
    rank0 = _first_loss(cfg, batch, 0, monkeypatch)
    # A pure function of the seeds; rank 1 draws other timesteps and noise.
    assert _first_loss(cfg, batch, 0, monkeypatch) == rank0
    assert abs(_first_loss(cfg, batch, 1, monkeypatch) - rank0) > 1e-6


def test_an_images_evaluation_noise_does_not_depend_on_its_batch(tmp_path) -> None:
    """The evaluator keys each image's sampler noise by its id: one batch of 4 scores exactly what 4 batches of 1
    score (and so any split of the val set over ranks), with the refiner's stochastic multi-step sampler."""
    from diffseg.data import collate
    from diffseg.engines.evaluation import create_evaluator

    cfg = apply_overrides(profile_config("smoke", "ade20k"), {"device": "cpu", "eval.num_evals": 3})
    device = torch.device("cpu")
    torch.manual_seed(0)
    segmentor, refiner = build_models(cfg, device, None, num_classes=150)
    refiner.eval()
    g = torch.Generator().manual_seed(5)
    items = [
        {"image": torch.rand(3, 32, 32, generator=g), "mask": torch.randint(0, 150, (32, 32), generator=g),
         "id": f"img_{i:04d}"}
        for i in range(4)
    ]  # fmt: skip

    def scores(batches):
        ev = create_evaluator(refiner, segmentor, cfg, 150, 255, device, seed=cfg.seed)
        ev.run(batches)
        return [m["mIoU"] for m in ev.state.results["refined"]]

    together = scores([collate(items)])
    apart = scores([collate([it]) for it in items])
    assert together == pytest.approx(apart, abs=1e-12)
    shuffled = scores([collate(items[2:]), collate(items[:2])])
    assert together == pytest.approx(shuffled, abs=1e-12)
