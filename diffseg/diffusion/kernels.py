"""Discrete diffusion kernels (uniform, absorbing, mask-and-replace) behind one contract, ``DiscreteKernel``.

All three are members of one family (VQ-Diffusion's): from a class j < K one step of the chain keeps j with
probability alpha, moves to each of the K classes with probability beta (so j itself gets alpha + beta) and to [MASK]
with probability gamma; [MASK] (index K, absorbing kernels only) stays [MASK]. The s -> t transition of the chain is
again of that form, so a kernel is fully described by its cumulative coefficients over t = 0..T:

    q(x_t = j | x_0 = i) = keep_t * [j == i] + uniform_t      (j < K, uniform_t is the per-class share)
    q(x_t = MASK | x_0 = i) = mask_t

with keep_t = abar_t from the schedule. Subclasses only choose uniform_t and mask_t; every method (marginals, one
step, posterior for any s < t, sampling) is shared, which is what makes "cumulative = product of one-step matrices"
hold by construction (and tested). Constants are computed in float64 and kept as float64 buffers; outputs are in
``dtype`` (float32 by default). Log probabilities of impossible events are ``LOG_ZERO`` (finite) so no NaN appears.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from diffseg.diffusion.schedules import get_schedule

if TYPE_CHECKING:
    from diffseg.config import DiffusionConfig
    from diffseg.diffusion.gaussian import Gaussian

#: Smallest probability represented; log(0) becomes this finite value (exp underflows to 0 in float32 sums).
PROB_FLOOR = 1e-30
LOG_ZERO = -69.07755278982137  # log(1e-30)


# --------------------------------------------------------------------------------------------------------------
# input validation shared by every kernel (discrete and Gaussian)


def check_labels(x: torch.Tensor, num_values: int, name: str = "x0") -> None:
    """Raise ValueError unless ``x`` is a ``(B, H, W)`` integer tensor with values in ``[0, num_values)``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of class indices, got {type(x).__name__}")
    if x.dtype != torch.long:
        raise ValueError(f"{name} must be a (B, H, W) long tensor of class indices, got dtype {x.dtype}")
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (B, H, W), got {tuple(x.shape)}")
    if x.numel() > 0:
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= num_values:
            raise ValueError(f"{name} values must lie in [0, {num_values}), got min {lo} and max {hi}")


def check_times(t: torch.Tensor, batch: int, num_steps: int, name: str = "t", low: int = 1) -> None:
    """Raise ValueError unless ``t`` is a ``(batch,)`` long tensor with values in ``[low, num_steps]``."""
    if not isinstance(t, torch.Tensor) or t.dtype != torch.long:
        got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a (B,) long tensor of timesteps, got {got}")
    if t.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) to match the batch, got {tuple(t.shape)}")
    lo, hi = int(t.min()), int(t.max())
    if lo < low or hi > num_steps:
        raise ValueError(f"{name} values must lie in [{low}, {num_steps}], got min {lo} and max {hi}")


def check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    """Raise ValueError when an explicit generator lives on another device type than the tensors it draws."""
    if generator is not None and generator.device.type != torch.device(device).type:
        raise ValueError(
            f"generator is on {generator.device} but the tensors are on {device}; "
            f"create it with torch.Generator(device={str(torch.device(device).type)!r})"
        )


