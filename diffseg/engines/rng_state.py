"""The process-global random streams of a training, saved with its checkpoint and restored on resume.

Most draws take an explicit generator (`diffseg.engines.common.iteration_seed`), but modules that draw without one
(SegFormer's drop-path and dropout, transformers' defaults 0.1) use torch's global stream. The refiner's step
reseeds that stream every iteration; the base segmentor's step never did, and reseeding it now would change every
uninterrupted base (and the committed study). So the base trainer saves the global streams in each checkpoint and
a resumed run puts them back before its first step: it then draws what the uninterrupted run drew.

The state holds only tensors, ints and tuples, so a checkpoint still loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events


def capture() -> dict[str, Any]:
    """The global streams now: torch CPU, CUDA (every device, where CUDA is initialised), numpy, Python, and the
    number of torch threads (float reductions are split by thread, so their rounding depends on it)."""
    np_state = np.random.get_state()  # noqa: NPY002 - saving the legacy global stream is the point
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # numpy's legacy state: ('MT19937', uint32[624] keys, pos, has_gauss, cached_gaussian)
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_rest": (int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "python": random.getstate(),
        "num_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any], where: str = "checkpoint", check_threads: bool = True) -> None:
    """Put the streams of ``capture()`` back. ``where`` names the checkpoint in the errors and warnings.

    A different number of torch threads than the checkpoint's is warned about, not changed: the run continues, but
    its numbers are no longer bit-identical to an uninterrupted run's.
    """
    missing = [k for k in ("torch", "numpy_keys", "numpy_rest", "python") if k not in state]
    if missing:
        raise ValueError(
            f"{where}: random state lacks {', '.join(missing)}; expected the keys of rng_state.capture()"
        )
    torch.set_rng_state(state["torch"])
    pos, has_gauss, cached = state["numpy_rest"]
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(pos), int(has_gauss), float(cached)))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        saved = state["cuda"]
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved)
        else:
            warnings.warn(
                f"{where} holds the CUDA random state of {len(saved)} device(s), this process sees "
                f"{torch.cuda.device_count()}: CUDA streams not restored",
                stacklevel=2,
            )
    if check_threads:
        warn_on_thread_change(state.get("num_threads"), where)


def warn_on_thread_change(threads: int | None, where: str) -> None:
    """Warn when the checkpoint ``where``, written with ``threads`` torch threads (None: not recorded), is
    resumed with another number: the run continues, but not bit-identically to an uninterrupted one."""
    if threads is not None and int(threads) != torch.get_num_threads():
        warnings.warn(
            f"{where} was written by a process with {threads} torch thread(s), this one has "
            f"{torch.get_num_threads()}: the resumed run continues, but is not bit-identical to an uninterrupted "
            f"one (float reductions are split by thread); set OMP_NUM_THREADS={threads} to resume exactly",
            stacklevel=3,
        )


def restore_before_first_step(
    trainer: Engine, start: int, state: dict[str, Any] | None, where: str, check_threads: bool = True
) -> None:
    """Restore ``state`` when ``trainer``, resumed at ``start``, begins iteration ``start + 1`` (nothing when
    ``state`` is None); ``check_threads``: warn about another torch thread count (CPU runs).

    Not before ``trainer.run``: creating the loader's iterator draws its base seed from torch's global stream, and
    the uninterrupted run's checkpoint was taken after that draw, so the streams go back after it, right before
    the step that the checkpoint's next iteration is.
    """
    if state is None:
        return

    @trainer.on(Events.ITERATION_STARTED(once=start + 1))
    def _restore(_: Engine) -> None:
        restore(state, where, check_threads)
