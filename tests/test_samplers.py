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
    with pytest.raises(ValueError, match="strict, strict_release, free_renoise, single_step"):
        get_sampler("ddpm")
    with pytest.raises(ValueError, match="strict, strict_release, free_renoise, single_step"):
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
        if kernel_name == "gaussian" and sampler == "strict_release":
            pytest.skip("the release's strict step is discrete only (refused: tested below)")
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


def _pointwise_denoiser(kernel):
    """A denoiser with no coupling between items (a fixed per-pixel map of x_t and t), so a per-item run is
    comparable with a batched one."""
    weight = torch.randn(K, kernel.input_channels if kernel.is_continuous else kernel.num_states,
                         generator=torch.Generator().manual_seed(7))  # fmt: skip

    def denoise_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = (
            x_t
            if kernel.is_continuous
            else torch.nn.functional.one_hot(x_t, kernel.num_states).permute(0, 3, 1, 2)
        )
        return torch.einsum("kc,bchw->bkhw", weight, x.float()) + 0.1 * t.view(-1, 1, 1, 1)

    return denoise_fn


@pytest.mark.parametrize("kernel_name", KERNEL_NAMES)
@pytest.mark.parametrize("sampler_name", MULTI_STEP)
def test_per_item_generators_make_each_item_independent_of_its_batch(kernel_name, sampler_name) -> None:
    """With one generator per item, item i of a batch draws exactly what it draws alone with that generator:
    the evaluator's per-image streams (keyed by image id) do not depend on the batch size or the rank."""
    kernel = make_kernel(kernel_name)
    denoise_fn = _pointwise_denoiser(kernel)

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    batched = sample(denoise_fn, kernel, SHAPE, 4, sampler_name, generator=gens([10, 11]))
    for i, seed in enumerate((10, 11)):
        alone = sample(denoise_fn, kernel, (1, *SHAPE[1:]), 4, sampler_name, generator=gens([seed]))
        for (t_b, lg_b), (t_a, lg_a) in zip(batched, alone, strict=True):
            assert t_b == t_a
            torch.testing.assert_close(lg_b[i : i + 1], lg_a, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="got 3 generators for a batch of 2"):
        sample(denoise_fn, kernel, SHAPE, 4, sampler_name, generator=gens([1, 2, 3]))


@pytest.mark.parametrize(
    ("T", "n", "grid"),
    [
        (20, 2, [20, 10, 1]),  # the release README model's steps [0, 10, 19]
        (100, 10, [100, 90, 80, 70, 60, 50, 40, 30, 20, 10, 1]),
        (10, 10, list(range(10, 0, -1))),  # every level: nothing appended
        (20, 1, [20, 1]),
        (7, 3, [7, 5, 3, 1]),  # stride 2 reaches index 6 = level 1 itself
    ],
)
def test_the_release_grid_ends_at_the_cleanest_level(T, n, grid) -> None:
    from diffseg.diffusion import STEP_GRIDS, release_step_grid

    assert release_step_grid(T, n) == grid
    assert check_step_grid(grid, T) == grid
    assert STEP_GRIDS["even"](T, n) == make_step_grid(T, n)
    with pytest.raises(ValueError, match="num_evals must be an integer in"):
        release_step_grid(T, T + 1)


def test_an_evaluation_visits_its_configured_grid() -> None:
    from diffseg.config import ConfigError, apply_overrides
    from diffseg.prediction import step_grid
    from diffseg.profiles import profile_config

    cfg = apply_overrides(profile_config("smoke"), {"diffusion.num_steps": 20, "eval.num_evals": 2})
    assert step_grid(cfg) == [20, 10]
    assert step_grid(apply_overrides(cfg, {"eval.grid": "release"})) == [20, 10, 1]
    assert step_grid(apply_overrides(cfg, {"eval.sampler": "single_step"})) == [20]
    assert profile_config("paper").eval.grid == "release"
    with pytest.raises(
        ConfigError, match=r"'eval\.grid' = 'clean' is not valid; valid values: even, release"
    ):
        apply_overrides(cfg, {"eval.grid": "clean"})


def test_the_release_strict_step_treats_x_t_as_the_next_level_and_samples_one_below() -> None:
    """From level t to grid level s, the release's step draws x_{s-1} ~ q(x_{s-1} | x_s = x_t, argmax x0): the
    one-step uniform posterior computed by hand from abar, whatever the stride (here t = 8, s = 4)."""
    from diffseg.diffusion.samplers import StrictRelease

    k3 = Uniform(3, 10)
    x_t = torch.zeros(1, 200, 200, dtype=torch.long)  # every pixel in class 0
    logits = torch.tensor([0.0, 2.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 200, 200)  # argmax x0 = class 1
    out = StrictRelease().next_input(k3, x_t, logits, 8, 4, torch.Generator().manual_seed(0))
    abar = k3.keep.double()
    a_s, abar_prev = abar[4] / abar[3], abar[3]
    step = lambda i, j: a_s * (i == j) + (1 - a_s) / 3  # noqa: E731  q(x_s = i | x_{s-1} = j)
    prior = lambda j: abar_prev * (j == 1) + (1 - abar_prev) / 3  # noqa: E731  q(x_{s-1} = j | x0 = 1)
    p = torch.tensor([float(step(0, j) * prior(j)) for j in range(3)], dtype=torch.float64)
    p = p / p.sum()
    freq = torch.bincount(out.flatten(), minlength=3).double() / out.numel()
    torch.testing.assert_close(freq, p, rtol=0, atol=0.01)  # 40,000 pixels: 3 sigma < 0.008
    assert not torch.allclose(p, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), atol=0.05)


def test_the_release_strict_step_ends_on_the_argmax_and_refuses_gaussian() -> None:
    from diffseg.diffusion.samplers import StrictRelease

    x_t = torch.randint(0, K, SHAPE, generator=torch.Generator().manual_seed(1))
    logits = torch.randn(SHAPE[0], K, *SHAPE[1:], generator=torch.Generator().manual_seed(2))
    out = StrictRelease().next_input(Uniform(K, T), x_t, logits, 3, 1, torch.Generator().manual_seed(0))
    assert torch.equal(out, logits.argmax(1))  # level s - 1 = 0 is x0 itself
    with pytest.raises(ValueError, match="strict_release sampler is the release's discrete step"):
        StrictRelease().next_input(Gaussian(K, T), torch.randn(2, 3, 5, 6), logits, 3, 1, None)
    assert "strict_release" in SAMPLERS