def gumbel_max(log_probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample categories over dim 1 by Gumbel-max: ``(B, S, H, W)`` float -> ``(B, H, W)`` long."""
    check_generator(generator, log_probs.device)
    u = torch.rand(log_probs.shape, generator=generator, device=log_probs.device, dtype=log_probs.dtype)
    # Clamp so that -log(-log(u)) stays finite; the bias this adds is far below any test's resolution.
    tiny = torch.finfo(log_probs.dtype).tiny
    u = u.clamp(min=tiny, max=1.0 - torch.finfo(log_probs.dtype).eps)
    gumbel = -torch.log(-torch.log(u))
    return (log_probs + gumbel).argmax(dim=1)


def _log(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p.clamp_min(PROB_FLOOR))


# --------------------------------------------------------------------------------------------------------------
# the contract


class DiscreteKernel(nn.Module):
    """q(x_t | x_0) over K classes (plus [MASK] for absorbing kernels); all outputs are log probabilities.

    Args:
        num_classes: K, the number of segmentation classes (>= 1).
        num_steps: T, the number of forward steps (>= 1).
        schedule: name of the abar schedule (``linear`` | ``cosine``).
        dtype: floating dtype of returned log-probabilities (float32; tests use float64).

    Shapes: ``x0`` / ``x_t``: (B, H, W) long; ``t``: (B,) long in [1, T]; log-probabilities: (B, num_states, H, W).
    """

    is_continuous = False
    has_mask = False

    def __init__(
        self, num_classes: int, num_steps: int, schedule: str = "linear", dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        abar = get_schedule(schedule, num_steps)  # validates num_steps
        self.num_classes = num_classes
        self.num_steps = num_steps
        self.schedule = schedule
        self.dtype = dtype
        self.num_states = num_classes + 1 if self.has_mask else num_classes
        self.mask_index: int | None = num_classes if self.has_mask else None
        uniform, mask = self._cumulative(abar)
        # Buffers (float64, not persistent: they are derived from the config) follow the refiner's .to(device).
        self.register_buffer("keep", abar, persistent=False)
        self.register_buffer("uniform", uniform, persistent=False)
        self.register_buffer("mask", mask, persistent=False)

    def _cumulative(self, abar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class uniform share and [MASK] share of q(x_t | x_0), ``(T + 1,) float64`` each, given abar."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, num_steps={self.num_steps}, schedule={self.schedule!r}"

    # ---- coefficients of the s -> t transition (float64, (B,) each) ------------------------------------------

    def _transition(
        self, s: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(alpha, beta, gamma) of q(x_t | x_s) for s <= t: keep, per-class uniform share and [MASK] share."""
        keep, uniform, mask = self.keep, self.uniform, self.mask
        alpha = keep[t] / keep[s]
        not_masked_s = 1.0 - mask[s]  # > 0: no schedule masks everything (abar_T > 0)
        gamma = 1.0 - (1.0 - mask[t]) / not_masked_s
        # uniform_t = alpha * uniform_s + beta * (1 - mask_s): the share re-drawn between s and t.
        beta = (uniform[t] - alpha * uniform[s]) / not_masked_s
        return alpha, beta.clamp_min(0.0), gamma.clamp_min(0.0)

    def _as_map(self, coef: torch.Tensor) -> torch.Tensor:
        return coef.to(self.dtype).view(-1, 1, 1, 1)

    def _log_rows(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log q(x_t | x_s = x) for class indices x (B, H, W) (may hold [MASK]) -> (B, num_states, H, W)."""
        alpha, beta, gamma = self._transition(s, t)
        log_hit = self._as_map(_log(alpha + beta))
        log_miss = self._as_map(_log(beta))
        onehot = nn.functional.one_hot(x, self.num_states).permute(0, 3, 1, 2).bool()
        out = torch.where(onehot, log_hit, log_miss)
        if self.has_mask:
            from_mask = (x == self.mask_index).unsqueeze(1)
            cls = torch.where(from_mask, torch.full_like(out[:, : self.num_classes], LOG_ZERO), out[:, :-1])
            to_mask = torch.where(
                from_mask, 0.0, self._as_map(_log(gamma)).expand_as(from_mask).to(out.dtype)
            )
            out = torch.cat([cls, to_mask], dim=1)
        return out

    def _log_apply(self, log_p: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Push a distribution over x_s (B, num_states, H, W) log-probs through q(x_t | x_s) (log space)."""
        alpha, beta, gamma = self._transition(s, t)
        k = self.num_classes
        log_cls_mass = torch.logsumexp(log_p[:, :k], dim=1, keepdim=True)  # P(x_s is a class)
        cls = torch.logaddexp(
            self._as_map(_log(alpha)) + log_p[:, :k], self._as_map(_log(beta)) + log_cls_mass
        )
        if not self.has_mask:
            return cls
        to_mask = torch.logaddexp(log_p[:, k:], self._as_map(_log(gamma)) + log_cls_mass)
        return torch.cat([cls, to_mask], dim=1)

    # ---- validation -----------------------------------------------------------------------------------------

    def _check_t(self, t: torch.Tensor, batch: int, name: str = "t", low: int = 1) -> None:
        check_times(t, batch, self.num_steps, name=name, low=low)

    def _x0_log_probs(self, x0: torch.Tensor) -> torch.Tensor:
        """Validate x0 given as log-probabilities (B, K, H, W) float and pad the [MASK] state."""
        if not x0.is_floating_point() or x0.dim() != 4 or x0.shape[1] != self.num_classes:
            raise ValueError(
                f"x0 as probabilities must be (B, {self.num_classes}, H, W) float log-probs, "
                f"got {tuple(x0.shape)} {x0.dtype}"
            )
        x0 = x0.to(self.dtype)
        if self.has_mask:
            x0 = torch.cat([x0, torch.full_like(x0[:, :1], LOG_ZERO)], dim=1)
        return x0

    # ---- public contract ------------------------------------------------------------------------------------

    def log_q_t(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log q(x_t | x_0): ``x0`` (B, H, W) long in [0, K), ``t`` (B,) long in [1, T] -> (B, num_states, H, W)."""
        check_labels(x0, self.num_classes, "x0")
        self._check_t(t, x0.shape[0])
        return self._log_rows(x0, torch.zeros_like(t), t)

    def log_q_step(self, x_prev: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One step, log q(x_t | x_{t-1}) -> (B, num_states, H, W).

        ``x_prev`` is either indices (B, H, W) long in [0, num_states) or log-probabilities (B, num_states, H, W)
        float (then the result is the pushed-forward distribution sum_{x_{t-1}} p(x_{t-1}) q(x_t | x_{t-1})).
        """
        self._check_t(t, x_prev.shape[0])
        if x_prev.is_floating_point():
            if x_prev.dim() != 4 or x_prev.shape[1] != self.num_states:
                raise ValueError(
                    f"x_prev as log-probs must be (B, {self.num_states}, H, W), got {tuple(x_prev.shape)}"
                )
            return self._log_apply(x_prev.to(self.dtype), t - 1, t)
        check_labels(x_prev, self.num_states, "x_prev")
        return self._log_rows(x_prev, t - 1, t)

    def log_posterior(
        self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, s: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """log q(x_s | x_t, x_0) for 0 <= s < t (default s = t - 1) -> (B, num_states, H, W).

        ``x_t``: (B, H, W) long in [0, num_states); ``t``: (B,) long in [1, T]; ``s``: int or (B,) long.
        ``x0``: class indices (B, H, W) long, or log-probabilities (B, K, H, W) float. With probabilities this is
        D3PM's x0-parameterisation (eq. 4): q(x_s | x_t, p) ∝ q(x_t | x_s) * sum_x0 p(x0) q(x_s | x0), i.e. the
        mixture of exact posteriors weighted by p(x0) q(x_t | x0) (so x0 values that cannot produce x_t drop out).
        At s = 0 the result is x0 itself (its one-hot, or the given probabilities), as in the release's last step.
        Where x_t is impossible under an index x0 (absorbing kernels) the result is finite but meaningless.
        """
        check_labels(x_t, self.num_states, "x_t")
        batch = x_t.shape[0]
        self._check_t(t, batch)
        if s is None:
            s = t - 1
        elif isinstance(s, int):
            s = torch.full_like(t, s)
        self._check_t(s, batch, name="s", low=0)
        if bool((s >= t).any()):
            raise ValueError(f"s must be < t elementwise, got s={s.tolist()} and t={t.tolist()}")

        if x0.is_floating_point():
            log_x0 = self._x0_log_probs(x0)
            log_x0 = log_x0 - torch.logsumexp(log_x0, dim=1, keepdim=True)
            evidence = self._log_apply(log_x0, torch.zeros_like(s), s)  # sum_x0 p(x0) q(x_s | x0)
        else:
            check_labels(x0, self.num_classes, "x0")
            if x0.shape != x_t.shape:
                raise ValueError(f"x0 shape {tuple(x0.shape)} does not match x_t shape {tuple(x_t.shape)}")
            log_x0 = self._log_rows(x0, torch.zeros_like(s), torch.zeros_like(s))  # one-hot in log space
            evidence = self._log_rows(x0, torch.zeros_like(s), s)
        # log q(x_t | x_s) as a function of x_s: the column of the s -> t transition picked by x_t.
        likelihood = self._log_likelihood(x_t, s, t)
        log_post = likelihood + evidence
        log_post = log_post - torch.logsumexp(log_post, dim=1, keepdim=True)
        return torch.where((s == 0).view(-1, 1, 1, 1), log_x0, log_post)

    def _log_likelihood(self, x_t: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log q(x_t | x_s) for every value of x_s: (B, num_states, H, W)."""
        alpha, beta, gamma = self._transition(s, t)
        onehot = nn.functional.one_hot(x_t, self.num_states).permute(0, 3, 1, 2).bool()
        out = torch.where(onehot, self._as_map(_log(alpha + beta)), self._as_map(_log(beta)))
        if self.has_mask:
            k = self.num_classes
            is_mask = (x_t == k).unsqueeze(1)
            # x_t = MASK: every class reached it with prob gamma, MASK stays MASK; x_t a class: MASK never leaves.
            cls = torch.where(is_mask, self._as_map(_log(gamma)).expand_as(out[:, :k]), out[:, :k])
            from_mask = torch.where(is_mask, 0.0, LOG_ZERO).to(out.dtype)
            out = torch.cat([cls, from_mask], dim=1)
        return out

    def sample(self, log_probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Gumbel-max sample over dim 1: (B, S, H, W) float log-probs -> (B, H, W) long."""
        if not log_probs.is_floating_point() or log_probs.dim() != 4:
            raise ValueError(
                f"log_probs must be (B, S, H, W) float, got {tuple(log_probs.shape)} {log_probs.dtype}"
            )
        return gumbel_max(log_probs, generator)

    def posterior_step(
        self,
        x_t: torch.Tensor,
        x0_logits: torch.Tensor,
        t: torch.Tensor,
        s: torch.Tensor | int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The strict sampler's step: x_s ~ q(x_s | x_t, softmax(x0_logits)) (D3PM), (B, H, W) long.

        ``x0_logits`` (B, K, H, W); ``t`` (B,) long; ``s`` < t. ``Gaussian.posterior_step`` has this contract.
        """
        log_x0 = torch.log_softmax(x0_logits.to(self.dtype), dim=1)
        return self.sample(self.log_posterior(x_t, log_x0, t, s), generator)

    def q_sample(
        self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x_t ~ q(x_t | x_0): (B, H, W) long in [0, num_states)."""
        return self.sample(self.log_q_t(x0, t), generator)

    def stationary_log_probs(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """The limit of q(x_t | x_0) as abar_t -> 0, independent of x_0: (num_states,) log-probs.

        q(x_T | x_0) differs from it by at most abar_T (9e-6 for the linear schedule) in probability.
        """
        dtype = dtype or self.dtype
        uniform, mask = self._cumulative(torch.zeros(1, dtype=torch.float64))
        probs = uniform.expand(self.num_classes)
        if self.has_mask:
            probs = torch.cat([probs, mask])
        return _log(probs).to(device=device or self.keep.device, dtype=dtype)

    def prior_sample(
        self,
        shape: tuple[int, int, int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """x_T drawn from the stationary distribution: (B, H, W) long (uniform classes, [MASK], or a mix)."""
        if len(shape) != 3:
            raise ValueError(f"shape must be (B, H, W), got {tuple(shape)}")
        device = torch.device(device) if device is not None else self.keep.device
        b, h, w = shape
        log_p = self.stationary_log_probs(device=device).view(1, -1, 1, 1).expand(b, -1, h, w)
        return gumbel_max(log_p, generator)


class Uniform(DiscreteKernel):
    """Multinomial / D3PM-uniform (the release's kernel): q(x_t | x_0) = abar_t onehot(x_0) + (1 - abar_t) / K."""

    def _cumulative(self, abar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (1.0 - abar) / self.num_classes, torch.zeros_like(abar)


class Absorbing(DiscreteKernel):
    """Mask-only: q(x_t | x_0) = abar_t onehot(x_0) + (1 - abar_t) onehot([MASK]), [MASK] = index K."""

    has_mask = True

    def _cumulative(self, abar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros_like(abar), 1.0 - abar


class MaskReplace(DiscreteKernel):
    """Mask-and-replace (VQ-Diffusion style): keep abar_t, [MASK] (1 - abar_t) m, re-draw (1 - abar_t)(1 - m).

    The re-drawn share is spread uniformly over the K classes. ``mask_fraction`` m is fixed over time (0.9 by
    default), so the stationary distribution is m on [MASK] and (1 - m) / K on each class. VQ-Diffusion's own
    defaults (linear cumulative mask share rising to 0.99999 as keep falls) leave a cumulative uniform share of
    about 1e-6, i.e. practically the absorbing kernel; a fixed m keeps the arm distinct. The one-step gamma_t and
    beta_t follow from the cumulative shares (``_transition``) and are non-negative because abar decreases.
    """

    has_mask = True

    def __init__(
        self,
        num_classes: int,
        num_steps: int,
        schedule: str = "linear",
        dtype: torch.dtype = torch.float32,
        mask_fraction: float = 0.9,
    ) -> None:
        if not 0.0 < mask_fraction < 1.0:
            raise ValueError(f"mask_fraction must lie in (0, 1), got {mask_fraction!r}")
        self.mask_fraction = float(mask_fraction)
        super().__init__(num_classes, num_steps, schedule, dtype)

    def _cumulative(self, abar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noised = 1.0 - abar
        return noised * (1.0 - self.mask_fraction) / self.num_classes, noised * self.mask_fraction


KERNELS = ("uniform", "absorbing", "mask_replace", "gaussian")
_DISCRETE = {"uniform": Uniform, "absorbing": Absorbing, "mask_replace": MaskReplace}


def build_kernel(
    name: str, num_classes: int, num_steps: int, schedule: str = "linear", **kwargs: object
) -> DiscreteKernel | Gaussian:
    """A kernel by name (``uniform`` | ``absorbing`` | ``mask_replace`` | ``gaussian``); kwargs go to its class."""
    if name == "gaussian":
        # Imported here: gaussian.py uses this module's validators, so a top-level import would be circular.
        from diffseg.diffusion.gaussian import Gaussian

        return Gaussian(num_classes, num_steps, schedule, **kwargs)
    if name not in _DISCRETE:
        raise ValueError(f"unknown kernel {name!r}; valid kernels: {', '.join(KERNELS)}")
    return _DISCRETE[name](num_classes, num_steps, schedule, **kwargs)


def kernel_from_config(cfg: DiffusionConfig, num_classes: int) -> DiscreteKernel | Gaussian:
    """``build_kernel`` from a ``DiffusionConfig`` (kernel, schedule, num_steps)."""
    return build_kernel(cfg.kernel, num_classes, cfg.num_steps, cfg.schedule)
