"""Chapter 01's checkers pass correct code (ours and torchvision's) and reject plausible mistakes."""
import math

import pytest
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

from mrcnn_from_scratch import ops
from mrcnn_from_scratch.exercises import (
    check_batched_nms,
    check_box_coder,
    check_box_iou,
    check_decode,
    check_encode,
    check_nms,
)

CLIP = math.log(1000 / 16)


# ------------------------------------------------------------------ correct implementations pass

def test_checkers_pass_the_package_and_torchvision(capsys):
    assert check_box_iou(ops.box_iou)
    assert check_box_iou(torchvision.ops.box_iou)
    assert check_box_coder(lambda g, a, w: ops.BoxCoder(w).encode(g, a), lambda d, a, w: ops.BoxCoder(w).decode(d, a))
    assert check_encode(lambda g, a, w: TorchvisionBoxCoder(w).encode_single(g, a))
    assert check_decode(lambda d, a, w: TorchvisionBoxCoder(w).decode_single(d, a))
    assert check_nms(ops.nms)
    assert check_nms(torchvision.ops.nms)
    assert check_batched_nms(ops.batched_nms)
    assert check_batched_nms(torchvision.ops.batched_nms)
    out = capsys.readouterr().out
    assert out.count("✓") == 10 and "✓ check_nms passed" in out


def test_unfilled_stub_raises_not_implemented():
    def stub(boxes, scores, iou_threshold):
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        check_nms(stub)


def test_other_exceptions_name_the_case():
    def crashes_on_empty(boxes, scores, iou_threshold):
        if len(boxes) == 0:
            raise IndexError("index 0 is out of bounds")
        return ops.nms(boxes, scores, iou_threshold)

    with pytest.raises(AssertionError, match='"empty input": your function raised IndexError'):
        check_nms(crashes_on_empty)


# ------------------------------------------------------------------------------ wrong box IoU

def _iou(boxes1, boxes2, plus=0.0, clamp=True):
    """IoU in the corners style; plus=1 is the old width convention x2 - x1 + 1."""
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    sides = bottom_right - top_left + plus
    intersection = (sides.clamp(min=0) if clamp else sides).prod(-1)
    area1 = (boxes1[:, 2:] - boxes1[:, :2] + plus).prod(-1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2] + plus).prod(-1)
    return intersection / (area1[:, None] + area2[None, :] - intersection)


@pytest.mark.parametrize(
    "wrong_iou, message",
    [
        (lambda b1, b2: _iou(b1, b2, plus=1), "wrong values"),
        (lambda b1, b2: _iou(b1, b2, clamp=False), "wrong values"),
        (lambda b1, b2: _iou(b1, b2).T, "should have shape"),
        (lambda b1, b2: _iou(b1, b2).double(), "should have dtype torch.float32"),
        (lambda b1, b2: _iou(b1, b2).tolist(), "should be a torch.Tensor, got list"),
        (lambda b1, b2: _iou(b1, b2).diagonal(), "should have shape"),
    ],
    ids=["plus-one widths", "no clamp", "transposed", "float64", "list", "diagonal only"],
)
def test_check_box_iou_rejects(wrong_iou, message):
    with pytest.raises(AssertionError, match=message):
        check_box_iou(wrong_iou)


def test_failure_message_shows_input_expected_and_received():
    with pytest.raises(AssertionError) as failure:
        check_box_iou(lambda b1, b2: _iou(b1, b2, plus=1))
    text = str(failure.value)
    assert 'check_box_iou failed on case 1 of' in text
    assert "boxes1 = tensor([[" in text and "Expected: tensor(" in text and "Received: tensor(" in text
    assert "Hint: IoU = intersection / (area1 + area2 - intersection), sides x2 - x1 (no +1)" in text


# --------------------------------------------------------------------------------- wrong coding

def _size_and_centre(boxes):
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return w, h, boxes[:, 0] + w / 2, boxes[:, 1] + h / 2


