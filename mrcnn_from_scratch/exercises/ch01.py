"""Checkers for chapter 01's exercises: box IoU, box coding, NMS and batched NMS.

Each checker runs your function on random boxes and on edge cases, compares it with the package's
finished version in `mrcnn_from_scratch.ops`, and raises AssertionError on the first case it gets
wrong, showing that input. The functions it expects:

    box_iou(boxes1: Tensor[N, 4], boxes2: Tensor[M, 4]) -> Tensor[N, M]
    encode(gt_boxes: Tensor[N, 4], anchors: Tensor[N, 4], weights) -> deltas Tensor[N, 4]
    decode(deltas: Tensor[N, 4], anchors: Tensor[N, 4], weights) -> boxes Tensor[N, 4]
    nms(boxes: Tensor[N, 4], scores: Tensor[N], iou_threshold) -> Tensor[K] int64
    batched_nms(boxes: Tensor[N, 4], scores: Tensor[N], idxs: Tensor[N], iou_threshold) -> Tensor[K] int64

Boxes are (x1, y1, x2, y2) float32 with width x2 - x1; weights is (wx, wy, ww, wh); decode clamps
dw and dh (after dividing by the weights) at log(1000 / 16).
"""
from typing import Callable

import torch
from torch import Tensor

from .. import ops
from ._checking import Case, run_cases, tensor_problem

RPN_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
BOX_HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def random_boxes(n: int, seed: int, image_size: int = 100, min_size: int = 1, max_size: int = 40) -> Tensor:
    """Tensor[n, 4] of boxes with whole-pixel corners inside an image_size² image, sides min_size..max_size-1."""
    g = torch.Generator().manual_seed(seed)
    top_left = torch.randint(0, image_size - max_size, (n, 2), generator=g)
    size = torch.randint(min_size, max_size, (n, 2), generator=g)
    return torch.cat([top_left, top_left + size], dim=1).float()


def clustered_boxes(n: int, seed: int, objects: int = 4, image_size: int = 100) -> Tensor:
    """Tensor[n, 4] of boxes jittered around a few objects, like a detector's raw output: many overlap."""
    g = torch.Generator().manual_seed(seed)
    # Margins of 3 pixels keep the jittered boxes inside the image, so no coordinate is negative.
    top_left = torch.randint(3, image_size - 43, (objects, 2), generator=g)
    object_boxes = torch.cat([top_left, top_left + torch.randint(12, 40, (objects, 2), generator=g)], dim=1)
    which = torch.randint(0, objects, (n,), generator=g)
    return (object_boxes[which] + torch.randint(-3, 4, (n, 4), generator=g)).float()


def distinct_scores(n: int, seed: int) -> Tensor:
    """Tensor[n] of different scores in [0.05, 0.95], in random order (no ties, so no ambiguity)."""
    g = torch.Generator().manual_seed(seed)
    return torch.linspace(0.05, 0.95, n)[torch.randperm(n, generator=g)]


def _near(boxes: Tensor, seed: int) -> Tensor:
    """Tensor[N, 4]: each corner moved by up to 3 pixels, like a gt box near its anchor (keep sides >= 8)."""
    g = torch.Generator().manual_seed(seed)
    return boxes + torch.randint(-3, 4, boxes.shape, generator=g)


def _boxes(*rows: list[float]) -> Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


# ---------------------------------------------------------------------------------------------- IoU

def _iou_case(name: str, boxes1: Tensor, boxes2: Tensor, hint: str = "") -> Case:
    return Case(name, {"boxes1": boxes1, "boxes2": boxes2}, hint)


