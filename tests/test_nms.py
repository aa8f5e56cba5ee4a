"""nms and batched_nms against torchvision: the same kept indices in the same order."""
import pytest
import torch
import torchvision

from mrcnn_from_scratch.ops import batched_nms, nms
from mrcnn_from_scratch.ops.nms import overlap_graph

from conftest import random_boxes


def boxes_and_scores(seed, count, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    boxes = random_boxes(gen, count, 600.0, 800.0, dtype)
    return boxes, torch.rand(count, generator=gen, dtype=dtype)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("iou_threshold", [0.2, 0.5, 0.8])
def test_nms_matches_torchvision(seed, iou_threshold):
    boxes, scores = boxes_and_scores(seed, 1000)
    ours = nms(boxes, scores, iou_threshold)
    assert ours.dtype == torch.int64
    # Exact keep lists: our IoU is torchvision's formula, operation by operation, so both compare the same
    # bits with the threshold. Only a pair within one rounding of the threshold could go either way, and
    # random coordinates make that a tie of probability about 1e-7 per overlapping pair.
    assert torch.equal(ours, torchvision.ops.nms(boxes, scores, iou_threshold))


def test_chain_of_overlaps():
    # Each box overlaps only its neighbours, scores fall along the chain: greedy keeps every other box.
    # A one-shot "drop everything overlapped by a better box" would keep only the first.
    x = torch.arange(40, dtype=torch.float32) * 6
    boxes = torch.stack([x, torch.zeros(40), x + 10, torch.full((40,), 10.0)], dim=1)
    scores = torch.linspace(1, 0.1, 40)
    ours = nms(boxes, scores, 0.2)
    assert torch.equal(ours, torchvision.ops.nms(boxes, scores, 0.2))
    assert ours.tolist() == list(range(0, 40, 2))


def test_tied_scores():
    gen = torch.Generator().manual_seed(3)
    boxes = random_boxes(gen, 300, 100.0, 100.0, torch.float32)
    scores = torch.randint(0, 4, (300,), generator=gen).float()
    assert torch.equal(nms(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))
    identical = torch.tensor([[1.0, 1.0, 5.0, 5.0]] * 3)
    assert nms(identical, torch.ones(3), 0.5).tolist() == torchvision.ops.nms(identical, torch.ones(3), 0.5).tolist()


def test_iou_exactly_at_threshold_is_kept():
    # IoU of these two is exactly 0.5: NMS drops only boxes with IoU > threshold.
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 2.0, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == torchvision.ops.nms(boxes, scores, 0.5).tolist() == [0, 1]


def test_one_box_and_no_boxes():
    one = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert nms(one, torch.tensor([0.3]), 0.5).tolist() == [0]
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.dtype == torch.int64 and empty.shape == (0,)
    empty = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.dtype == torch.int64 and empty.shape == (0,)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="scores"):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.5)


@pytest.mark.parametrize("count", [300, 3000])  # the coordinate-offset trick, then one NMS per category
@pytest.mark.parametrize("seed", range(3))
def test_batched_nms_matches_torchvision(count, seed):
    boxes, scores = boxes_and_scores(seed, count)
    idxs = torch.randint(0, 5, (count,), generator=torch.Generator().manual_seed(seed))
    for iou_threshold in [0.3, 0.7]:
        ours = batched_nms(boxes, scores, idxs, iou_threshold)
        assert torch.equal(ours, torchvision.ops.batched_nms(boxes, scores, idxs, iou_threshold))


def test_batched_nms_keeps_overlapping_boxes_of_different_categories():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 2)
    assert batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([1, 2]), 0.5).tolist() == [0, 1]
    assert batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([1, 1]), 0.5).tolist() == [0]