def encode_gt_relative(gt_boxes, anchors, weights):
    """Divides the shift by the gt box's size instead of the anchor's."""
    wx, wy, ww, wh = weights
    aw, ah, ax, ay = _size_and_centre(anchors)
    gw, gh, gx, gy = _size_and_centre(gt_boxes)
    return torch.stack([wx * (gx - ax) / gw, wy * (gy - ay) / gh, ww * torch.log(gw / aw), wh * torch.log(gh / ah)], 1)


def encode_without_weights(gt_boxes, anchors, weights):
    return ops.BoxCoder((1.0, 1.0, 1.0, 1.0)).encode(gt_boxes, anchors)


def decode(deltas, anchors, weights, clamp_first=False, clamp=True):
    wx, wy, ww, wh = weights
    aw, ah, ax, ay = _size_and_centre(anchors)
    dw, dh = deltas[:, 2], deltas[:, 3]
    if clamp_first:  # the mistake: clamp the raw delta, then divide by the weight
        dw, dh = dw.clamp(max=CLIP) / ww, dh.clamp(max=CLIP) / wh
    else:
        dw, dh = dw / ww, dh / wh
        if clamp:
            dw, dh = dw.clamp(max=CLIP), dh.clamp(max=CLIP)
    cx, cy = ax + deltas[:, 0] / wx * aw, ay + deltas[:, 1] / wy * ah
    w, h = aw * torch.exp(dw), ah * torch.exp(dh)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def test_check_decode_passes_the_straightforward_version():
    assert check_decode(decode)


@pytest.mark.parametrize(
    "wrong_encode, message",
    [(encode_gt_relative, "wrong values"), (encode_without_weights, r"weights \(10.0, 10.0, 5.0, 5.0\)"),
     (lambda g, a, w: ops.BoxCoder(w).encode(a, g), "wrong values")],
    ids=["shift over gt size", "ignores weights", "arguments swapped"],
)
def test_check_encode_rejects(wrong_encode, message):
    with pytest.raises(AssertionError, match=message):
        check_encode(wrong_encode)


@pytest.mark.parametrize(
    "wrong_decode, message",
    [
        (lambda d, a, w: decode(d, a, w, clamp=False), '"huge dw, dh"'),
        (lambda d, a, w: decode(d, a, w, clamp_first=True), '"huge dw, dh, box-head weights"'),
        (lambda d, a, w: decode(d, a, (1.0, 1.0, 1.0, 1.0)), "box-head weights"),
        (lambda d, a, w: decode(d, a, w).clamp(min=0), '"very negative dw, dh"|wrong values'),
        (lambda d, a, w: torch.cat([a[:, :2] + d[:, :2], a[:, 2:] + d[:, 2:]], 1), "wrong values"),
    ],
    ids=["no clamp", "clamp before dividing by weights", "ignores weights", "clips to image", "adds deltas"],
)
def test_check_decode_rejects(wrong_decode, message):
    with pytest.raises(AssertionError, match=message):
        check_decode(wrong_decode)


# ------------------------------------------------------------------------------------ wrong NMS

def loop_nms(boxes, scores, iou_threshold, sort=True, at_least=False, all_suppress=False, dtype=torch.int64):
    """A greedy NMS with switches for the usual mistakes."""
    order = torch.sort(scores, descending=True, stable=True).indices if sort else torch.arange(len(scores))
    iou = ops.box_iou(boxes, boxes)
    overlaps = iou >= iou_threshold if at_least else iou > iou_threshold
    removed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if not removed[i]:
            keep.append(i)
        if not removed[i] or all_suppress:  # all_suppress: suppressed boxes wrongly suppress others too
            removed |= overlaps[i]
    return torch.tensor(keep, dtype=dtype)


def test_check_nms_passes_the_loop_version():
    assert check_nms(loop_nms)


