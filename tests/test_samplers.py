"""Samplers: step grids, determinism, collected steps, oracle denoisers, guidance and validation."""

from __future__ import annotations

import pytest
import torch

from diffseg.diffusion import (
    SAMPLERS,
    Absorbing,
    Gaussian,
    MaskReplace,
    Uniform,
    get_sampler,
    guided,
    make_step_grid,
    sample,
)
from diffseg.diffusion.samplers import check_step_grid

K, T, SHAPE = 4, 10, (2, 5, 6)


def make_kernel(name: str):
    return {
        "uniform": lambda: Uniform(K, T),
        "absorbing": lambda: Absorbing(K, T),
        "mask_replace": lambda: MaskReplace(K, T),
        "gaussian": lambda: Gaussian(K, T),
    }[name]()


KERNEL_NAMES = ["uniform", "absorbing", "mask_replace", "gaussian"]
MULTI_STEP = ["strict", "free_renoise"]


def fixed_x0() -> torch.Tensor:
    return torch.randint(0, K, SHAPE, generator=torch.Generator().manual_seed(42))


class Oracle:
    """Returns confident one-hot logits of a fixed x0 and records every input it was given."""

    def __init__(self, x0: torch.Tensor) -> None:
        self.logits = torch.nn.functional.one_hot(x0, K).permute(0, 3, 1, 2).float() * 30.0
        self.inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.inputs.append((x_t.clone(), t.clone()))
        return self.logits


class InputDependent:
    """A fixed random function of x_t and t (stands in for a network), so the samplers' inputs matter."""

    def __init__(self, kernel) -> None:
        g = torch.Generator().manual_seed(3)
        channels = kernel.input_channels if kernel.is_continuous else kernel.num_states
        self.weight = torch.randn(K, channels, generator=g)
        self.continuous = kernel.is_continuous
        self.num_states = kernel.num_states

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not self.continuous:
            x_t = torch.nn.functional.one_hot(x_t, self.num_states).permute(0, 3, 1, 2).float()
        return torch.einsum("kc,bchw->bkhw", self.weight, x_t) * 2 + t.view(-1, 1, 1, 1).float() * 0.01


# --------------------------------------------------------------------------------------------------------------
# step grids


def test_make_step_grid() -> None:
    assert make_step_grid(10, 1) == [10]
    assert make_step_grid(10, 10) == list(range(10, 0, -1))
    assert make_step_grid(100, 10) == [100, 90, 80, 70, 60, 50, 40, 30, 20, 10]
    for n in range(1, 21):
        grid = make_step_grid(20, n)
        assert len(grid) == n and grid[0] == 20 and min(grid) >= 1
        assert all(a > b for a, b in zip(grid, grid[1:]))


@pytest.mark.parametrize(("T_", "n"), [(10, 0), (10, 11), (0, 1), (-1, 1), (10, 2.0)])
def test_make_step_grid_rejects(T_, n) -> None:
    with pytest.raises(ValueError, match="num_"):
        make_step_grid(T_, n)


@pytest.mark.parametrize("grid", [[], [11, 5], [5, 5], [3, 6], [4, 0], [5.0, 2], [True]])
def test_bad_grids_raise(grid) -> None:
    with pytest.raises(ValueError, match="step grid"):
        check_step_grid(grid, T)
    with pytest.raises(ValueError, match="step grid"):
        sample(Oracle(fixed_x0()), Uniform(K, T), SHAPE, grid)


def test_bad_names_raise() -> None:
    with pytest.raises(ValueError, match="strict, free_renoise, single_step"):
        get_sampler("ddpm")
    with pytest.raises(ValueError, match="strict, free_renoise, single_step"):
        sample(Oracle(fixed_x0()), Uniform(K, T), SHAPE, 3, sampler="ancestral")
    with pytest.raises(ValueError, match="collect"):
        sample(Oracle(fixed_x0()), Uniform(K, T), SHAPE, 3, collect="some")
    with pytest.raises(ValueError, match="num_evals"):
        sample(Oracle(fixed_x0()), Uniform(K, T), SHAPE, T + 1)
    with pytest.raises(ValueError, match="x_T shape"):
        sample(Oracle(fixed_x0()), Uniform(K, T), SHAPE, 2, x_T=torch.zeros(1, 5, 6, dtype=torch.long))


# --------------------------------------------------------------------------------------------------------------
# the sampler contract, run for every kernel