def check_box_iou(fn: Callable) -> bool:
    """Check fn(boxes1 Tensor[N, 4], boxes2 Tensor[M, 4]) -> IoU Tensor[N, M] against ops.box_iou."""
    formula = "IoU = intersection / (area1 + area2 - intersection), sides x2 - x1 (no +1), overlaps clamped at 0"
    # Boxes jittered around the same few objects, so that most pairs overlap.
    cases = [_iou_case(f"random boxes, seed {s}", clustered_boxes(3 + s, s), clustered_boxes(6, s), formula)
             for s in range(3)]
    cases += [
        _iou_case("normalized coordinates", random_boxes(3, 3) / 100, random_boxes(5, 4) / 100),
        _iou_case("one box each", _boxes([0, 0, 10, 10]), _boxes([5, 5, 15, 15]),
                  "width is x2 - x1 with no +1: coordinates name the edges between pixels"),
        _iou_case("identical boxes", _boxes([2, 3, 7, 9]), _boxes([2, 3, 7, 9])),
        _iou_case("boxes that touch along an edge", _boxes([0, 0, 10, 10]), _boxes([10, 0, 20, 10]),
                  "boxes that only share an edge do not overlap: their intersection has width 0"),
        _iou_case("boxes far apart diagonally", _boxes([0, 0, 10, 10]), _boxes([20, 20, 30, 30]),
                  "clamp the intersection's width and height at 0: two negative sides multiply to a positive area"),
        _iou_case("one box inside another", _boxes([0, 0, 20, 20], [5, 5, 10, 10]), _boxes([4, 4, 12, 12])),
        _iou_case("a box of zero area", _boxes([5, 0, 5, 10]), _boxes([0, 0, 10, 10], [5, 5, 6, 6])),
        _iou_case("empty first set", _boxes(), random_boxes(3, 5), "the result is Tensor[0, M]"),
        _iou_case("empty second set", random_boxes(3, 6), _boxes(), "the result is Tensor[N, 0]"),
    ]

    def compare(received, expected, case):
        return tensor_problem(received, expected, "the IoU matrix", rtol=1e-5, atol=1e-6)

    return run_cases("check_box_iou", fn, ops.box_iou, cases, compare)


# ------------------------------------------------------------------------------------- box coding

def _encode_case(name: str, gt_boxes: Tensor, anchors: Tensor, weights=RPN_WEIGHTS, hint: str = "") -> Case:
    return Case(name, {"gt_boxes": gt_boxes, "anchors": anchors, "weights": weights}, hint)


def _decode_case(name: str, deltas: Tensor, anchors: Tensor, weights=RPN_WEIGHTS, hint: str = "") -> Case:
    return Case(name, {"deltas": deltas, "anchors": anchors, "weights": weights}, hint)


def check_encode(fn: Callable) -> bool:
    """Check fn(gt_boxes Tensor[N, 4], anchors Tensor[N, 4], weights) -> deltas Tensor[N, 4]."""
    formula = "dx = wx·(x_gt - x_a)/w_a with centres x and the anchor's width w_a; dw = ww·log(w_gt / w_a)"
    cases = [_encode_case(f"random boxes, seed {s}, weights {w}", _near(anchors, s), anchors, w, formula)
             for s, w in [(0, RPN_WEIGHTS), (1, RPN_WEIGHTS), (2, BOX_HEAD_WEIGHTS)]
             for anchors in [random_boxes(6, 20 + s, min_size=8)]]
    anchor = _boxes([10, 20, 50, 40])
    cases += [
        _encode_case("gt box equals the anchor", anchor, anchor, hint="the deltas of a perfect anchor are all 0"),
        _encode_case("one box, box-head weights", _boxes([12, 18, 60, 44]), anchor, BOX_HEAD_WEIGHTS,
                     "multiply (dx, dy, dw, dh) by the weights (wx, wy, ww, wh)"),
        _encode_case("normalized coordinates", random_boxes(4, 3) / 100, random_boxes(4, 4) / 100),
        _encode_case("empty input", _boxes(), _boxes(), hint="the result is Tensor[0, 4]"),
    ]

    def reference(gt_boxes, anchors, weights):
        return ops.BoxCoder(weights).encode(gt_boxes, anchors)

    def compare(received, expected, case):
        return tensor_problem(received, expected, "the deltas", rtol=1e-5, atol=1e-5)

    return run_cases("check_encode", fn, reference, cases, compare)


