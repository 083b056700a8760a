"""Stand-in for `torchvision`, copied into the parity venv as `site-packages/torchvision/__init__.py`.

mmcv 1.7.2's `mmcv.runner.checkpoint` imports torchvision at import time, only to resolve `torchvision://`
checkpoint names. The registry's torchvision wheels are built against CUDA torch and fail to load on the CPU
torch the parity venv pins, and the reference never loads a torchvision checkpoint, so a module with a version
and nothing else is enough; any other use fails with a clear AttributeError.
"""

__version__ = "0.0.0+parity-stand-in"


def __getattr__(name: str):
    # AttributeError, not RuntimeError: importers probe modules with hasattr().
    raise AttributeError(f"torchvision.{name} is not available in the parity venv (a stand-in module)")