@pytest.mark.parametrize("kernel_name", KERNEL_NAMES)
class TestSamplers:
    @pytest.mark.parametrize("sampler", list(SAMPLERS))
    def test_deterministic_per_generator(self, kernel_name: str, sampler: str) -> None:
        kernel = make_kernel(kernel_name)
        fn = InputDependent(kernel)
        runs = [
            sample(fn, kernel, SHAPE, 4, sampler, torch.Generator().manual_seed(seed)) for seed in (1, 1, 2)
        ]
        for (ta, a), (tb, b) in zip(runs[0], runs[1]):
            assert ta == tb and torch.equal(a, b)
        if kernel_name == "absorbing" and sampler == "single_step":
            return  # x_T is all-[MASK] whatever the seed: nothing random happens
        assert any(not torch.equal(a, c) for (_, a), (_, c) in zip(runs[0], runs[2]))

    @pytest.mark.parametrize("num_evals", [1, 3, 10])
    def test_collects_every_evaluation(self, kernel_name: str, num_evals: int) -> None:
        kernel = make_kernel(kernel_name)
        for sampler in MULTI_STEP:
            out = sample(
                InputDependent(kernel), kernel, SHAPE, num_evals, sampler, torch.Generator().manual_seed(0)
            )
            assert [t for t, _ in out] == make_step_grid(T, num_evals)
            assert all(logits.shape == (SHAPE[0], K, *SHAPE[1:]) for _, logits in out)
            last = sample(
                InputDependent(kernel),
                kernel,
                SHAPE,
                num_evals,
                sampler,
                torch.Generator().manual_seed(0),
                collect="last",
            )
            assert len(last) == 1 and last[0][0] == out[-1][0] and torch.equal(last[0][1], out[-1][1])
        single = sample(
            InputDependent(kernel), kernel, SHAPE, num_evals, "single_step", torch.Generator().manual_seed(0)
        )
        assert len(single) == 1 and single[0][0] == T

    def test_single_step_is_the_first_step(self, kernel_name: str) -> None:
        kernel = make_kernel(kernel_name)
        fn = InputDependent(kernel)
        single = sample(fn, kernel, SHAPE, [10, 6, 2], "single_step", torch.Generator().manual_seed(9))
        for sampler in MULTI_STEP:
            out = sample(fn, kernel, SHAPE, [10, 6, 2], sampler, torch.Generator().manual_seed(9))
            assert len(out) == 3 and out[0][0] == single[0][0] == 10
            assert torch.equal(out[0][1], single[0][1])

    @pytest.mark.parametrize("sampler", MULTI_STEP)
    def test_oracle_denoiser_recovers_x0(self, kernel_name: str, sampler: str) -> None:
        kernel = make_kernel(kernel_name)
        x0 = fixed_x0()
        oracle = Oracle(x0)
        out = sample(oracle, kernel, SHAPE, T, sampler, torch.Generator().manual_seed(0))
        assert torch.equal(out[-1][1].argmax(1), x0)
        # The inputs the sampler built must converge to x0 too: at t = 1 (abar = 0.99999) x_1 is x0.
        x_1, t_1 = oracle.inputs[-1]
        assert torch.equal(t_1, torch.full((SHAPE[0],), 1))
        decoded = kernel.decode(x_1) if kernel.is_continuous else x_1
        assert torch.equal(decoded, x0)
        x_T = oracle.inputs[0][0]
        assert not torch.equal(kernel.decode(x_T) if kernel.is_continuous else x_T, x0)

    def test_strict_and_free_renoise_differ(self, kernel_name: str) -> None:
        kernel = make_kernel(kernel_name)
        fn = InputDependent(kernel)
        strict = sample(fn, kernel, SHAPE, 5, "strict", torch.Generator().manual_seed(4))
        free = sample(fn, kernel, SHAPE, 5, "free_renoise", torch.Generator().manual_seed(4))
        assert torch.equal(strict[0][1], free[0][1])
        assert any(not torch.equal(a, b) for (_, a), (_, b) in zip(strict[1:], free[1:]))

    def test_given_x_T_and_inference_mode(self, kernel_name: str) -> None:
        kernel = make_kernel(kernel_name)
        x_T = kernel.prior_sample(SHAPE, torch.Generator().manual_seed(0))
        oracle = Oracle(fixed_x0())
        with torch.inference_mode():
            out = sample(oracle, kernel, SHAPE, 3, "strict", torch.Generator().manual_seed(1), x_T=x_T)
        assert torch.equal(oracle.inputs[0][0], x_T) and len(out) == 3


