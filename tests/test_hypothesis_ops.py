"""Property tests of the ops with Hypothesis: random boxes, degenerate and huge ones included, must give
torchvision's results, or be refused with our clear errors (ValueError, TypeError), never anything else.

Tolerances follow docs/equivalence.md: box_area, box_iou, the box coder, NMS and roi_pool evaluate the
same formula operation by operation as torchvision (or pick one of its input values), so they must agree
bit for bit; roi_align sums its samples in another order, so it is held to torchvision's own float32
error against the float64 truth (assert_as_accurate_as).

The examples are derandomized (the same ones on every run, no example database), so that CI is
deterministic, and few, so that the module runs in seconds; NMS, a discrete choice that is cheap on small
inputs, gets 400, on boxes of small integers built to hit its edge cases.
"""
import itertools
import math
import struct
from collections import Counter

import pytest
import torch
import torchvision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

from mrcnn_from_scratch import ops

from conftest import assert_as_accurate_as

EXAMPLES = settings(derandomize=True, database=None, deadline=None, max_examples=40,
                    suppress_health_check=[HealthCheck.too_slow])


def coordinates(limit: float):
    """float32 numbers in [-limit, limit]: exact in float64 too, so both precisions see the same boxes."""
    return st.floats(-limit, limit, width=32, allow_nan=False)


@st.composite
def boxes(draw, count=st.integers(0, 12), limit=1e4, degenerate=True):
    """Tensor[N, 4] (x1, y1, x2, y2) float32 with x2 >= x1 and y2 >= y1; zero sizes when `degenerate`."""
    n = draw(count)
    rows = []
    for _ in range(n):
        x, y = draw(coordinates(limit)), draw(coordinates(limit))
        size = st.floats(0 if degenerate else 2.0**-6, limit, width=32)
        w, h = draw(size), draw(size)
        rows.append([x, y, x + w, y + h])
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


# Up to 1e4 pixels, as in images, or huge: with coordinates up to 2^50 (1e15) areas reach 1e30, still
# finite in float32 (whose largest number is 3e38).
SIZES = st.sampled_from([1e4, 2.0**50])


def assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Bit for bit, NaN where torchvision has NaN (0/0: the IoU of two empty boxes)."""
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)


@EXAMPLES
@given(data=st.data(), limit=SIZES)
def test_box_area_and_iou(data, limit):
    first, second = data.draw(boxes(limit=limit)), data.draw(boxes(limit=limit))
    assert_same(ops.box_area(first), torchvision.ops.box_area(first))
    assert_same(ops.box_iou(first, second), torchvision.ops.box_iou(first, second))


@EXAMPLES
@given(data=st.data(), weights=st.sampled_from([(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]))
def test_box_coder(data, weights):
    count = data.draw(st.integers(1, 10))
    references = data.draw(boxes(count=st.just(count), degenerate=False))
    targets = data.draw(boxes(count=st.just(count), degenerate=False))
    deltas = torch.tensor(data.draw(st.lists(st.floats(-10, 10, width=32), min_size=4 * count, max_size=4 * count)))
    ours, theirs = ops.BoxCoder(weights), TorchvisionBoxCoder(weights)
    assert_same(ours.encode(targets, references), theirs.encode_single(targets, references))
    assert_same(ours.decode(deltas.reshape(count, 4), references),
                theirs.decode_single(deltas.reshape(count, 4), references))


# NMS is a discrete choice, so its examples are small integer boxes: they overlap often, their IoUs are
# exact ratios that land on the threshold, and tied scores make the order of equals matter. Many examples,
# each cheap; NMS_SEEN sums what they exercised and test_nms_examples_are_not_vacuous checks it.
NMS_EXAMPLES = settings(EXAMPLES, max_examples=400)
NMS_SEEN: Counter = Counter()
# Thresholds that integer boxes hit exactly: float32 rounds 0.3, 0.4, 0.6, 0.8 and 1/3 up, 0.7 down, and
# holds 0.25, 0.5 and 1.0 exactly. Then any ratio of small integers, and any float.
THRESHOLDS = (st.sampled_from([0.0, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0])
              | st.tuples(st.integers(0, 12), st.integers(1, 12)).map(lambda pq: min(1.0, pq[0] / pq[1]))
              | st.floats(0, 1))


def float32(value: float) -> float:
    """`value` rounded to the nearest float32, as a Python float."""
    return struct.unpack("f", struct.pack("f", value))[0]


def iou32(a: list[int], b: list[int]) -> float:
    """The float32 IoU of two boxes of small integers, as torchvision's kernel computes it: areas,
    intersection and union are exact integers, so only the division rounds, once. (Rounding the float64
    quotient to float32 is that one rounding: float64 carries more than 2 × 24 + 2 bits.) 0/0 is NaN."""
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float32(inter / union) if union else math.nan


def above_in_float64(iou: float, threshold: float) -> bool:
    """torchvision's CPU kernel: `ovr > iou_threshold`, a float32 IoU against a C++ double."""
    return iou > threshold


