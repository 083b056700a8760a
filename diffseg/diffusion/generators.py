"""Random generators for a batch: one for the whole batch, or one per item.

Every random draw of the diffusion code (timesteps, prior samples, forward noise, a sampler's re-noising) takes a
``Generators`` value. With one generator per item, item i's draws depend on its own generator only, so an item
keyed by its global identity (its position in the global training batch, its image id at evaluation) draws the
same whatever the batch size and the number of processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Generators = torch.Generator | Sequence[torch.Generator] | None


def draw(
    generator: Generators, batch: int, fn: Callable[[int, torch.Generator | None, slice], torch.Tensor]
) -> torch.Tensor:
    """``fn(n, generator, items)`` for the whole batch from one generator, or item by item from one each.

    ``items`` is the slice of the batch a call draws for (``slice(None)`` with one generator); the results are
    concatenated along dim 0, so the output is (batch, ...) either way.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return fn(batch, generator, slice(None))
    if len(generator) != batch:
        raise ValueError(f"got {len(generator)} generators for a batch of {batch}; give one, or one per item")
    return torch.cat([fn(1, g, slice(i, i + 1)) for i, g in enumerate(generator)])


def generator_device(generator: Generators) -> torch.device | None:
    """The device a generator (or the first of a per-item list) draws on; None without one."""
    if generator is None:
        return None
    if isinstance(generator, torch.Generator):
        return generator.device
    return generator[0].device if len(generator) else None
