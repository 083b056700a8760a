"""Schedules, the discrete kernels (one shared test class run for every kernel) and the Gaussian arm."""

from __future__ import annotations

import math

import pytest
import torch

from diffseg.diffusion import (
    Absorbing,
    DiscreteKernel,
    Gaussian,
    MaskReplace,
    Uniform,
    build_kernel,
    cosine_schedule,
    get_schedule,
    linear_schedule,
)

F64 = torch.float64
# Chi-square critical values at p = 0.001 by degrees of freedom (scipy is not installed).
CHI2_CRIT_001 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515, 6: 22.458}


# --------------------------------------------------------------------------------------------------------------
# schedules


def test_linear_schedule_matches_formula() -> None:
    T = 7
    abar = linear_schedule(T)
    assert abar.dtype == F64 and abar.shape == (T + 1,)
    expected = [1.0] + [0.99999 + (t - 1) / (T - 1) * (0.000009 - 0.99999) for t in range(1, T + 1)]
    assert abar.tolist() == pytest.approx(expected, abs=1e-15, rel=0)
    assert abar[1].item() == 0.99999 and abar[T].item() == pytest.approx(0.000009, abs=1e-15)
    assert linear_schedule(1).tolist() == [1.0, 0.000009]


@pytest.mark.parametrize("T", [1, 4, 10, 100, 1000])
def test_cosine_schedule_monotone_in_range(T: int) -> None:
    abar = cosine_schedule(T)
    assert abar.shape == (T + 1,) and abar[0] == 1.0
    assert abar[1].item() == pytest.approx(0.99999, abs=1e-15)
    assert bool((abar[1:] < abar[:-1]).all()) or T == 1
    assert bool((abar[1:] > 0).all() and (abar[1:] < 1).all())
    # The formula as written stops slightly above a_T: a_T + (a_1 - a_T)(1 - cos(pi/2T))^2.
    end = 0.000009 + (0.99999 - 0.000009) * (1 - math.cos(math.pi / (2 * T))) ** 2
    assert abar[T].item() == pytest.approx(end, rel=1e-12)


def test_schedule_errors() -> None:
    with pytest.raises(ValueError, match="linear, cosine"):
        get_schedule("sigmoid", 10)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="num_steps"):
            get_schedule("linear", bad)


# --------------------------------------------------------------------------------------------------------------
# helpers: dense matrices read back from a kernel (float64)


def step_matrix(kernel: DiscreteKernel, t: int) -> torch.Tensor:
    """Q_t[i, j] = q(x_t = j | x_{t-1} = i), (S, S)."""
    x = torch.arange(kernel.num_states).view(1, -1, 1)
    return kernel.log_q_step(x, torch.tensor([t])).exp()[0, :, :, 0].T


def cum_matrix(kernel: DiscreteKernel, t: int) -> torch.Tensor:
    """Qbar_t[i, j] = q(x_t = j | x_0 = i), (K, S)."""
    x0 = torch.arange(kernel.num_classes).view(1, -1, 1)
    return kernel.log_q_t(x0, torch.tensor([t])).exp()[0, :, :, 0].T


def span_matrix(kernel: DiscreteKernel, s: int, t: int) -> torch.Tensor:
    """q(x_t | x_s) as the product Q_{s+1} ... Q_t, (S, S)."""
    out = torch.eye(kernel.num_states, dtype=F64)
    for r in range(s + 1, t + 1):
        out = out @ step_matrix(kernel, r)
    return out


def brute_posterior(kernel: DiscreteKernel, x0: int, xt: int, s: int, t: int) -> torch.Tensor:
    """Bayes: q(x_s | x_t, x_0) = q(x_t | x_s) q(x_s | x_0) / q(x_t | x_0), (S,)."""
    prior = torch.eye(kernel.num_states, dtype=F64)[x0] if s == 0 else cum_matrix(kernel, s)[x0]
    joint = span_matrix(kernel, s, t)[:, xt] * prior
    return joint / cum_matrix(kernel, t)[x0, xt]


