"""The refiner's enumerated settings, in a module that imports nothing heavy.

Configs check their values against these when built (`diffseg.config`); importing the refiner itself would pull in
the segmentor libraries (timm, transformers) and their progress bars, seconds of work for a config.
"""

from __future__ import annotations

CONDITIONS: tuple[str, ...] = ("features", "logits", "mask")  # what the denoiser sees of the frozen segmentor
NOISE_OBJECTS: tuple[str, ...] = ("gt", "base", "first")  # what stage-2 training adds noise to
