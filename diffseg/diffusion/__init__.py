"""The diffusion core: schedules, discrete kernels, the Gaussian arm and the samplers.

Time convention (the one convention of the whole project):
    t = 0 is the clean mask x_0, t = T is pure noise, and t counts forward (noising) steps. Schedules give
    abar_t for t = 0..T with abar_0 = 1 (``schedules.py``); kernels take ``t`` as a (B,) long tensor in [1, T];
    samplers walk a strictly decreasing step grid from T towards 1, and the denoiser receives t exactly as given.
    The authors' release indexes the other way round (its network index 0 is the *noisiest* input and T - 1 the
    cleanest); a release checkpoint's time embedding therefore needs t_release = T - t when ported
    (``refiner.release_time``, set by ``diffseg.release_checkpoint``).

Kernels share one contract (``DiscreteKernel``; ``Gaussian`` follows it as far as the samplers need):
``num_classes`` K, ``num_steps`` T, ``num_states`` (K, or K + 1 with [MASK] = index K), ``is_continuous``,
``q_sample``, ``prior_sample``; discrete kernels add ``log_q_t``, ``log_q_step``, ``log_posterior``, ``sample``.
"""

from diffseg.diffusion.gaussian import Gaussian
from diffseg.diffusion.kernels import (
    KERNELS,
    Absorbing,
    DiscreteKernel,
    MaskReplace,
    Uniform,
    build_kernel,
    kernel_from_config,
)
from diffseg.diffusion.samplers import (
    SAMPLERS,
    STEP_GRIDS,
    FreeRenoise,
    Sampler,
    SingleStep,
    Strict,
    get_sampler,
    guided,
    make_step_grid,
    release_step_grid,
    sample,
)
from diffseg.diffusion.schedules import SCHEDULES, cosine_schedule, get_schedule, linear_schedule

__all__ = [
    "KERNELS",
    "SAMPLERS",
    "STEP_GRIDS",
    "SCHEDULES",
    "Absorbing",
    "DiscreteKernel",
    "FreeRenoise",
    "Gaussian",
    "MaskReplace",
    "Sampler",
    "SingleStep",
    "Strict",
    "Uniform",
    "build_kernel",
    "cosine_schedule",
    "get_sampler",
    "get_schedule",
    "guided",
    "kernel_from_config",
    "linear_schedule",
    "make_step_grid",
    "release_step_grid",
    "sample",
]
