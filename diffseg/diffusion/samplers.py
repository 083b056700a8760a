"""Inference loops over a step grid: strict (ancestral), free re-noising (the paper's FR) and single step.

A denoiser is any callable ``denoise_fn(x_t, t) -> x0 logits (B, K, H, W)`` with ``x_t`` (B, H, W) long for
discrete kernels or (B, C, H, W) float for the Gaussian arm, and ``t`` (B,) long. A sampler returns the x0 logits of
*every* network evaluation as ``[(t, logits), ...]`` in order, so one pass gives metrics at every step (as the
release evaluates mIoU at steps 0, 10, ..., 90 of one pass).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from types import MappingProxyType

import torch

from diffseg.diffusion.gaussian import Gaussian
from diffseg.diffusion.generators import Generators, draw, generator_device
from diffseg.diffusion.kernels import DiscreteKernel

Kernel = DiscreteKernel | Gaussian
DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Collected = list[tuple[int, torch.Tensor]]
COLLECT = ("all", "last")


def make_step_grid(num_steps: int, num_evals: int) -> list[int]:
    """``num_evals`` strictly decreasing timesteps evenly spread from T down to >= 1.

    ``num_evals = 1`` -> [T]; ``num_evals = T`` -> [T, T-1, ..., 1]; e.g. T = 100, 10 evals -> [100, 90, ..., 10].
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps (T) must be an integer >= 1, got {num_steps!r}")
    if isinstance(num_evals, bool) or not isinstance(num_evals, int) or not 1 <= num_evals <= num_steps:
        raise ValueError(f"num_evals must be an integer in [1, {num_steps}], got {num_evals!r}")
    # Integer arithmetic so the grid is exact: level T - floor(i * T / n) is strictly decreasing for n <= T.
    return [num_steps - (i * num_steps) // num_evals for i in range(num_evals)]


def release_step_grid(num_steps: int, num_evals: int) -> list[int]:
    """The release's grid (its ``get_timesteps``), which always ends at the cleanest level t = 1.

    The release indexes levels i = T - t (0 noisiest) and walks i = 0, s, 2s, ... below T with s = T // n, then
    appends T - 1 when the walk missed it; e.g. T = 20, n = 2 -> [20, 10, 1] (its README model's steps
    [0, 10, 19]), T = 100, n = 10 -> [100, 90, ..., 10, 1] (11 evaluations), n = T -> [T, ..., 1].
    """
    make_step_grid(num_steps, num_evals)  # the same argument checks
    stride = num_steps // num_evals
    indices = list(range(0, num_steps, stride))
    if indices[-1] != num_steps - 1:
        indices.append(num_steps - 1)
    return [num_steps - i for i in indices]


STEP_GRIDS: MappingProxyType[str, Callable[[int, int], list[int]]] = MappingProxyType(
    {"even": make_step_grid, "release": release_step_grid}
)


def check_step_grid(steps: Sequence[int], num_steps: int) -> list[int]:
    """Validate a step grid: non-empty, integers in [1, T], strictly decreasing. Returns it as a list of int."""
    grid = list(steps)
    ok = len(grid) > 0 and all(
        isinstance(t, int) and not isinstance(t, bool) and 1 <= t <= num_steps for t in grid
    )
    if not ok or any(a <= b for a, b in zip(grid, grid[1:])):
        raise ValueError(
            f"step grid {grid!r} is invalid: expected a non-empty, strictly decreasing list of integers in "
            f"[1, {num_steps}]"
        )
    return grid


def guided(cond_fn: DenoiseFn, uncond_fn: DenoiseFn, w: float) -> DenoiseFn:
    """Classifier-free guidance on logits: (1 + w) * cond - w * uncond (w = 0 is the conditional model)."""

    def denoise_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if w == 0:
            return cond_fn(x_t, t)
        return (1 + w) * cond_fn(x_t, t) - w * uncond_fn(x_t, t)

    return denoise_fn


class Sampler:
    """Shared loop: evaluate the denoiser at each grid level, then ``next_input`` builds the next x_t."""

    name = "base"
    #: Evaluate only the first grid level (single step).
    first_only = False

    def next_input(
        self,
        kernel: Kernel,
        x_t: torch.Tensor,
        logits: torch.Tensor,
        t: int,
        s: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """The input at level s (< t) from the current input ``x_t`` and its x0 logits (for the whole batch, or
        one item of it with that item's generator: ``steps`` splits a per-item generator list)."""
        raise NotImplementedError

    def steps(
        self,
        denoise_fn: DenoiseFn,
        kernel: Kernel,
        x_T: torch.Tensor,
        grid: list[int],
        generator: Generators = None,
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """The denoising loop, one network evaluation at a time: yields ``(t, x_t, x0 logits (B, K, H, W))``.

        The one owner of the loop: ``__call__`` (and so ``sample`` and ``refine``) and the trajectory figures
        (``diffseg.artifacts.trace``) consume it. The next input is drawn only when the consumer asks for the
        next step, so a consumer that stops early spends no further evaluations.
        """
        if self.first_only:
            grid = grid[:1]
        x_t = x_T
        for i, t in enumerate(grid):
            t_vec = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
            logits = denoise_fn(x_t, t_vec)
            yield t, x_t, logits
            if i + 1 < len(grid):
                x_t = self._next_batch(kernel, x_t, logits, t, grid[i + 1], generator)

    def _next_batch(
        self, kernel: Kernel, x_t: torch.Tensor, logits: torch.Tensor, t: int, s: int, generator: Generators
    ) -> torch.Tensor:
        """``next_input`` for the batch, item by item when ``generator`` is one per item."""
        return draw(
            generator,
            x_t.shape[0],
            lambda _, g, items: self.next_input(kernel, x_t[items], logits[items], t, s, g),
        )

    def __call__(
        self,
        denoise_fn: DenoiseFn,
        kernel: Kernel,
        x_T: torch.Tensor,
        grid: list[int],
        generator: Generators = None,
        collect: str = "all",
    ) -> Collected:
        """``[(t, x0 logits), ...]`` of every evaluation (``collect="all"``) or of the final one (``"last"``)."""
        evaluations = ((t, logits) for t, _, logits in self.steps(denoise_fn, kernel, x_T, grid, generator))
        return list(evaluations) if collect == "all" else list(deque(evaluations, maxlen=1))


class Strict(Sampler):
    """Ancestral sampling: x_s ~ q(x_s | x_t, x0_hat) with x0_hat as log-probs (D3PM); Gaussian: a DDIM step."""

    name = "strict"

    def next_input(
        self,
        kernel: Kernel,
        x_t: torch.Tensor,
        logits: torch.Tensor,
        t: int,
        s: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        t_vec = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
        return kernel.posterior_step(x_t, logits, t_vec, s, generator)


class StrictRelease(Sampler):
    """The release's strict step (its ``q_posterior`` loop), named apart from the exact posterior ``Strict``.

    From grid level t to the next grid level s it takes the *argmax* of x0_hat (a hard one-hot), treats x_t as if
    it were at level s whatever the stride, draws the one-step posterior x_{s-1} ~ q(x_{s-1} | x_s = x_t, x0), and
    the next evaluation labels that sample level s (the release's levels are off by one). With a stride of 1 it is
    ancestral sampling with a hard x0 and that one-level shift. Discrete kernels only (the release has no Gaussian
    arm).
    """

    name = "strict_release"

    def next_input(
        self,
        kernel: Kernel,
        x_t: torch.Tensor,
        logits: torch.Tensor,
        t: int,
        s: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        if kernel.is_continuous:
            raise ValueError(
                "the strict_release sampler is the release's discrete step; use strict for Gaussian"
            )
        level = torch.full((x_t.shape[0],), s, dtype=torch.long, device=x_t.device)
        return kernel.sample(kernel.log_posterior(x_t, logits.argmax(dim=1), level, s - 1), generator)


class FreeRenoise(Sampler):
    """Free re-noising (paper.md): x_s ~ q(x_s | argmax x0_hat), ignoring the previous x_t."""

    name = "free_renoise"

    def next_input(
        self,
        kernel: Kernel,
        x_t: torch.Tensor,
        logits: torch.Tensor,
        t: int,
        s: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        s_vec = torch.full((x_t.shape[0],), s, dtype=torch.long, device=x_t.device)
        return kernel.q_sample(logits.argmax(dim=1), s_vec, generator)


class SingleStep(FreeRenoise):
    """The first prediction only (from x_T at the first grid level)."""

    name = "single_step"
    first_only = True


SAMPLERS: MappingProxyType[str, type[Sampler]] = MappingProxyType(
    {
        "strict": Strict,
        "strict_release": StrictRelease,
        "free_renoise": FreeRenoise,
        "single_step": SingleStep,
    }
)


def get_sampler(name: str) -> Sampler:
    """A sampler instance by name (see ``SAMPLERS``)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid samplers: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]()


def sample(
    denoise_fn: DenoiseFn,
    kernel: Kernel,
    shape: tuple[int, int, int],
    steps: Sequence[int] | int,
    sampler: str = "free_renoise",
    generator: Generators = None,
    device: torch.device | str | None = None,
    x_T: torch.Tensor | None = None,
    collect: str = "all",
) -> Collected:
    """Run a sampler and return ``[(t, x0 logits (B, K, H, W)), ...]`` for every network evaluation, in order.

    Args:
        denoise_fn: ``(x_t, t (B,) long) -> (B, K, H, W)`` x0 logits.
        kernel: a discrete kernel or ``Gaussian`` (``prior_sample``, ``q_sample``, posterior / ``ddim_step``).
        shape: (B, H, W) of the mask.
        steps: a step grid (strictly decreasing levels in [1, T]) or a number of evaluations (``make_step_grid``).
        sampler: ``strict`` | ``strict_release`` | ``free_renoise`` | ``single_step``.
        generator: explicit RNG (on ``device``), or one per item (``diffseg.diffusion.generators``); None uses
            torch's global RNG.
        device: where x_T is drawn; defaults to x_T's device, then the generator's, then the kernel's.
        x_T: the starting input (default: a prior sample).
        collect: ``all`` (every evaluation) or ``last`` (only the final one).
    """
    runner = get_sampler(sampler)
    if collect not in COLLECT:
        raise ValueError(f"unknown collect mode {collect!r}; valid modes: {', '.join(COLLECT)}")
    if isinstance(steps, int) and not isinstance(steps, bool):
        grid = make_step_grid(kernel.num_steps, steps)
    else:
        grid = check_step_grid(steps, kernel.num_steps)
    if x_T is None:
        if device is None:
            device = generator_device(generator)
        rest = tuple(shape)[1:]
        x_T = draw(
            generator, shape[0], lambda n, g, _: kernel.prior_sample((n, *rest), generator=g, device=device)
        )
    elif tuple(x_T.shape[:1]) + tuple(x_T.shape[-2:]) != tuple(shape):
        raise ValueError(f"x_T shape {tuple(x_T.shape)} does not match the requested shape {tuple(shape)}")
    return runner(denoise_fn, kernel, x_T, grid, generator=generator, collect=collect)