def test_free_renoise_ignores_previous_input() -> None:
    """FR re-noises argmax x0_hat with q(x_t' | x0_hat): the next input depends on x_t only through the logits."""
    kernel = Uniform(K, T)
    x0 = fixed_x0()
    seen = []

    def fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(x_t)
        return Oracle(x0).logits

    starts = [kernel.prior_sample(SHAPE, torch.Generator().manual_seed(s)) for s in (0, 1)]
    for x_T in starts:
        sample(fn, kernel, SHAPE, [10, 5], "free_renoise", torch.Generator().manual_seed(7), x_T=x_T)
    assert not torch.equal(seen[0], seen[2]) and torch.equal(seen[1], seen[3])
    expected = kernel.q_sample(x0, torch.full((SHAPE[0],), 5), torch.Generator().manual_seed(7))
    assert torch.equal(seen[1], expected)


def test_guided_combines_logits() -> None:
    cond = lambda x, t: torch.full((1, K, 2, 2), 2.0)  # noqa: E731
    uncond = lambda x, t: torch.full((1, K, 2, 2), 0.5)  # noqa: E731
    fn = guided(cond, uncond, 0.4)
    torch.testing.assert_close(fn(None, None), torch.full((1, K, 2, 2), 1.4 * 2.0 - 0.4 * 0.5))
    torch.testing.assert_close(guided(cond, uncond, 0.0)(None, None), torch.full((1, K, 2, 2), 2.0))


@pytest.mark.parametrize("kernel_name", KERNEL_NAMES)
def test_strict_steps_to_the_next_grid_level(kernel_name: str) -> None:
    """On a skipping grid [10, 4] strict draws x_4 ~ q(x_4 | x_10, x0_hat) (Gaussian: DDIM from 10 to 4)."""
    kernel = make_kernel(kernel_name)
    fn = InputDependent(kernel)
    seen = []

    def recording(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(x_t)
        return fn(x_t, t)

    x_T = kernel.prior_sample(SHAPE, torch.Generator().manual_seed(0))
    sample(recording, kernel, SHAPE, [10, 4], "strict", torch.Generator().manual_seed(7), x_T=x_T)
    t = torch.full((SHAPE[0],), 10)
    logits = fn(x_T, t)
    g = torch.Generator().manual_seed(7)
    if kernel.is_continuous:
        expected = kernel.ddim_step(x_T, logits, t, 4, g)
    else:
        expected = kernel.sample(kernel.log_posterior(x_T, torch.log_softmax(logits, 1), t, 4), g)
    assert torch.equal(seen[1], expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kernel_name", KERNEL_NAMES)
def test_runs_on_cuda_with_a_cuda_generator(kernel_name: str) -> None:
    kernel = make_kernel(kernel_name).to("cuda")
    x0 = fixed_x0().cuda()
    oracle = Oracle(x0)
    oracle.logits = oracle.logits.cuda()
    for sampler in MULTI_STEP:
        with torch.inference_mode():
            out = sample(oracle, kernel, SHAPE, 5, sampler, torch.Generator(device="cuda").manual_seed(0))
        assert out[-1][1].device.type == "cuda" and torch.equal(out[-1][1].argmax(1), x0)
    with pytest.raises(ValueError, match="generator"):
        sample(oracle, kernel, SHAPE, 5, "strict", torch.Generator().manual_seed(0), device="cuda")


@pytest.mark.parametrize("kernel_name", KERNEL_NAMES)
@pytest.mark.parametrize("name", MULTI_STEP)
def test_steps_is_the_loop_every_sampler_runs(kernel_name: str, name: str) -> None:
    """``Sampler.steps`` yields (t, x_t, logits) with x_t the network's input; ``__call__`` is that loop."""
    kernel = make_kernel(kernel_name)
    net = InputDependent(kernel)
    grid = make_step_grid(T, 4)
    x_T = kernel.prior_sample(SHAPE, generator=torch.Generator().manual_seed(1))
    runner = get_sampler(name)
    yielded = list(runner.steps(net, kernel, x_T, grid, torch.Generator().manual_seed(2)))
    called = runner(net, kernel, x_T, grid, torch.Generator().manual_seed(2))
    assert [t for t, _, _ in yielded] == [t for t, _ in called] == grid
    assert torch.equal(yielded[0][1], x_T)
    for (_, x_t, logits), (t, expected) in zip(yielded, called):
        assert torch.equal(logits, expected)
        assert torch.equal(net(x_t, torch.full((SHAPE[0],), t)), logits)  # x_t is what the network saw
    last = runner(net, kernel, x_T, grid, torch.Generator().manual_seed(2), collect="last")
    assert len(last) == 1 and torch.equal(last[0][1], called[-1][1])