# --------------------------------------------------------------------------------------------------------------
# the contract, run for every discrete kernel


@pytest.fixture(params=[Uniform, Absorbing, MaskReplace], ids=["uniform", "absorbing", "mask_replace"])
def kernel_cls(request: pytest.FixtureRequest) -> type[DiscreteKernel]:
    return request.param


@pytest.fixture(params=["linear", "cosine"])
def kernel(kernel_cls: type[DiscreteKernel], request: pytest.FixtureRequest) -> DiscreteKernel:
    return kernel_cls(num_classes=4, num_steps=6, schedule=request.param, dtype=F64)


class TestDiscreteKernel:
    def test_attributes(self, kernel: DiscreteKernel) -> None:
        assert kernel.is_continuous is False
        assert kernel.num_classes == 4 and kernel.num_steps == 6
        if isinstance(kernel, Uniform):
            assert kernel.num_states == 4 and kernel.mask_index is None
        else:
            assert kernel.num_states == 5 and kernel.mask_index == 4

    def test_marginal_matches_definition(self, kernel: DiscreteKernel) -> None:
        abar = get_schedule(kernel.schedule, 6)
        k = 4
        for t in range(1, 7):
            q = cum_matrix(kernel, t)
            a = abar[t].item()
            eye = torch.eye(k, dtype=F64)
            if isinstance(kernel, Uniform):
                expected = a * eye + (1 - a) / k
            elif isinstance(kernel, Absorbing):
                expected = torch.cat([a * eye, torch.full((k, 1), 1 - a, dtype=F64)], dim=1)
            else:
                m = kernel.mask_fraction
                cls = a * eye + (1 - a) * (1 - m) / k
                expected = torch.cat([cls, torch.full((k, 1), (1 - a) * m, dtype=F64)], dim=1)
            torch.testing.assert_close(q, expected, atol=1e-12, rtol=0)

    def test_rows_sum_to_one_and_nonnegative(self, kernel: DiscreteKernel) -> None:
        for t in range(1, 7):
            for mat in (step_matrix(kernel, t), cum_matrix(kernel, t)):
                torch.testing.assert_close(
                    mat.sum(1), torch.ones(mat.shape[0], dtype=F64), atol=1e-12, rtol=0
                )
                assert bool((mat >= 0).all())

    def test_cumulative_is_product_of_steps(self, kernel: DiscreteKernel) -> None:
        k = kernel.num_classes
        for t in range(1, 7):
            torch.testing.assert_close(
                cum_matrix(kernel, t), span_matrix(kernel, 0, t)[:k], atol=1e-10, rtol=0
            )

    def test_step_from_log_probs_is_the_mixture(self, kernel: DiscreteKernel) -> None:
        g = torch.Generator().manual_seed(0)
        p = torch.rand(2, kernel.num_states, 3, 1, generator=g, dtype=F64)
        p = p / p.sum(1, keepdim=True)
        for t in (1, 4):
            got = kernel.log_q_step(p.log(), torch.tensor([t, t])).exp()
            expected = torch.einsum("bihw,ij->bjhw", p, step_matrix(kernel, t))
            torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)

    @pytest.mark.parametrize(("s", "t"), [(2, 3), (5, 6), (0, 1), (1, 4), (0, 5), (2, 6)])
    def test_posterior_is_bayes_rule(self, kernel: DiscreteKernel, s: int, t: int) -> None:
        k, n = kernel.num_classes, kernel.num_states
        # One image holding every (x_t, x_0) pair: rows are x_t, columns x_0.
        xt = torch.arange(n).view(1, n, 1).expand(1, n, k)
        x0 = torch.arange(k).view(1, 1, k).expand(1, n, k)
        s_arg = None if s == t - 1 else s
        post = kernel.log_posterior(xt, x0, torch.tensor([t]), s_arg).exp()
        checked = 0
        for i in range(n):
            for j in range(k):
                if cum_matrix(kernel, t)[j, i] < 1e-12:
                    continue  # x_t impossible from this x_0 (absorbing kernels): posterior undefined
                torch.testing.assert_close(
                    post[0, :, i, j], brute_posterior(kernel, j, i, s, t), atol=1e-9, rtol=0
                )
                checked += 1
        assert checked >= k

    @pytest.mark.parametrize(("s", "t"), [(3, 4), (1, 5), (0, 2)])
    def test_posterior_with_probabilities_is_the_mixture(
        self, kernel: DiscreteKernel, s: int, t: int
    ) -> None:
        k, n = kernel.num_classes, kernel.num_states
        g = torch.Generator().manual_seed(1)
        p = torch.rand(1, k, n, 1, generator=g, dtype=F64) + 0.05
        p = p / p.sum(1, keepdim=True)
        xt = torch.arange(n).view(1, n, 1)
        post = kernel.log_posterior(xt, p.log(), torch.tensor([t]), s).exp()
        for i in range(n):
            px0 = p[0, :, i, 0]
            if s == 0:
                expected = torch.cat([px0, torch.zeros(n - k, dtype=F64)])
            else:
                # D3PM: each x_0's posterior weighted by p(x_0) q(x_t | x_0).
                w = px0 * cum_matrix(kernel, t)[:, i]
                w = w / w.sum()
                expected = sum(w[j] * brute_posterior(kernel, j, i, s, t) for j in range(k) if w[j] > 0)
            torch.testing.assert_close(post[0, :, i, 0], expected, atol=1e-9, rtol=0)

    def test_posterior_accepts_per_sample_s(self, kernel: DiscreteKernel) -> None:
        x0 = torch.tensor([[[1, 2]], [[3, 0]]])
        xt = kernel.q_sample(x0, torch.tensor([5, 5]), torch.Generator().manual_seed(0))
        joint = kernel.log_posterior(xt, x0, torch.tensor([5, 5]), torch.tensor([0, 3]))
        torch.testing.assert_close(joint[0], kernel.log_posterior(xt[:1], x0[:1], torch.tensor([5]), 0)[0])
        torch.testing.assert_close(joint[1], kernel.log_posterior(xt[1:], x0[1:], torch.tensor([5]), 3)[0])

    @pytest.mark.parametrize("t", [2, 4])
    def test_sample_frequencies_match_marginal(self, kernel: DiscreteKernel, t: int) -> None:
        x0 = torch.full((2, 60, 60), 2, dtype=torch.long)
        xt = kernel.q_sample(x0, torch.tensor([t, t]), torch.Generator().manual_seed(123))
        assert xt.shape == x0.shape and xt.dtype == torch.long
        probs = cum_matrix(kernel, t)[2]
        counts = torch.bincount(xt.flatten(), minlength=kernel.num_states).to(F64)
        expected = probs * x0.numel()
        zero = probs < 1e-12
        assert counts[zero].sum() == 0  # impossible states never drawn
        keep = ~zero
        assert expected[keep].min() > 5  # the chi-square approximation holds
        stat = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum().item()
        assert stat < CHI2_CRIT_001[int(keep.sum()) - 1]

    def test_last_step_is_stationary_and_prior_matches(self, kernel: DiscreteKernel) -> None:
        stationary = kernel.stationary_log_probs().exp()
        assert stationary.shape == (kernel.num_states,)
        torch.testing.assert_close(stationary.sum(), torch.tensor(1.0, dtype=F64))
        if isinstance(kernel, Uniform):
            torch.testing.assert_close(stationary, torch.full((4,), 0.25, dtype=F64))
        elif isinstance(kernel, Absorbing):
            assert stationary[4] == 1.0 and stationary[:4].max() < 1e-25
        abar_T = get_schedule(kernel.schedule, 6)[6].item()
        diff = (cum_matrix(kernel, 6) - stationary).abs().max().item()
        assert diff <= abar_T + 1e-12
        prior = kernel.prior_sample((1, 40, 40), torch.Generator().manual_seed(5))
        assert prior.shape == (1, 40, 40) and prior.dtype == torch.long
        freq = torch.bincount(prior.flatten(), minlength=kernel.num_states).to(F64) / prior.numel()
        torch.testing.assert_close(freq, stationary, atol=0.05, rtol=0)

    def test_sampling_is_deterministic_per_generator(self, kernel: DiscreteKernel) -> None:
        x0 = torch.randint(0, 4, (2, 8, 8), generator=torch.Generator().manual_seed(0))
        t = torch.tensor([3, 5])
        a = kernel.q_sample(x0, t, torch.Generator().manual_seed(7))
        b = kernel.q_sample(x0, t, torch.Generator().manual_seed(7))
        c = kernel.q_sample(x0, t, torch.Generator().manual_seed(8))
        assert torch.equal(a, b) and not torch.equal(a, c)

    def test_bad_inputs_raise(self, kernel: DiscreteKernel) -> None:
        x0 = torch.zeros(1, 2, 2, dtype=torch.long)
        t = torch.tensor([1])
        with pytest.raises(ValueError, match=r"\[0, 4\)"):
            kernel.log_q_t(x0 + 4, t)
        with pytest.raises(ValueError, match=r"\[0, 4\)"):
            kernel.log_q_t(x0 - 1, t)
        with pytest.raises(ValueError, match="float32"):
            kernel.log_q_t(x0.float(), t)
        with pytest.raises(ValueError, match=r"\[1, 6\]"):
            kernel.log_q_t(x0, torch.tensor([7]))
        with pytest.raises(ValueError, match=r"\[1, 6\]"):
            kernel.log_q_t(x0, torch.tensor([0]))
        with pytest.raises(ValueError, match="long"):
            kernel.log_q_t(x0, torch.tensor([1.0]))
        with pytest.raises(ValueError, match="shape"):
            kernel.log_q_t(x0, torch.tensor([1, 1]))
        with pytest.raises(ValueError, match="s must be < t"):
            kernel.log_posterior(x0, x0, torch.tensor([3]), 3)
        with pytest.raises(ValueError, match="generator"):
            kernel.prior_sample((1, 2, 2), torch.Generator(), device="meta")


