"""Stand-in for mmcv's compiled `mmcv._ext`, copied into the parity venv as `site-packages/mmcv/_ext.py`.

mmcv 1.7.2 is installed with MMCV_WITH_OPS=0 (no C++/CUDA build, so the parity venv builds in seconds), but
mmseg 0.30 imports `mmcv.ops` at import time and `mmcv.utils.ext_loader.load_ext` checks that every op it
names exists on this module. The parity models (SegFormer, DeepLabV3+) call none of them, so each name resolves
to a function that fails loudly if it is ever called, instead of a silent wrong answer.
"""


def __getattr__(name: str):
    if name.startswith("_"):
        raise AttributeError(name)

    def _missing(*args, **kwargs):
        raise RuntimeError(
            f"mmcv._ext.{name} was called, but this parity venv's mmcv was built without compiled ops "
            "(MMCV_WITH_OPS=0); the parity reference must not need it"
        )

    return _missing