def check_decode(fn: Callable) -> bool:
    """Check fn(deltas Tensor[N, 4], anchors Tensor[N, 4], weights) -> boxes Tensor[N, 4], with the dw/dh clamp."""
    g = torch.Generator().manual_seed(0)
    clamp = "divide dw, dh by the weights first, then clamp them at log(1000/16) before exp"
    anchor = _boxes([10, 20, 50, 40])
    cases = [
        _decode_case("random deltas, seed 0", 0.5 * torch.randn(6, 4, generator=g), random_boxes(6, 30)),
        _decode_case("random deltas, seed 1", 0.5 * torch.randn(6, 4, generator=g), random_boxes(6, 31)),
        _decode_case("random deltas, box-head weights", 3 * torch.randn(6, 4, generator=g), random_boxes(6, 32),
                     BOX_HEAD_WEIGHTS, "divide (dx, dy, dw, dh) by the weights (wx, wy, ww, wh) before using them"),
        _decode_case("zero deltas", torch.zeros(2, 4), _boxes([10, 20, 50, 40], [0, 0, 8, 8]),
                     hint="zero deltas give back the anchor itself"),
        _decode_case("huge dw, dh", _boxes([0, 0, 10, 10]), anchor, hint=clamp),
        _decode_case("huge dw, dh, box-head weights", _boxes([0, 0, 30, 30]), anchor, BOX_HEAD_WEIGHTS, clamp),
        _decode_case("very negative dw, dh", _boxes([0, 0, -10, -10]), anchor,
                     hint="only the upper side is clamped: a box may shrink to almost nothing"),
        _decode_case("one box", _boxes([0.1, -0.2, 0.3, -0.4]), anchor,
                     hint="x1 = centre_x - w/2, x2 = centre_x + w/2 with w = exp(dw)·w_anchor"),
        _decode_case("empty input", _boxes(), _boxes(), hint="the result is Tensor[0, 4]"),
    ]

    def reference(deltas, anchors, weights):
        return ops.BoxCoder(weights).decode(deltas, anchors)

    def compare(received, expected, case):
        return tensor_problem(received, expected, "the decoded boxes", rtol=1e-5, atol=1e-4)

    return run_cases("check_decode", fn, reference, cases, compare)


def check_box_coder(encode_fn: Callable, decode_fn: Callable) -> bool:
    """Run check_encode(encode_fn) and check_decode(decode_fn)."""
    return check_encode(encode_fn) and check_decode(decode_fn)


# -------------------------------------------------------------------------------------------- NMS

def _indices_problem(received, expected: Tensor, scores: Tensor) -> str | None:
    """What is wrong with kept indices `received` (int64, best score first) next to `expected`."""
    if isinstance(received, Tensor) and received.dtype == torch.bool:
        return "got a boolean mask; return the kept boxes' indices (torch.where(mask)[0]), best score first"
    problem = tensor_problem(received, expected, "the kept indices")
    if problem is None:
        return None
    if not isinstance(received, Tensor) or received.dtype != expected.dtype or received.dim() != 1:
        if isinstance(received, Tensor) and received.dtype == torch.float32 and len(expected) == 0:
            problem += " (torch.tensor([]) is float32: give dtype=torch.int64)"
        return problem
    got, want = set(received.tolist()), set(expected.tolist())
    if got == want and len(received) == len(expected):
        return "the right boxes are kept but in the wrong order: sort them by decreasing score"
    if len(received) and (received.min() < 0 or received.max() >= len(scores)):
        return f"indices must be between 0 and {len(scores) - 1}"
    parts = []
    if got - want:
        parts.append(f"kept boxes that should be suppressed: {sorted(got - want)}")
    if want - got:
        parts.append(f"suppressed boxes that should be kept: {sorted(want - got)}")
    return "; ".join(parts) or problem


def _nms_case(name: str, boxes: Tensor, scores, iou_threshold: float = 0.5, hint: str = "") -> Case:
    scores = torch.as_tensor(scores, dtype=torch.float32)
    return Case(name, {"boxes": boxes, "scores": scores, "iou_threshold": iou_threshold}, hint)


