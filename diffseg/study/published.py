"""The numbers paper.md publishes (percent), as a table the reports set beside the measured ones."""

from __future__ import annotations

import pandas as pd

# Published numbers of paper.md (percent): DDPS after refinement (ss / ms / mBIoU) and the base segmentors, keyed by
# the paper profile's registry names (the release's mmseg bases), so they sit beside the measured bars.
_DDPS = {
    ("ade20k", "deeplabv3plus-m-v2-d8"): (38.07, 39.07, 23.47),
    ("ade20k", "segformer-b0-mmseg"): (41.67, 41.95, 26.77),
    ("ade20k", "deeplabv3plus-r50-d8"): (45.26, 46.01, 30.39),
    ("ade20k", "segformer-b2-mmseg"): (49.73, 49.96, 33.95),
    ("ade20k", "deeplabv3plus-r101-d8"): (46.32, 46.99, 31.82),
    ("ade20k", "segformer-b5-mmseg"): (51.11, 51.71, 35.66),
    ("cityscapes", "deeplabv3plus-m-v2-d8"): (78.11, 79.73, 61.14),
    ("cityscapes", "segformer-b0-mmseg"): (78.19, 79.62, 64.07),
    ("cityscapes", "deeplabv3plus-r50-d8"): (81.39, 82.27, 65.76),
    ("cityscapes", "segformer-b2-mmseg"): (81.77, 82.22, 67.75),
    ("cityscapes", "deeplabv3plus-r101-d8"): (81.68, 82.51, 65.96),
    ("cityscapes", "segformer-b5-mmseg"): (82.42, 82.94, 66.45),
}


_BASE = {  # (ss, ms); None where paper.md gives no number
    ("ade20k", "segformer-b0-mmseg"): (37.41, 38.34), ("cityscapes", "segformer-b0-mmseg"): (76.54, 78.22),
    ("ade20k", "segformer-b2-mmseg"): (46.80, None), ("cityscapes", "segformer-b2-mmseg"): (81.08, 82.18),
    ("ade20k", "segformer-b5-mmseg"): (49.13, 50.22), ("cityscapes", "segformer-b5-mmseg"): (82.25, 83.48),
    ("ade20k", "deeplabv3plus-r50-d8"): (43.95, 44.93), ("cityscapes", "deeplabv3plus-r50-d8"): (80.09, 81.13),
    ("ade20k", "deeplabv3plus-r101-d8"): (45.47, 46.35), ("cityscapes", "deeplabv3plus-r101-d8"): (80.97, 82.03),
    ("ade20k", "deeplabv3plus-m-v2-d8"): (34.02, None), ("cityscapes", "deeplabv3plus-m-v2-d8"): (75.20, None),
}  # fmt: skip


def _published() -> pd.DataFrame:
    rows = []
    for (ds, seg), (ss, ms, biou) in _DDPS.items():
        rows += [
            (ds, seg, "refined", "ss", "mIoU", ss),
            (ds, seg, "refined", "ms", "mIoU", ms),
            (ds, seg, "refined", "ss", "mBIoU", biou),
        ]
    for (ds, seg), (ss, ms) in _BASE.items():
        rows.append((ds, seg, "base", "ss", "mIoU", ss))
        if ms is not None:
            rows.append((ds, seg, "base", "ms", "mIoU", ms))
    return pd.DataFrame(rows, columns=["dataset", "segmentor", "method", "test", "metric", "value"])


PUBLISHED = _published()
