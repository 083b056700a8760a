"""The learning-rate schedule: warmup, step decay at stage fractions, and the release's decay every N iterations
floored at a minimum lr."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine, Events

from diffseg.config import ConfigError, apply_overrides
from diffseg.engines.schedule import Stages, attach_lr_schedule, stage_lr_factor
from diffseg.profiles import profile_config


def test_decay_at_fractions_of_the_stage() -> None:
    assert stage_lr_factor(0, 0, 100, 10, (0.5, 0.75), 0.5) == pytest.approx(0.1)  # warmup starts at 1/10
    assert stage_lr_factor(49, 0, 100, 10, (0.5, 0.75), 0.5) == 1.0
    assert stage_lr_factor(50, 0, 100, 10, (0.5, 0.75), 0.5) == 0.5
    assert stage_lr_factor(175, 100, 100, 10, (0.5, 0.75), 0.5) == 0.25  # iteration 75 of a stage from 100


def test_decay_every_n_iterations_down_to_the_floor() -> None:
    """mmcv's step policy as the release configures it: lr = max(lr0 * 0.5 ** (i // step), min_lr)."""
    lr0, floor = 1.5e-4, 1e-6
    for i in (1000, 19_999, 20_000, 45_000, 139_999, 159_999):
        expected = max(lr0 * 0.5 ** (i // 20_000), floor) / lr0
        assert stage_lr_factor(80_000 + i, 80_000, 160_000, 1000, (0.5,), 0.5, 20_000, floor / lr0) == (
            pytest.approx(expected)
        ), i
    # the eighth halving would go below 1e-6 (1.5e-4 / 2**8 = 5.9e-7): the floor holds from there on
    assert stage_lr_factor(80_000 + 180_000, 80_000, 200_000, 1000, (), 0.5, 20_000, floor / lr0) * lr0 == (
        pytest.approx(floor)
    )


def _lrs_at(cfg, stages: Stages, iterations: list[int]) -> list[float]:
    """The lr the refiner trainer's schedule sets at each 0-based iteration (the handler fired directly)."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1.0)
    engine = Engine(lambda e, b: None)
    attach_lr_schedule(
        engine,
        opt,
        cfg.optim.lr,
        cfg,
        stages.bounds,
        lambda it: cfg.optim.decay_every[stages.stage_of(it) - 1],
    )
    out = []
    for it in iterations:
        engine.state.iteration = it + 1
        engine.fire_event(Events.ITERATION_STARTED)
        out.append(opt.param_groups[0]["lr"])
    return out


def test_the_paper_profile_halves_as_the_release_per_stage() -> None:
    cfg = profile_config("paper", "ade20k")
    assert cfg.optim.decay_every == (10_000, 20_000) and cfg.optim.min_lr == 1e-6
    stages = Stages(cfg.train.stage1_iterations, cfg.train.stage2_iterations)
    s1 = stages.stage1
    got = _lrs_at(cfg, stages, [5_000, 10_000, 79_999, s1 + 5_000, s1 + 20_000, s1 + 159_999])
    lr = cfg.optim.lr
    # each stage restarts its schedule; stage 2 ends after seven halvings of 20k, just above the 1e-6 floor
    expected = [lr, lr / 2, lr / 2**7, lr, lr / 2, lr / 2**7]
    assert got == pytest.approx(expected)


def test_bad_decay_every_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"optim\.decay_every"):
        apply_overrides(profile_config("smoke"), {"optim.decay_every": [100]})
    with pytest.raises(ConfigError, match=r"optim\.min_lr"):
        apply_overrides(profile_config("smoke"), {"optim.min_lr": -1.0})


def test_cosine_policy_falls_smoothly_from_lr_to_the_floor_in_each_stage() -> None:
    """mmcv's CosineAnnealing with min_lr, per stage: 1 at the stage's start, the floor at its last iteration,
    halfway at its middle, never increasing, and restarting with the next stage."""
    floor = 0.01
    f = [stage_lr_factor(it, 100, 201, 0, (), 0.5, 0, floor, "cosine") for it in range(100, 301)]
    assert f[0] == pytest.approx(1.0)
    assert f[100] == pytest.approx(floor + (1 - floor) * 0.5)
    assert f[-1] == pytest.approx(floor)
    assert all(a >= b for a, b in zip(f, f[1:], strict=False))
    assert (
        stage_lr_factor(300, 100, 201, 0, (0.5,), 0.5, 0, floor, "step") == 0.5
    )  # the step policy is unchanged
    assert stage_lr_factor(10, 0, 100, 20, (), 0.5, 0, 0.0, "cosine") == pytest.approx(
        11 / 20 * 0.5 * (1 + math.cos(math.pi * 10 / 99))
    )  # the warmup multiplies the cosine


def test_unknown_lr_policy_is_refused_naming_the_key() -> None:
    with pytest.raises(
        ConfigError, match=r"'optim\.policy' = 'linear' is not valid; valid values: step, cosine"
    ):
        apply_overrides(profile_config("smoke"), {"optim.policy": "linear"})
