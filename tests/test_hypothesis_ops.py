"""Property tests of the ops with Hypothesis: random boxes, degenerate and huge ones included, must give
torchvision's results, or be refused with our clear errors (ValueError, TypeError), never anything else.

Tolerances follow docs/equivalence.md: box_area, box_iou, the box coder, NMS and roi_pool evaluate the
same formula operation by operation as torchvision (or pick one of its input values), so they must agree
bit for bit; roi_align sums its samples in another order, so it is held to torchvision's own float32
error against the float64 truth (assert_as_accurate_as).

The examples are derandomized (the same ones on every run, no example database), and few, so that the
module runs in seconds and CI is deterministic.
"""
import pytest
import torch
import torchvision
from hypothesis import HealthCheck, assume, given, settings
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


@EXAMPLES
@given(data=st.data(), threshold=st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
def test_nms_and_batched_nms(data, threshold):
    candidates = data.draw(boxes(count=st.integers(0, 15), limit=20))  # small: boxes overlap often
    n = len(candidates)
    scores = torch.tensor(data.draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n, unique=True)),
                          dtype=torch.float32)
    # Ties in score, or an IoU within float32's reach of the threshold, make the greedy choice depend on
    # rounding or sort order: the comparison is only meaningful without them.
    iou = torchvision.ops.box_iou(candidates.double(), candidates.double())
    assume(not ((iou - threshold).abs() < 1e-5).any())
    assert torch.equal(ops.nms(candidates, scores, threshold), torchvision.ops.nms(candidates, scores, threshold))
    groups = torch.tensor(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), dtype=torch.int64)
    assert torch.equal(ops.batched_nms(candidates, scores, groups, threshold),
                       torchvision.ops.batched_nms(candidates, scores, groups, threshold))


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