def reference_nms(ious: list[list[float]], scores: list[float], threshold: float, above=above_in_float64,
                  one_shot: bool = False, ties_reversed: bool = False) -> list[int]:
    """The textbook loop over the boxes' float32 IoUs `ious` (iou32 of every pair): by decreasing score
    (ties in input order), keep a box unless a kept box overlaps it above the threshold. The keywords
    give the wrong variants that the vacuity check counts: `above` another comparison, `one_shot` drops a
    box that any better box overlaps, kept or not, `ties_reversed` puts tied scores in reverse order."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], -i if ties_reversed else i))
    kept: list[int] = []
    for rank, j in enumerate(order):
        judges = order[:rank] if one_shot else kept
        if not any(above(ious[i][j], threshold) for i in judges):
            kept.append(j)
    return kept


def reference_batched_nms(ious, scores, groups, threshold) -> list[int]:
    """reference_nms within each group, then all kept boxes by decreasing score, ties in input order."""
    cross_group = [[iou if groups[i] == groups[j] else 0.0 for j, iou in enumerate(row)] for i, row in enumerate(ious)]
    return sorted(reference_nms(cross_group, scores, threshold), key=lambda i: (-scores[i], i))


SIZES = [0] + [1, 2, 3, 4, 5, 6] * 2  # a box side: empty 1 time in 13


@st.composite
def nms_inputs(draw):
    """Up to 16 boxes [x1, y1, x2, y2] of integers in [0, 12] (corners 0 to 6, sides 0 to 6, empty boxes
    included), their float32 scores and groups (0, 1 or 2). Scores take 3 or 8 values, so that ties are
    common, or about a million. One draw per box, which Hypothesis shrinks towards [0, 0, 0, 0]: drawing
    each number apart made the examples several times slower."""
    levels = draw(st.sampled_from([3, 8, 2**20]))
    rows, scores, groups = [], [], []
    for _ in range(draw(st.integers(0, 16))):
        code = draw(st.integers(0, 2**48))
        code, x = divmod(code, 7)
        code, y = divmod(code, 7)
        code, w = divmod(code, 13)
        code, h = divmod(code, 13)
        code, group = divmod(code, 3)
        rows.append([x, y, x + SIZES[w], y + SIZES[h]])
        groups.append(group)
        scores.append(float32((code % levels + 1) / levels))
    return rows, scores, groups


def exact_ious(rows: list[list[int]]) -> list[float]:
    """The IoUs of this example's pairs, as float64 ratios: thresholds that its pairs sit exactly on."""
    found = set()
    for a, b in itertools.combinations(rows, 2):
        inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        if union:
            found.add(inter / union)
    return sorted(found)


@NMS_EXAMPLES
@given(data=st.data())
def test_nms_and_batched_nms(data):
    """Catches any NMS that is not torchvision's greedy one where a wrong one differs: a one-shot
    suppression, `>=` for `>`, the threshold compared in float32 (keeps a box at IoU exactly 0.3 that
    torchvision drops), tied scores taken in another order, groups that suppress each other."""
    rows, score_list, groups = data.draw(nms_inputs())
    ious = exact_ious(rows)
    # Half the time the threshold is one of this example's own IoUs: the pair sits exactly on it.
    threshold = data.draw(st.sampled_from(ious) | THRESHOLDS if ious else THRESHOLDS)
    candidates = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
    scores = torch.tensor(score_list, dtype=torch.float32)
    groups_tensor = torch.tensor(groups, dtype=torch.int64)
    pairs = [[iou32(a, b) for b in rows] for a in rows]

    expected = reference_nms(pairs, score_list, threshold)
    assert ops.nms(candidates, scores, threshold).tolist() == expected
    assert torchvision.ops.nms(candidates, scores, threshold).tolist() == expected  # the reference is right
    expected_batched = reference_batched_nms(pairs, score_list, groups, threshold)
    assert ops.batched_nms(candidates, scores, groups_tensor, threshold).tolist() == expected_batched
    assert torchvision.ops.batched_nms(candidates, scores, groups_tensor, threshold).tolist() == expected_batched

    # What this example exercised: suppressions, and where each wrong variant would have been caught.
    NMS_SEEN["examples"] += 1
    NMS_SEEN["boxes"] += len(rows)
    NMS_SEEN["suppressed boxes"] += len(rows) - len(expected)
    rank = {box: r for r, box in enumerate(sorted(range(len(rows)), key=lambda i: (-score_list[i], i)))}
    NMS_SEEN["suppressing pairs"] += sum(rank[i] < rank[j] and above_in_float64(pairs[i][j], threshold)
                                         for i in expected for j in set(range(len(rows))) - set(expected))
    NMS_SEEN["examples where ignoring groups differs"] += sorted(expected_batched) != sorted(expected)
    wrong_variants = {
        "one-shot": reference_nms(pairs, score_list, threshold, one_shot=True),
        ">=": reference_nms(pairs, score_list, threshold, above=lambda iou, t: iou >= t),
        "float32 comparison": reference_nms(pairs, score_list, threshold, above=lambda iou, t: iou > float32(t)),
        "ties reversed": reference_nms(pairs, score_list, threshold, ties_reversed=True),
    }
    for name, keep in wrong_variants.items():
        NMS_SEEN[f"examples where {name} keeps other boxes"] += sorted(keep) != sorted(expected)