# IoU exactly at the threshold, with integer boxes: the second box lies inside the first, so IoU = its area
# over the first's. float32 rounds 3/10, 2/5, 3/5 and 4/5 up, so torchvision's CPU kernel, which compares the
# float32 IoU with the threshold in float64, drops the second box; 1/2 and 1/4 are exact and 7/10 rounds
# down, so it keeps it.
AT_THRESHOLD = [  # (first box, second box, threshold, what torchvision's CPU kernel keeps)
    ([0, 0, 10, 1], [0, 0, 3, 1], 0.3, [0]),
    ([0, 0, 5, 1], [0, 0, 2, 1], 0.4, [0]),
    ([0, 0, 5, 1], [0, 0, 3, 1], 0.6, [0]),
    ([0, 0, 5, 1], [0, 0, 4, 1], 0.8, [0]),
    ([0, 0, 3, 1], [0, 0, 1, 1], 1 / 3, [0]),
    ([0, 0, 2, 1], [1, 0, 2, 1], 0.5, [0, 1]),
    ([0, 0, 4, 1], [0, 0, 1, 1], 0.25, [0, 1]),
    ([0, 0, 10, 1], [0, 0, 7, 1], 0.7, [0, 1]),
]


@pytest.mark.parametrize("first, second, iou_threshold, kept", AT_THRESHOLD)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_iou_exactly_at_the_threshold(first, second, iou_threshold, kept, dtype):
    """Catches the threshold compared in float32 (keeps the second box at IoU 3/10 = 0.3, which
    torchvision's CPU kernel drops) and `>=` for `>` (drops it at IoU 1/2 = 0.5, which torchvision keeps)."""
    boxes = torch.tensor([first, second], dtype=dtype)
    scores = torch.tensor([0.9, 0.8], dtype=dtype)
    # In float64 the IoU is the double nearest the ratio, as the threshold is: equal, so always kept.
    expected = kept if dtype == torch.float32 else [0, 1]
    assert torchvision.ops.nms(boxes, scores, iou_threshold).tolist() == expected
    assert nms(boxes, scores, iou_threshold).tolist() == expected
    assert batched_nms(boxes, scores, torch.tensor([3, 3]), iou_threshold).tolist() == expected
    # The RPN's batched path builds its overlap graph with overlap_graph: the same comparison.
    assert overlap_graph(boxes[None], iou_threshold)[0, 0, 1].item() == (expected == [0])


def test_iou_at_the_threshold_in_the_per_category_path():
    """Catches the float32 threshold comparison in batched_nms's per-category path (above 1000 boxes):
    1200 copies of the 3/10 pair, far apart, in 4 categories, against torchvision's own per-category path."""
    offsets = torch.arange(600, dtype=torch.float32).repeat_interleave(2)[:, None] * 20
    boxes = torch.tensor([[0.0, 0, 10, 1], [0, 0, 3, 1]]).repeat(600, 1) + offsets
    scores = torch.linspace(1, 0.1, 1200)
    idxs = torch.arange(1200) // 2 % 4  # each pair in one category
    ours = batched_nms(boxes, scores, idxs, 0.3)
    assert torch.equal(ours, torchvision.ops.batched_nms(boxes, scores, idxs, 0.3))
    assert len(ours) == 600


def test_exact_ties_keep_the_lower_index():
    """Catches tied scores sorted unstably or in reverse: of two identical-score boxes that overlap,
    torchvision (a stable sort, CPU and CUDA alike) keeps the one that comes first in the input, and lists
    tied kept boxes in input order."""
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10], [50, 50, 60, 60]])
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5])
    assert torchvision.ops.nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(boxes.flip(0), scores, 0.5).tolist() == [0, 1]  # reversed: the first copy of each is kept
    # Many ties, many boxes (tie order over the whole sort), both of batched_nms's paths.
    gen = torch.Generator().manual_seed(5)
    for count in (500, 2000):
        boxes = random_boxes(gen, count, 100.0, 100.0, torch.float32).round()
        scores = torch.randint(0, 3, (count,), generator=gen).float()
        idxs = torch.randint(0, 3, (count,), generator=gen)
        assert torch.equal(nms(boxes, scores, 0.4), torchvision.ops.nms(boxes, scores, 0.4))
        assert torch.equal(batched_nms(boxes, scores, idxs, 0.4), torchvision.ops.batched_nms(boxes, scores, idxs, 0.4))