@pytest.mark.parametrize("kernel_cls", [Uniform, Absorbing, MaskReplace])
def test_no_nan_at_large_T_and_K(kernel_cls: type[DiscreteKernel]) -> None:
    kernel = kernel_cls(num_classes=151, num_steps=1000)  # float32, as used in training
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 151, (3, 4, 4), generator=g)
    t = torch.tensor([1, 500, 1000])
    logits = torch.randn(3, 151, 4, 4, generator=g) * 5
    xt = kernel.q_sample(x0, t, g)
    outputs = [
        kernel.log_q_t(x0, t),
        kernel.log_q_step(xt, t),
        kernel.log_q_step(kernel.log_q_t(x0, t), t),
        kernel.log_posterior(xt, x0, t),
        kernel.log_posterior(xt, torch.log_softmax(logits, 1), t),
        kernel.log_posterior(xt, torch.log_softmax(logits, 1), t, torch.tensor([0, 250, 999])),
    ]
    for out in outputs:
        assert out.dtype == torch.float32 and out.shape == (3, kernel.num_states, 4, 4)
        assert bool(torch.isfinite(out).all())
        torch.testing.assert_close(out.exp().sum(1), torch.ones(3, 4, 4), atol=1e-4, rtol=0)
    assert bool((kernel.prior_sample((2, 4, 4), g) < kernel.num_states).all())