def check_nms(fn: Callable) -> bool:
    """Check fn(boxes Tensor[N, 4], scores Tensor[N], iou_threshold) -> kept indices Tensor[K] int64."""
    greedy = "walk the boxes in decreasing order of score; a box is dropped only by a box that was kept"
    cases = [_nms_case(f"16 boxes around 4 objects, seed {s}, threshold {t}", clustered_boxes(16, s),
                       distinct_scores(16, s), t, greedy)
             for s, t in [(0, 0.5), (1, 0.3), (2, 0.7)]]
    same_box = _boxes(*[[5, 5, 25, 25]] * 3)
    cases += [
        _nms_case("200 boxes around 30 objects", clustered_boxes(200, 3, objects=30, image_size=300),
                  distinct_scores(200, 3), hint=greedy),
        _nms_case("empty input", _boxes(), [], hint="return an empty int64 tensor"),
        _nms_case("one box", _boxes([0, 0, 10, 10]), [0.3]),
        _nms_case("best box last in the input", _boxes([0, 0, 10, 10], [1, 0, 11, 10], [2, 0, 12, 10]), [0.1, 0.5, 0.9],
                  hint="sort by score first: the input is in no particular order"),
        _nms_case("identical boxes, different scores", same_box, [0.2, 0.9, 0.4]),
        _nms_case("identical boxes, equal scores", same_box, [0.6, 0.6, 0.6],
                  hint="equal scores keep their input order: the first of them wins (torch.sort(..., stable=True))"),
        _nms_case("IoU exactly at the threshold", _boxes([0, 0, 4, 4], [0, 0, 4, 2]), [0.9, 0.8],
                  hint="these boxes have IoU exactly 0.5; a box is suppressed only if IoU > threshold, not >="),
        _nms_case("touching boxes, threshold 0", _boxes([0, 0, 10, 10], [10, 0, 20, 10]), [0.9, 0.8], 0.0,
                  "touching boxes have IoU 0, which is not > 0"),
        _nms_case("a chain: A drops B, B would drop C", _boxes([0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]),
                  [0.9, 0.8, 0.7], hint="B is suppressed by A, so B suppresses nothing: only kept boxes suppress"),
        _nms_case("a box of zero area", _boxes([0, 0, 10, 10], [5, 5, 5, 8]), [0.9, 0.8],
                  hint="a zero-area box overlaps nothing, so nothing suppresses it"),
        _nms_case("negative scores (logits)", _boxes([0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40]),
                  [-2.0, -0.5, -3.0]),
    ]

    def compare(received, expected, case):
        return _indices_problem(received, expected, case.args["scores"])

    return run_cases("check_nms", fn, ops.nms, cases, compare)


def _batched_case(name: str, boxes: Tensor, scores, idxs, iou_threshold: float = 0.5, hint: str = "") -> Case:
    scores, idxs = torch.as_tensor(scores, dtype=torch.float32), torch.as_tensor(idxs, dtype=torch.int64)
    return Case(name, {"boxes": boxes, "scores": scores, "idxs": idxs, "iou_threshold": iou_threshold}, hint)


def check_batched_nms(fn: Callable) -> bool:
    """Check fn(boxes Tensor[N, 4], scores Tensor[N], idxs Tensor[N], iou_threshold) -> Tensor[K] int64."""
    per_class = "boxes of different categories (idxs) never suppress each other"
    order = "return the kept indices of all categories together, in decreasing order of score"
    stable = "equal scores keep their input order: torch.sort(..., stable=True)"
    g = torch.Generator().manual_seed(0)
    cases = [
        _batched_case("16 boxes in 3 categories", clustered_boxes(16, 0), distinct_scores(16, 0),
                      torch.randint(0, 3, (16,), generator=g), hint=order),
        _batched_case("16 boxes in 2 categories, threshold 0.3", clustered_boxes(16, 1), distinct_scores(16, 1),
                      torch.randint(0, 2, (16,), generator=g), 0.3, order),
        _batched_case("100 boxes in 5 categories", clustered_boxes(100, 2, objects=10, image_size=200),
                      distinct_scores(100, 2), torch.randint(0, 5, (100,), generator=g), hint=order),
        _batched_case("empty input", _boxes(), [], [], hint="return an empty int64 tensor"),
        _batched_case("one box", _boxes([0, 0, 10, 10]), [0.3], [4]),
        _batched_case("the same box in two categories", _boxes([0, 0, 10, 10], [0, 0, 10, 10]), [0.9, 0.8], [0, 1],
                      hint=per_class),
        _batched_case("the same box twice in one category", _boxes([0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 9, 9]),
                      [0.7, 0.8, 0.9], [2, 2, 5]),
        _batched_case("categories 0, 3 and 7", _boxes([0, 0, 10, 10], [1, 0, 11, 10], [2, 0, 12, 10], [3, 0, 13, 10]),
                      [0.5, 0.6, 0.7, 0.8], [7, 0, 3, 0], hint=per_class),
        _batched_case("boxes larger than a fixed offset",
                      _boxes([1200, 1200, 1400, 1400], [200, 200, 400, 400], [0, 0, 3000, 2000]), [0.9, 0.8, 0.7],
                      [0, 1, 2], hint="the offset between categories must exceed every coordinate: boxes.max() + 1"),
        # Ties only inside a category: a loop over the categories may list equal scores of different
        # categories in either order, and that is fine, so no case tests it.
        _batched_case("equal scores within a category", _boxes([0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]),
                      [0.6, 0.6, 0.5], [1, 1, 0], hint=stable),
    ]

    def compare(received, expected, case):
        return _indices_problem(received, expected, case.args["scores"])

    return run_cases("check_batched_nms", fn, ops.batched_nms, cases, compare)
