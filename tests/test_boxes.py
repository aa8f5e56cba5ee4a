"""Box geometry and box coding against torchvision."""
import math

import pytest
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

from mrcnn_from_scratch.ops import BoxCoder, box_area, box_iou, clip_boxes_to_image, remove_small_boxes

from conftest import awkward_boxes, random_boxes


@pytest.fixture
def boxes(gen):
    return torch.cat([random_boxes(gen, 50, 300.0, 400.0), awkward_boxes(300.0, 400.0)])


def test_box_area_by_hand():
    # Width is x2 - x1 with no +1: a box from 0 to 10 covers 10 pixels.
    assert box_area(torch.tensor([[0.0, 0.0, 10.0, 5.0], [2.0, 3.0, 2.0, 9.0]])).tolist() == [50.0, 0.0]


def test_box_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 4.0, 2.0], [0.0, 0.0, 2.0, 2.0]])
    # overlap 1 of union 7; touching edges do not overlap; identical boxes.
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 0.0, 1.0]]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
def test_box_area_and_iou_match_torchvision(boxes, dtype):
    boxes = boxes.to(dtype) if dtype.is_floating_point else boxes.round().to(dtype)
    valid = boxes[box_area(boxes) > 0]  # IoU of two empty boxes is 0/0 in both libraries
    # Exact: both sides evaluate the same formula, operation by operation, and each IEEE operation is
    # correctly rounded, so any CPU gives both the same bits (no sum whose order could differ).
    torch.testing.assert_close(box_area(boxes), torchvision.ops.box_area(boxes), atol=0, rtol=0)
    torch.testing.assert_close(box_iou(valid, valid[:20]), torchvision.ops.box_iou(valid, valid[:20]), atol=0, rtol=0)


def test_box_iou_batched_and_empty(boxes):
    batch = torch.stack([boxes[:10], boxes[10:20]])
    torch.testing.assert_close(box_iou(batch, batch[:, :4]), torchvision.ops.box_iou(batch, batch[:, :4]))
    assert box_iou(torch.zeros(0, 4), boxes).shape == (0, len(boxes))


def test_clip_and_remove_small_match_torchvision(boxes):
    for size in [(300, 400), (17, 9)]:
        torch.testing.assert_close(clip_boxes_to_image(boxes, size), torchvision.ops.clip_boxes_to_image(boxes, size))
    batch = torch.stack([boxes, boxes])
    torch.testing.assert_close(
        clip_boxes_to_image(batch, (30, 40)), torchvision.ops.clip_boxes_to_image(batch, (30, 40))
    )
    for min_size in [0.0, 1e-3, 1.0, 50.0]:
        assert torch.equal(remove_small_boxes(boxes, min_size), torchvision.ops.remove_small_boxes(boxes, min_size))


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_coder_matches_torchvision(gen, weights, dtype):
    anchors = random_boxes(gen, 200, 300.0, 400.0, dtype) + torch.tensor([0, 0, 1, 1], dtype=dtype)
    gt = random_boxes(gen, 200, 300.0, 400.0, dtype) + torch.tensor([0, 0, 1, 1], dtype=dtype)
    ours, theirs = BoxCoder(weights), TorchvisionBoxCoder(weights)
    deltas = ours.encode(gt, anchors)
    torch.testing.assert_close(deltas, theirs.encode_single(gt, anchors), atol=0, rtol=0)
    # decode undoes encode, except where the size ratio is beyond the clamp (more than 1000/16)
    unclamped = (deltas[:, 2:] / torch.tensor(weights[2:], dtype=dtype)).amax(dim=1) < ours.bbox_xform_clip
    assert unclamped.sum() > 150
    atol = 1e-4 if dtype == torch.float32 else 1e-9  # coordinates up to 400: a few float32 ulps
    torch.testing.assert_close(ours.decode(deltas, anchors)[unclamped], gt[unclamped], atol=atol, rtol=0)
    # Per-class deltas [N, 4K], including huge dw/dh that the clamp must catch.
    per_class = torch.randn(200, 4 * 3, generator=gen, dtype=dtype) * 20
    torch.testing.assert_close(ours.decode(per_class, anchors), theirs.decode_single(per_class, anchors), atol=0, rtol=0)


def test_box_coder_clamps_scale_deltas():
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    decoded = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), anchor)
    # exp(log(1000/16)) · 16 = 1000, centred on the anchor's centre (8, 8).
    torch.testing.assert_close(decoded, torch.tensor([[8.0 - 500, 8.0 - 500, 8.0 + 500, 8.0 + 500]]))
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0), bbox_xform_clip=math.log(2.0))
    torch.testing.assert_close(coder.decode(torch.tensor([[0.0, 0.0, 5.0, 5.0]]), anchor), torch.tensor([[-8.0, -8.0, 24.0, 24.0]]))