@pytest.mark.parametrize(
    "wrong_nms, message",
    [
        (lambda b, s, t: loop_nms(b, s, t, at_least=True), '"IoU exactly at the threshold"'),
        (lambda b, s, t: loop_nms(b, s, t, sort=False), "seed 0"),
        (lambda b, s, t: loop_nms(b, s, t).sort().values, "wrong order: sort them by decreasing score"),
        (lambda b, s, t: loop_nms(b, s, t, all_suppress=True), "suppressed boxes that should be kept"),
        (lambda b, s, t: loop_nms(b, s, t, dtype=torch.int32), "dtype torch.int64, got torch.int32"),
        (lambda b, s, t: torch.tensor(loop_nms(b, s, t).tolist()), r"torch.tensor\(\[\]\) is float32"),
        (lambda b, s, t: torch.zeros(len(b), dtype=torch.bool).index_fill(0, loop_nms(b, s, t), True), "boolean mask"),
        (lambda b, s, t: loop_nms(b, s, t).tolist(), "should be a torch.Tensor, got list"),
        (lambda b, s, t: loop_nms(b, s.argsort().argsort().float(), t), '"identical boxes, equal scores"'),
    ],
    ids=[">= threshold", "no sort", "index order", "suppressed boxes suppress", "int32", "empty float",
         "mask", "list", "ties broken wrongly"],
)
def test_check_nms_rejects(wrong_nms, message):
    with pytest.raises(AssertionError, match=message):
        check_nms(wrong_nms)


def test_check_nms_rejects_changing_the_input():
    def sorts_in_place(boxes, scores, iou_threshold):
        keep = ops.nms(boxes, scores, iou_threshold)
        scores.zero_()
        return keep

    with pytest.raises(AssertionError, match="changed its input `scores` in place"):
        check_nms(sorts_in_place)


# ---------------------------------------------------------------------------- wrong batched NMS

def offset_nms(boxes, scores, idxs, iou_threshold, offset=None):
    if len(boxes) == 0:  # boxes.max() of nothing is an error
        return torch.empty(0, dtype=torch.int64)
    offset = boxes.max() + 1 if offset is None else offset
    return ops.nms(boxes + idxs[:, None].to(boxes) * offset, scores, iou_threshold)


def per_class_nms(boxes, scores, idxs, iou_threshold, sort=True):
    keep = [members[ops.nms(boxes[members], scores[members], iou_threshold)]
            for members in (torch.where(idxs == c)[0] for c in torch.unique(idxs))]
    keep = torch.cat(keep) if keep else torch.empty(0, dtype=torch.int64)
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices] if sort else keep


def test_check_batched_nms_passes_both_versions():
    assert check_batched_nms(offset_nms)
    assert check_batched_nms(per_class_nms)


@pytest.mark.parametrize(
    "wrong_batched_nms, message",
    [
        (lambda b, s, i, t: ops.nms(b, s, t), "suppressed boxes that should be kept"),
        (lambda b, s, i, t: offset_nms(b, s, i, t, offset=1000.0), '"boxes larger than a fixed offset"'),
        (lambda b, s, i, t: per_class_nms(b, s, i, t, sort=False), "wrong order"),
        (lambda b, s, i, t: offset_nms(b, s, i, t).to(torch.int32), "dtype torch.int64"),
    ],
    ids=["ignores categories", "fixed offset", "per class, unsorted", "int32"],
)
def test_check_batched_nms_rejects(wrong_batched_nms, message):
    with pytest.raises(AssertionError, match=message):
        check_batched_nms(wrong_batched_nms)


def test_check_batched_nms_rejects_offsetting_in_place():
    def in_place(boxes, scores, idxs, iou_threshold):
        boxes += idxs[:, None].to(boxes) * (boxes.max() + 1)
        return ops.nms(boxes, scores, iou_threshold)

    with pytest.raises(AssertionError, match="changed its input `boxes` in place"):
        check_batched_nms(in_place)