def test_build_kernel() -> None:
    assert isinstance(build_kernel("uniform", 3, 5), Uniform)
    assert isinstance(build_kernel("absorbing", 3, 5, "cosine"), Absorbing)
    assert isinstance(build_kernel("mask_replace", 3, 5), MaskReplace)
    assert isinstance(build_kernel("gaussian", 3, 5), Gaussian)
    with pytest.raises(ValueError, match="uniform, absorbing, mask_replace, gaussian"):
        build_kernel("blur", 3, 5)
    with pytest.raises(ValueError, match="num_steps"):
        build_kernel("uniform", 3, 0)
    with pytest.raises(ValueError, match="num_classes"):
        Uniform(0, 5)
    with pytest.raises(ValueError, match="mask_fraction"):
        MaskReplace(3, 5, mask_fraction=1.0)


# --------------------------------------------------------------------------------------------------------------
# Gaussian arm


@pytest.mark.parametrize(("encoding", "channels"), [("analog_bits", 3), ("embedding", 16)])
def test_gaussian_shapes_and_codes(encoding: str, channels: int) -> None:
    kernel = Gaussian(5, 10, encoding=encoding)
    assert kernel.is_continuous and kernel.num_states == 5 and kernel.input_channels == channels
    x0 = torch.arange(5).view(1, 1, 5).expand(2, 3, 5).contiguous()
    enc = kernel.encode(x0)
    assert enc.shape == (2, channels, 3, 5) and enc.dtype == torch.float32
    assert torch.equal(kernel.decode(enc), x0)
    if encoding == "analog_bits":
        assert set(enc.unique().tolist()) == {-1.0, 1.0}
        assert enc[0, :, 0, 3].tolist() == [-1.0, 1.0, 1.0]  # 3 = 0b011, most significant bit first
    else:  # a fixed codebook: the same for every instance with the same seed
        assert torch.equal(Gaussian(5, 10, encoding=encoding).encode(x0), enc)
    g = torch.Generator().manual_seed(0)
    xt = kernel.q_sample(x0, torch.tensor([3, 10]), g)
    assert xt.shape == enc.shape and xt.dtype == torch.float32
    assert kernel.prior_sample((2, 3, 5), g).shape == (2, channels, 3, 5)