def test_nms_examples_are_not_vacuous():
    """Catches a property test that passes whatever NMS does: examples that suppress nothing, or that
    never separate greedy NMS from a one-shot one, `>=` from `>`, the float32 from the float64 threshold,
    or input order from reversed order among tied scores."""
    if NMS_SEEN["examples"] < NMS_EXAMPLES.max_examples:  # the property test did not run here (-k, xdist)
        NMS_SEEN.clear()
        test_nms_and_batched_nms()
    seen = dict(NMS_SEEN)
    assert seen["examples"] >= 300, seen
    assert seen["suppressed boxes"] >= 300, seen
    for name in ["one-shot", ">=", "float32 comparison", "ties reversed"]:
        assert seen[f"examples where {name} keeps other boxes"] >= 10, seen
    assert seen["examples where ignoring groups differs"] >= 10, seen


@st.composite
def rois(draw, images: int, limit: float):
    """Tensor[K, 5] of (batch index, x1, y1, x2, y2), boxes from inside the map to far outside it."""
    found = draw(boxes(count=st.integers(1, 6), limit=limit))
    index = torch.tensor(draw(st.lists(st.integers(0, images - 1), min_size=len(found), max_size=len(found))))
    return torch.cat([index[:, None].float(), found], dim=1)


@EXAMPLES
@given(data=st.data(), aligned=st.booleans(), spatial_scale=st.sampled_from([1.0, 0.5, 0.25]),
       output_size=st.tuples(st.integers(1, 4), st.integers(1, 4)), huge=st.booleans())
def test_roi_align(data, aligned, spatial_scale, output_size, huge):
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    feature = torch.rand(2, 3, data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9)), generator=generator,
                         dtype=torch.float64)
    # The adaptive sampling grid grows with the box (ceil(box / bin) samples): huge boxes get a fixed one.
    sampling_ratio = data.draw(st.sampled_from([1, 2] if huge else [-1, 0, 1, 2]))
    boxes64 = data.draw(rois(2, 1e6 if huge else 40)).double()
    args = (output_size, spatial_scale, sampling_ratio, aligned)
    assert_as_accurate_as(ops.roi_align(feature.float(), boxes64.float(), *args),
                          torchvision.ops.roi_align(feature.float(), boxes64.float(), *args),
                          torchvision.ops.roi_align(feature, boxes64, *args), "roi_align")


@EXAMPLES
@given(data=st.data(), spatial_scale=st.sampled_from([1.0, 0.5, 0.25]),
       output_size=st.tuples(st.integers(1, 4), st.integers(1, 4)))
def test_roi_pool(data, spatial_scale, output_size):
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    feature = torch.rand(2, 3, data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9)), generator=generator)
    found = data.draw(rois(2, data.draw(st.sampled_from([40, 1e6]))))
    assert_same(ops.roi_pool(feature, found, output_size, spatial_scale),
                torchvision.ops.roi_pool(feature, found, output_size, spatial_scale))


@EXAMPLES
@given(data=st.data())
def test_wrong_inputs_get_our_clear_errors(data):
    feature = torch.rand(1, 2, 5, 5)
    wrong = data.draw(st.sampled_from([
        (torch.rand(3, 4), 2, feature),  # boxes as a tensor need 5 columns
        ([torch.rand(3, 5)], 2, feature),  # a list holds [L, 4] per image
        ([], 2, feature),  # no images
        (torch.rand(3, 5).double(), 2, feature),  # another dtype than the features
        (torch.rand(3, 5), 0, feature),  # an empty output
        (torch.rand(3, 5), 2, feature[0]),  # features without a batch dimension
    ]))
    for op in (ops.roi_align, ops.roi_pool):
        with pytest.raises((ValueError, TypeError), match=r"\w+ \w+"):
            op(wrong[2], wrong[0], wrong[1])
