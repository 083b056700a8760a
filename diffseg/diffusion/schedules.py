"""Noise schedules: the cumulative keep probability abar_t for t = 0..T (pure functions, float64).

Every kernel (discrete and Gaussian) reads its constants from these functions: index t of the returned tensor is
abar_t, abar_0 = 1 (the clean mask) and abar_T is the noisiest level (paper.md, "Discrete diffusion": from 0.99999
almost clean at t = 1 to 0.000009 almost pure noise at t = T).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import MappingProxyType

import torch

#: abar at the first (almost clean) and last (almost pure noise) forward step, as in the release.
ABAR_FIRST = 0.99999
ABAR_LAST = 0.000009


def _check_steps(num_steps: int) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")


def linear_schedule(num_steps: int) -> torch.Tensor:
    """abar linear in t: abar_t = 0.99999 + (t - 1) / (T - 1) * (0.000009 - 0.99999) for t = 1..T.

    Returns ``(T + 1,) float64`` with ``abar_0 = 1``. For T = 1 the single step is pure noise (abar_1 = 0.000009),
    so a one-step process still starts from a (nearly) stationary mask.
    """
    _check_steps(num_steps)
    abar = torch.ones(num_steps + 1, dtype=torch.float64)
    if num_steps == 1:
        abar[1] = ABAR_LAST
        return abar
    t = torch.arange(1, num_steps + 1, dtype=torch.float64)
    abar[1:] = ABAR_FIRST + (t - 1) / (num_steps - 1) * (ABAR_LAST - ABAR_FIRST)
    return abar


def cosine_schedule(num_steps: int) -> torch.Tensor:
    """The paper's cosine variant: abar_t = a_T + (a_1 - a_T) * (1 + cos(pi/2 * (1 + (t - 1) / T)))^2.

    Returns ``(T + 1,) float64`` with ``abar_0 = 1``; strictly decreasing in t. Endpoints of the formula as written
    (kept as is, not renormalised): abar_1 = a_1 = 0.99999 exactly, but the last step does not reach a_T:
    abar_T = a_T + (a_1 - a_T) * (1 - cos(pi / (2T)))^2, e.g. 9.0152e-6 for T = 100 and 1.6057e-4 for T = 10.
    For T = 1 the only step is abar_1 = 0.99999 (almost clean), unlike the linear schedule.
    """
    _check_steps(num_steps)
    t = torch.arange(1, num_steps + 1, dtype=torch.float64)
    shape = (1 + torch.cos(math.pi / 2 * (1 + (t - 1) / num_steps))) ** 2
    abar = torch.ones(num_steps + 1, dtype=torch.float64)
    abar[1:] = ABAR_LAST + (ABAR_FIRST - ABAR_LAST) * shape
    return abar


SCHEDULES: MappingProxyType[str, Callable[[int], torch.Tensor]] = MappingProxyType(
    {"linear": linear_schedule, "cosine": cosine_schedule}
)


def get_schedule(name: str, num_steps: int) -> torch.Tensor:
    """abar for t = 0..T, ``(T + 1,) float64``, from a schedule name (see ``SCHEDULES``)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid schedules: {', '.join(SCHEDULES)}")
    return SCHEDULES[name](num_steps)