def test_gaussian_q_sample_statistics() -> None:
    kernel = Gaussian(4, 10, scale=0.5)
    x0 = torch.full((2, 100, 100), 2, dtype=torch.long)
    t = torch.tensor([5, 5])
    xt = kernel.q_sample(x0, t, torch.Generator().manual_seed(0))
    abar = linear_schedule(10)[5].item()
    code = kernel.encode(x0[:1, :1, :1]).flatten()
    mean = xt.mean(dim=(0, 2, 3))
    std = xt.std(dim=(0, 2, 3))
    torch.testing.assert_close(mean, math.sqrt(abar) * code, atol=0.02, rtol=0)
    torch.testing.assert_close(std, torch.full_like(std, math.sqrt(1 - abar)), atol=0.02, rtol=0)


def test_gaussian_ddim_with_oracle_returns_x0() -> None:
    kernel = Gaussian(6, 8, encoding="embedding", embed_dim=4, dtype=F64)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 6, (2, 4, 4), generator=g)
    oracle = torch.nn.functional.one_hot(x0, 6).permute(0, 3, 1, 2).to(F64) * 50.0
    x = kernel.prior_sample((2, 4, 4), g)
    levels = [8, 5, 2, 0]
    for t, s in zip(levels, levels[1:]):
        x = kernel.ddim_step(x, oracle, torch.tensor([t, t]), s, g)
        # DDIM with a perfect x0 keeps the state on the forward marginal's mean line.
        assert torch.equal(kernel.decode(x), x0) or s > 0
    torch.testing.assert_close(x, kernel.encode(x0), atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="s must be < t"):
        kernel.ddim_step(x, oracle, torch.tensor([2, 2]), 2)
    with pytest.raises(ValueError, match="encoding"):
        Gaussian(3, 4, encoding="onehot")
