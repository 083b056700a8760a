"""Contracts of diffseg.metrics: hand-computed counts, torchmetrics parity, mBIoU against a per-class erosion
reference (count for count), streaming, the ignite adapter and input validation.

The per-class reference (`diffseg.reference_metrics`) is the straightforward definition of the release's boundary
IoU; benchmarks/metrics.py times the fast implementation against the same one.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from diffseg.metrics import IgniteSegMetrics, SegMetrics, all_reduce_, boundary_map, boundary_width
from diffseg.reference_metrics import reference_boundary_counts, reference_class_boundary

NAN = float("nan")


# --------------------------------------------------------------------------------------------- helpers
def _rand_labels(shape, num_classes, gen, ignore_index=None, ignore_frac=0.0):
    x = torch.randint(0, num_classes, shape, generator=gen)
    if ignore_index is not None and ignore_frac > 0:
        x[torch.rand(shape, generator=gen) < ignore_frac] = ignore_index
    return x


def _blocky(shape, num_classes, gen, block=4):
    """Piecewise-constant maps (upsampled noise): large regions, so interiors exist."""
    b, h, w = shape
    small = torch.randint(0, num_classes, (b, 1, -(-h // block), -(-w // block)), generator=gen).float()
    return F.interpolate(small, scale_factor=block, mode="nearest")[:, 0, :h, :w].long()


def _rectangles(h, w, num_classes):
    x = torch.zeros(h, w, dtype=torch.long)
    x[2 : h - 3, 3 : w // 2] = 1 % num_classes
    x[h // 3 :, w // 2 + 1 : w - 1] = 2 % num_classes
    x[h // 2 : h // 2 + 2, :] = 3 % num_classes
    return x


def _stripes(h, w, num_classes, period=5, vertical=False):
    idx = torch.arange(w if vertical else h) // period % num_classes
    return idx.expand(h, w).clone() if vertical else idx[:, None].expand(h, w).clone()


def _assert_close(a: float, b: float) -> None:
    assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12), (a, b)


def _assert_same_scores(got: dict, want: dict) -> None:
    """Two `SegMetrics.compute` dicts agree (scalars and per-class lists, NaN == NaN)."""
    assert got.keys() == want.keys()
    for key in want:
        pairs = zip(got[key], want[key]) if isinstance(want[key], list) else [(got[key], want[key])]
        for a, b in pairs:
            _assert_close(a, b)


# --------------------------------------------------------------------------------------------- hand-computed
def test_hand_computed_confusion_and_scores():
    # gt / pred pairs on valid pixels: (0,0) (0,1) (1,1) (1,1) (2,0); the 255 pixel (pred 2) is removed.
    target = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
    pred = torch.tensor([[[0, 1, 1], [1, 0, 2]]])
    m = SegMetrics(num_classes=4)  # class 3 absent from gt and pred: NaN, not averaged
    m.update(pred, target)
    expected_cm = torch.tensor([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert torch.equal(m.state_dict()["confusion"], expected_cm)
    assert m.confusion.dtype == torch.int64
    out = m.compute()
    # IoU = [1/3, 2/3, 0/1, nan]; Acc = [1/2, 2/2, 0/1, nan]; aAcc = 3/5
    for got, want in zip(out["IoU"], [1 / 3, 2 / 3, 0.0, NAN]):
        _assert_close(got, want)
    for got, want in zip(out["Acc"], [0.5, 1.0, 0.0, NAN]):
        _assert_close(got, want)
    _assert_close(out["mIoU"], (1 / 3 + 2 / 3 + 0.0) / 3)
    _assert_close(out["mAcc"], 0.5)
    _assert_close(out["aAcc"], 0.6)
    assert all(isinstance(out[k], float) for k in ("mIoU", "mAcc", "aAcc", "mBIoU"))


def test_hand_computed_ignore_index_inside_class_range():
    # ADE20K 151-class mode: ignore_index=0 < num_classes. Pairs on valid pixels: (1,0) (2,2).
    target = torch.tensor([[[0, 1, 2]]])
    pred = torch.tensor([[[1, 0, 2]]])
    m = SegMetrics(num_classes=3, ignore_index=0)
    m.update(pred, target)
    assert torch.equal(m.confusion, torch.tensor([[0, 0, 0], [1, 0, 0], [0, 0, 1]]))
    out = m.compute()
    # mmseg: class 0 predicted on a valid pixel -> IoU 0 (counted), Acc NaN (no gt pixels).
    for got, want in zip(out["IoU"], [0.0, 0.0, 1.0]):
        _assert_close(got, want)
    for got, want in zip(out["Acc"], [NAN, 0.0, 1.0]):
        _assert_close(got, want)
    _assert_close(out["mIoU"], 1 / 3)
    _assert_close(out["mAcc"], 0.5)
    _assert_close(out["aAcc"], 0.5)
    assert math.isnan(out["BIoU"][0])  # the ignore class never gets a boundary score


def test_hand_computed_boundary_map():
    # 6 x 6, d = 1: a 4 x 4 block of class 1 in the corner, class 0 elsewhere, one ignore pixel.
    label = torch.zeros(1, 6, 6, dtype=torch.long)
    label[0, :4, :4] = 1
    label[0, 5, 5] = 255
    expected = torch.full((6, 6), -1, dtype=torch.long)
    # class 1: interior pixels are those whose 3x3 window is inside the image and all 1: (1..2, 1..2).
    expected[:4, :4] = 1
    expected[1:3, 1:3] = -1
    # class 0: the L-shaped band; its only interior pixel candidate (4,4) touches the ignore pixel (5,5),
    # and every other class-0 pixel touches the border or class 1. The ignore pixel itself is never boundary.
    expected[4:, :] = 0
    expected[:4, 4:] = 0
    expected[5, 5] = -1
    assert torch.equal(boundary_map(label, 1), expected[None])


def test_boundary_width_matches_release_rounding():
    assert boundary_width(512, 683) == 17  # diag 853.6 -> 17.07
    assert boundary_width(1024, 2048) == 46  # diag 2289.7 -> 45.79
    assert boundary_width(10, 10) == 1  # 0.28 rounds to 0 -> raised to 1
    assert boundary_width(30, 40, ratio=0.05) == 2  # 2.5 rounds half to even, as Python / numpy round


# --------------------------------------------------------------------------------------------- torchmetrics
def test_miou_macc_aacc_match_torchmetrics():
    tm = pytest.importorskip("torchmetrics.classification")
    gen = torch.Generator().manual_seed(0)
    k = 5
    target = _rand_labels((3, 17, 23), k, gen, ignore_index=255, ignore_frac=0.2)
    pred = torch.where(
        torch.rand(target.shape, generator=gen) < 0.6,
        target % k,
        torch.randint(0, k, target.shape, generator=gen),
    )
    m = SegMetrics(k)
    m.update(pred, target)
    out = m.compute()
    valid = target != 255
    p, t = pred[valid], target[valid]
    assert torch.unique(t).numel() == k and torch.unique(p).numel() == k  # conventions coincide
    jac = tm.MulticlassJaccardIndex(num_classes=k, average=None)(p, t)
    miou = tm.MulticlassJaccardIndex(num_classes=k, average="macro")(p, t)
    macc = tm.MulticlassAccuracy(num_classes=k, average="macro")(p, t)
    aacc = tm.MulticlassAccuracy(num_classes=k, average="micro")(p, t)
    assert torch.allclose(torch.tensor(out["IoU"], dtype=torch.float64), jac.double(), atol=1e-6)
    assert out["mIoU"] == pytest.approx(float(miou), abs=1e-6)
    assert out["mAcc"] == pytest.approx(float(macc), abs=1e-6)
    assert out["aAcc"] == pytest.approx(float(aacc), abs=1e-6)


# --------------------------------------------------------------------------------------------- mBIoU
def _biou_cases():
    gen = torch.Generator().manual_seed(1)
    cases = []
    # (name, pred, target, num_classes, ignore_index, ratio)
    t = _rand_labels((2, 9, 14), 4, gen, 255, 0.1)
    cases.append(("random_d1", _rand_labels((2, 9, 14), 4, gen), t, 4, 255, 0.02))
    t = _blocky((3, 20, 31), 5, gen)
    t[:, 5:8, 10:14] = 255
    cases.append(("blocky_ignore_d2", _blocky((3, 20, 31), 5, gen, block=3), t, 5, 255, 0.05))
    t = _blocky((2, 33, 18), 6, gen, block=6)
    cases.append(("blocky_nonsquare_d4", _blocky((2, 33, 18), 6, gen, block=5), t, 6, 255, 0.11))
    rect, stripes = _rectangles(24, 30, 4), _stripes(24, 30, 4, period=6)
    cases.append(("rect_vs_stripes_d3", stripes[None], rect[None], 4, 255, 0.08))
    vstripes = _stripes(16, 40, 3, period=7, vertical=True)
    cases.append(("stripes_d2", vstripes[None], _stripes(16, 40, 3, period=4)[None], 3, 255, 0.05))
    # ADE20K 151-class mode: ignore 0 is a class id, also predicted.
    t = _blocky((2, 18, 26), 4, gen)
    cases.append(("ignore0_d2", _blocky((2, 18, 26), 4, gen, block=5), t, 4, 0, 0.06))
    # ignore_index -1 and a window larger than the image (everything is boundary).
    t = _rand_labels((1, 7, 9), 3, gen, -1, 0.2)
    cases.append(("ignore_neg_all_boundary", _blocky((1, 7, 9), 3, gen), t, 3, -1, 0.5))
    return cases


@pytest.mark.parametrize("case", _biou_cases(), ids=lambda c: c[0])
def test_mbiou_counts_match_per_class_erosion_reference(case):
    _, pred, target, k, ignore, ratio = case
    h, w = target.shape[1:]
    d = max(1, round(ratio * math.hypot(h, w)))
    m = SegMetrics(k, ignore_index=ignore, boundary_ratio=ratio)
    m.update(pred, target)
    inter, union = reference_boundary_counts(pred, target, k, ignore, d)
    assert torch.equal(m.boundary_intersect, inter)
    assert torch.equal(m.boundary_union, union)
    assert int(union.sum()) > 0  # the case exercises something
    # The label-map form agrees with the per-class masks too.
    for label in (pred, target):
        bmap = boundary_map(label, d, ignore)
        for c in range(k):
            if c != ignore:
                assert torch.equal(bmap == c, reference_class_boundary(label, c, d)), c
        assert bool((bmap[label == ignore] == -1).all())
    out = m.compute()
    ratios = [i / u if u > 0 else NAN for i, u in zip(inter.tolist(), union.tolist())]
    if 0 <= ignore < k:
        ratios[ignore] = NAN
    for got, want in zip(out["BIoU"], ratios):
        _assert_close(got, want)
    _assert_close(out["mBIoU"], float(torch.tensor(ratios, dtype=torch.float64).nanmean()))


def test_perfect_prediction_scores_one():
    gen = torch.Generator().manual_seed(2)
    target = _blocky((2, 20, 20), 4, gen)
    m = SegMetrics(4, boundary_ratio=0.1)
    m.update(target.clone(), target)
    out = m.compute()
    assert out["mIoU"] == out["mAcc"] == out["aAcc"] == out["mBIoU"] == 1.0


# --------------------------------------------------------------------------------------------- streaming
def test_streaming_equals_one_update_and_merge():
    gen = torch.Generator().manual_seed(3)
    target = _rand_labels((6, 12, 15), 5, gen, 255, 0.1)
    pred = _blocky((6, 12, 15), 5, gen, block=3)
    whole = SegMetrics(5, boundary_ratio=0.1)
    whole.update(pred, target)
    streamed = SegMetrics(5, boundary_ratio=0.1)
    for a, b in ((0, 1), (1, 3), (3, 6)):
        streamed.update(pred[a:b], target[a:b])
    for key, value in whole.state_dict().items():
        assert torch.equal(streamed.state_dict()[key], value), key
    left, right = SegMetrics(5, boundary_ratio=0.1), SegMetrics(5, boundary_ratio=0.1)
    left.update(pred[:2], target[:2])
    right.update(pred[2:], target[2:])
    _assert_same_scores(left.merge(right).compute(), whole.compute())
    whole.reset()
    assert all(int(v.abs().sum()) == 0 for v in whole.state_dict().values())


def test_merge_rejects_different_settings():
    with pytest.raises(ValueError, match="num_classes"):
        SegMetrics(3).merge(SegMetrics(4))


def test_all_reduce_is_noop_with_one_process():
    m = SegMetrics(3)
    m.update(torch.tensor([[[0, 1, 2]]]), torch.tensor([[[0, 1, 1]]]))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    all_reduce_([m, m.clone()])
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


# --------------------------------------------------------------------------------------------- ignite
def test_ignite_adapter_matches_segmetrics_and_takes_logits():
    from ignite.engine import Engine

    gen = torch.Generator().manual_seed(4)
    k = 4
    batches = [
        (torch.randn(2, k, 10, 12, generator=gen), _rand_labels((2, 10, 12), k, gen, 255, 0.1))
        for _ in range(3)
    ]
    engine = Engine(lambda e, batch: batch)
    IgniteSegMetrics(k, boundary_ratio=0.1).attach(engine, "seg")
    state = engine.run(batches, max_epochs=1)
    ref = SegMetrics(k, boundary_ratio=0.1)
    for logits, target in batches:
        ref.update(logits.argmax(1), target)
    _assert_same_scores(state.metrics["seg"], ref.compute())
    assert state.metrics["mIoU"] == pytest.approx(ref.compute()["mIoU"])


# --------------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    ("pred", "target", "match"),
    [
        (torch.tensor([[[0, 3]]]), torch.tensor([[[0, 1]]]), r"pred values \[3\]"),
        (torch.tensor([[[0, -1]]]), torch.tensor([[[0, 1]]]), r"pred values \[-1\]"),
        (torch.tensor([[[0, 1]]]), torch.tensor([[[7, 1]]]), r"target values \[7\].*ignore_index 255"),
        (
            torch.zeros(1, 2, 3, dtype=torch.long),
            torch.zeros(1, 3, 2, dtype=torch.long),
            r"\(1, 2, 3\).*\(1, 3, 2\)",
        ),
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), r"\(B, H, W\)"),
        (torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), r"pred.*torch.float32"),
        (
            torch.zeros(1, 2, 2, dtype=torch.long),
            torch.zeros(1, 2, 2, dtype=torch.float64),
            r"target.*torch.float64",
        ),
    ],
)
def test_bad_inputs_raise_value_error(pred, target, match):
    m = SegMetrics(3)
    with pytest.raises(ValueError, match=match):
        m.update(pred, target)
    assert int(m.confusion.sum()) == 0  # nothing was half-counted


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        SegMetrics(0)
    with pytest.raises(ValueError, match="boundary_ratio"):
        SegMetrics(3, boundary_ratio=0.0)


# --------------------------------------------------------------------------------------------- device
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_counts_equal_cpu_counts():
    gen = torch.Generator().manual_seed(5)
    target = _blocky((2, 40, 56), 7, gen, block=5)
    target[:, 10:14, 20:30] = 255
    pred = _blocky((2, 40, 56), 7, gen, block=4)
    cpu, gpu = SegMetrics(7, boundary_ratio=0.08), SegMetrics(7, boundary_ratio=0.08)
    cpu.update(pred, target)
    gpu.update(pred.cuda(), target.cuda())
    assert gpu.confusion.device.type == "cuda"  # counts stay on the tensors' device
    for key, value in cpu.state_dict().items():
        assert torch.equal(gpu.state_dict()[key].cpu(), value), key
