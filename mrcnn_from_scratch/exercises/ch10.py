"""Checkers for chapter 10's exercises: the IoU of masks, COCO's greedy matching of detections to ground
truth, precision and recall at a score threshold, and COCO's 101-point interpolated AP.

Each checker runs your function on fixed cases, compares it with a reference that does what pycocotools'
COCOeval does, and raises AssertionError on the first case it gets wrong, showing that input. The
functions it expects:

    mask_iou(masks_a: Tensor[N, H, W] bool, masks_b: Tensor[M, H, W] bool) -> Tensor[N, M] float
        pixels in both masks over pixels in either, for every pair; 0 where both masks are empty.
    match_detections(iou: Tensor[D, G], scores: Tensor[D], threshold: float) -> Tensor[D] int64
        for the detections of one class in one image, in the order given: the index of the ground-truth
        object each one is matched to, or -1 (a false positive). Detections are taken from the highest
        score down; each takes the free object with the highest IoU, if that IoU is >= threshold.
    precision_recall_at(scores: Tensor[D], is_tp: Tensor[D] bool, num_gt: int, threshold: float)
        -> (precision: float, recall: float)
        of the detections whose score is >= threshold; precision 0.0 when none is kept.
    interpolated_ap(recall: Tensor[D] float64, precision: Tensor[D] float64) -> float
        COCO's AP of one precision-recall curve (detections sorted by score, best first): the precision
        made non-increasing from the right, read at the 101 recall levels 0, 0.01, ..., 1 (the first
        point whose recall reaches the level; 0 where none does), averaged over all 101 levels.
"""
from typing import Any, Callable

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor

from .. import ops
from ._checking import Case, run_cases

# COCOeval's recall levels (Params.recThrs), built exactly as pycocotools builds them.
RECALL_LEVELS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1)


class _Number(float):
    """A float shown with 6 decimals in a failure message."""

    def __repr__(self) -> str:
        return f"{float(self):.6f}"


def _as_number(value: Any) -> float | None:
    """A Python number or a one-element tensor as a float; None for anything else."""
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, (float, int, np.floating, np.integer)) and not isinstance(value, bool):
        return float(value)
    return None


# ------------------------------------------------------------------------------------- mask IoU

def reference_mask_iou(masks_a: Tensor, masks_b: Tensor) -> Tensor:
    """Tensor[N, H, W], Tensor[M, H, W] -> Tensor[N, M] float64, computed by pycocotools on RLEs."""
    n, m = len(masks_a), len(masks_b)
    if n == 0 or m == 0:
        return torch.zeros(n, m, dtype=torch.float64)

    def rles(masks: Tensor) -> list[dict]:
        # pycocotools encodes a Fortran-ordered [H, W, N] stack of uint8.
        return mask_utils.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8)))

    return torch.from_numpy(np.asarray(mask_utils.iou(rles(masks_a), rles(masks_b), [0] * m), dtype=np.float64))


def disc(height: int, width: int, cx: float, cy: float, radius: float) -> Tensor:
    """Tensor[height, width] bool: the pixels whose centres lie within `radius` of (cx, cy)."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2


def triangle(height: int, width: int, cx: float, cy: float, radius: float, angle: float = 0.3) -> Tensor:
    """Tensor[height, width] bool: an equilateral triangle with circumradius `radius` centred on (cx, cy)."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    angles = angle + 2 * torch.pi * torch.arange(3) / 3
    vx, vy = cx + radius * torch.cos(angles), cy + radius * torch.sin(angles)
    inside = torch.ones(height, width, dtype=torch.bool)
    for k in range(3):
        ex, ey = vx[(k + 1) % 3] - vx[k], vy[(k + 1) % 3] - vy[k]
        inside &= ex * (ys - vy[k]) - ey * (xs - vx[k]) >= 0
    return inside


def _random_masks(seed: int, count: int, height: int, width: int) -> Tensor:
    """Tensor[count, height, width] bool: discs and triangles of random size and place."""
    g = torch.Generator().manual_seed(seed)
    masks = []
    for i in range(count):
        cx, cy = (torch.rand(2, generator=g) * torch.tensor([width, height])).tolist()
        radius = float(4 + torch.rand(1, generator=g) * min(height, width) / 3)
        masks.append(disc(height, width, cx, cy, radius) if i % 2 else triangle(height, width, cx, cy, radius))
    return torch.stack(masks) if masks else torch.zeros(0, height, width, dtype=torch.bool)


def _filled_box(mask: Tensor) -> Tensor:
    """Tensor[H, W] bool: every pixel of the smallest box around the True pixels of `mask`."""
    rows, cols = torch.where(mask.any(dim=1))[0], torch.where(mask.any(dim=0))[0]
    box = torch.zeros_like(mask)
    box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
    return box


def check_mask_iou(fn: Callable) -> bool:
    """Check fn(masks_a Tensor[N, H, W] bool, masks_b Tensor[M, H, W] bool) -> Tensor[N, M], the IoU of every pair."""
    how = ("flatten each mask, count the pixels in both (intersection) and in either (union = area_a + area_b - "
           "intersection) for every pair, and divide; a matrix product of the flattened masks gives all intersections")
    a, b = _random_masks(0, 4, 48, 64), _random_masks(1, 5, 48, 64)
    shape = disc(40, 40, 20.0, 20.0, 12.0)
    shifted = disc(40, 40, 24.0, 21.0, 12.0)
    empty = torch.zeros(40, 40, dtype=torch.bool)
    tri = triangle(40, 40, 20.0, 21.0, 15.0)
    cases = [
        Case("4 masks against 5", {"masks_a": a, "masks_b": b}, how),
        Case("a mask against itself and a shifted copy",
             {"masks_a": shape[None], "masks_b": torch.stack([shape, shifted])}, "a mask has IoU 1 with itself"),
        Case("a small mask inside a large one",
             {"masks_a": disc(40, 40, 20.0, 20.0, 6.0)[None], "masks_b": shape[None]},
             "the union of a mask and one that contains it is the large mask: IoU = small area / large area"),
        Case("masks that do not touch",
             {"masks_a": disc(40, 40, 8.0, 8.0, 5.0)[None], "masks_b": disc(40, 40, 30.0, 30.0, 5.0)[None]}),
        Case("a triangle and its bounding box", {"masks_a": tri[None], "masks_b": _filled_box(tri)[None]},
             "compare the masks pixel by pixel, not their bounding boxes"),
        Case("an empty mask", {"masks_a": torch.stack([empty, shape]), "masks_b": torch.stack([empty, shifted])},
             "with no pixel in either mask the union is 0: return 0 there (pycocotools does), not nan"),
        Case("no masks on one side", {"masks_a": a[:0], "masks_b": b}, "the result is Tensor[0, M]"),
    ]

    def compare(received, expected, case):
        if not isinstance(received, Tensor):
            return f"the IoUs should be a torch.Tensor, got {type(received).__name__}"
        if received.shape != expected.shape:
            return f"the IoUs should have shape {list(expected.shape)} (one per pair), got {list(received.shape)}"
        if not received.is_floating_point():
            return f"the IoUs should be floats, got dtype {received.dtype} (integer division rounds them to 0)"
        close = torch.isclose(received.double(), expected, rtol=0, atol=1e-6)
        if close.all():
            return None
        i, j = (int(v) for v in torch.nonzero(~close)[0])
        return (f"the IoUs have wrong values: {int((~close).sum())} of {close.numel()} differ, "
                f"the first at [{i}, {j}]: expected {expected[i, j].item():.6f}, got {received[i, j].item():.6f}")

    return run_cases("check_mask_iou", fn, reference_mask_iou, cases, compare)


# ------------------------------------------------------------------------------------- matching

def reference_match_detections(iou: Tensor, scores: Tensor, threshold: float) -> Tensor:
    """COCOeval.evaluateImg's matching for one class of one image, at one IoU threshold.

    Detections go from the highest score down (ties: in the given order, as COCOeval's stable sort); each
    takes, among the objects not matched yet, the one of highest IoU if that IoU is >= threshold (on equal
    IoUs the later object, as COCOeval's loop does). Returns the matched object per detection, or -1.
    """
    matched = torch.full((len(scores),), -1, dtype=torch.int64)
    taken = [False] * iou.shape[1]
    for d in torch.sort(scores, descending=True, stable=True).indices.tolist():
        best, best_iou = -1, threshold
        for g in range(iou.shape[1]):
            if taken[g] or iou[d, g] < best_iou:
                continue
            best, best_iou = g, float(iou[d, g])
        if best >= 0:
            taken[best] = True
            matched[d] = best
    return matched


def _match_case(name: str, iou: list[list[float]], scores: list[float], threshold: float = 0.5, hint: str = "",
                objects: int | None = None) -> Case:
    iou_tensor = torch.tensor(iou, dtype=torch.float64).reshape(len(iou), -1 if iou else objects or 0)
    return Case(name, {"iou": iou_tensor, "scores": torch.tensor(scores, dtype=torch.float64), "threshold": threshold},
                hint)


def _boxes_case(seed: int) -> Case:
    """12 detections around 5 objects: jittered copies of the objects' boxes and a few stray boxes."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(5, 2, generator=g) * 100
    size = 15 + 25 * torch.rand(5, 2, generator=g)
    objects = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    near = objects[torch.arange(9) % 5] + 3 * torch.randn(9, 4, generator=g)
    corner = torch.rand(3, 2, generator=g) * 90
    stray = torch.cat([corner, corner + 5 + 15 * torch.rand(3, 2, generator=g)], dim=1)
    detections = torch.cat([near, stray])
    iou = ops.box_iou(detections.double(), objects.double())
    scores = torch.rand(12, generator=g, dtype=torch.float64)
    return Case("12 detections of 5 objects, from boxes", {"iou": iou, "scores": scores, "threshold": 0.5},
                "sort by score, then give each detection the free object of highest IoU >= threshold")


def check_match_detections(fn: Callable) -> bool:
    """Check fn(iou Tensor[D, G], scores Tensor[D], threshold) -> Tensor[D] int64, the matched object or -1."""
    greedy = ("go through the detections from the highest score down; each takes the object of highest IoU among those "
              "not matched yet, if that IoU is >= threshold; return the results in the detections' given order")
    cases = [
        _match_case("three detections of three objects, best first",
                    [[0.8, 0.0, 0.1], [0.0, 0.7, 0.0], [0.1, 0.0, 0.6]], [0.9, 0.8, 0.7], hint=greedy),
        _match_case("a duplicate detection", [[0.85, 0.0], [0.75, 0.1], [0.0, 0.9]], [0.9, 0.8, 0.6],
                    hint="an object is matched once: a second detection of it is a false positive (-1)"),
        _match_case("detections not sorted by score", [[0.75, 0.1], [0.0, 0.9], [0.85, 0.0]], [0.8, 0.6, 0.9],
                    hint="the highest score chooses first, whatever the order of the rows; return one entry per row, "
                         "in the rows' order"),
        _match_case("the best object is taken, another is free", [[0.9, 0.55], [0.8, 0.6]], [0.9, 0.8],
                    hint="COCO takes the best IoU among the objects not matched yet (PASCAL VOC's rule, which only "
                         "looks at the best object and calls the detection a false positive if it is taken, differs)"),
        _match_case("one detection over two free objects", [[0.55, 0.8, 0.0]], [0.7],
                    hint="take the object of highest IoU, not the first one above the threshold"),
        _match_case("greedy by score, not the best assignment", [[0.7, 0.6], [0.9, 0.0]], [0.9, 0.8],
                    hint="the higher score chooses first and keeps its best object, even when a lower-scoring "
                         "detection overlaps it more: COCO does not search for the assignment with the most matches"),
        _match_case("an IoU exactly at the threshold", [[0.5, 0.2]], [0.6], hint="IoU >= threshold is a match"),
        _match_case("a strict threshold (0.75)", [[0.8, 0.0], [0.0, 0.7], [0.74, 0.76]], [0.9, 0.8, 0.7], 0.75,
                    hint="use the threshold you are given"),
        _match_case("no objects in the image", [[], [], []], [0.9, 0.5, 0.3], objects=0,
                    hint="with no objects every detection is a false positive"),
        _match_case("no detections", [], [], objects=2, hint="the result is an empty Tensor[0] of int64"),
        _boxes_case(0),
    ]

    def compare(received, expected, case):
        if not isinstance(received, Tensor):
            return f"the matches should be a torch.Tensor, got {type(received).__name__}"
        if received.shape != expected.shape:
            return (f"the matches should have shape {list(expected.shape)} (one per detection), "
                    f"got {list(received.shape)}")
        if received.is_floating_point() or received.dtype == torch.bool:
            return f"the matches should be integer indices (int64), got dtype {received.dtype}"
        if not torch.equal(received.to(torch.int64), expected):
            wrong = int(torch.nonzero(received.to(torch.int64) != expected)[0])
            return (f"detection {wrong} (score {case.args['scores'][wrong].item():.2f}) should be matched to "
                    f"{expected[wrong].item()}, got {received[wrong].item()} (-1: no object)")
        return None

    return run_cases("check_match_detections", fn, reference_match_detections, cases, compare)


# -------------------------------------------------------------------- precision and recall at a threshold

def reference_precision_recall_at(scores: Tensor, is_tp: Tensor, num_gt: int, threshold: float) -> tuple[float, float]:
    kept = scores >= threshold
    true_positives, count = int(is_tp[kept].sum()), int(kept.sum())
    return _Number(true_positives / count if count else 0.0), _Number(true_positives / num_gt)


def _pr_case(name: str, flags: str, num_gt: int, threshold: float, hint: str = "",
             order: list[int] | None = None) -> Case:
    """Detections with scores 0.95, 0.90, ... that are true positives where flags has a T: best first, or
    listed in `order`."""
    scores = torch.tensor([round(0.95 - 0.05 * i, 2) for i in range(len(flags))], dtype=torch.float64)
    is_tp = torch.tensor([f == "T" for f in flags], dtype=torch.bool)
    if order is not None:
        scores, is_tp = scores[order], is_tp[order]
    return Case(name, {"scores": scores, "is_tp": is_tp, "num_gt": num_gt, "threshold": threshold}, hint)


def check_precision_recall_at(fn: Callable) -> bool:
    """Check fn(scores Tensor[D], is_tp Tensor[D] bool, num_gt, threshold) -> (precision, recall) as floats."""
    how = ("keep the detections with score >= threshold; precision = true positives kept / detections kept, "
           "recall = true positives kept / num_gt")
    cases = [
        _pr_case("10 detections, 8 objects, threshold 0.62", "TTFTTFTFFT", 8, 0.62, how),
        _pr_case("a threshold below every score", "TTFTTFTFFT", 8, 0.01,
                 "recall divides by the number of objects (num_gt), not by the number of detections"),
        _pr_case("a threshold equal to a score", "TFTTF", 5, 0.8,
                 "a detection whose score equals the threshold is kept (>=)"),
        _pr_case("detections not sorted by score", "TFTT", 6, 0.88,
                 "keep the detections by their score, wherever they are in the list", order=[2, 0, 3, 1]),
        _pr_case("a threshold above every score", "TTF", 4, 0.99,
                 "with nothing kept, precision is 0.0 (as COCOeval's tp / (tp + fp + eps) gives) and recall 0.0"),
        _pr_case("only false positives", "FFF", 2, 0.5),
    ]

    def compare(received, expected, case):
        if not isinstance(received, (tuple, list)) or len(received) != 2:
            return f"return two numbers, (precision, recall), got {type(received).__name__}"
        for what, got, want in zip(("precision", "recall"), received, expected):
            number = _as_number(got)
            if number is None:
                return f"the {what} should be a number (float), got {type(got).__name__}"
            if not abs(number - want) <= 1e-6:
                return f"the {what} should be {want:.6f}, got {number:.6f}"
        return None

    return run_cases("check_precision_recall_at", fn, reference_precision_recall_at, cases, compare)


# --------------------------------------------------------------------------- 101-point interpolated AP

def reference_interpolated_ap(recall: Tensor, precision: Tensor) -> float:
    """COCOeval.accumulate's AP of one curve: envelope, read at the 101 recall levels, averaged."""
    envelope = precision.double().tolist()
    for i in range(len(envelope) - 1, 0, -1):  # non-increasing from the right, as COCOeval does it
        envelope[i - 1] = max(envelope[i - 1], envelope[i])
    first = np.searchsorted(recall.double().numpy(), RECALL_LEVELS, side="left")
    return _Number(np.mean([envelope[i] if i < len(envelope) else 0.0 for i in first]))


def _ap_case(name: str, flags: str, num_gt: int, hint: str = "") -> Case:
    """The curve of detections sorted by score that are true positives where flags has a T."""
    is_tp = torch.tensor([f == "T" for f in flags], dtype=torch.float64)
    true_positives = is_tp.cumsum(0)
    recall = true_positives / num_gt
    precision = true_positives / torch.arange(1, len(flags) + 1, dtype=torch.float64)
    return Case(name, {"recall": recall, "precision": precision}, hint)


def check_interpolated_ap(fn: Callable) -> bool:
    """Check fn(recall Tensor[D] float64, precision Tensor[D] float64) -> COCO's 101-point AP, a float."""
    how = ("make the precision non-increasing from the right (each point takes the best precision at its recall or "
           "beyond); at each of the 101 recall levels torch.linspace(0, 1, 101, dtype=torch.float64) read it at the "
           "first point whose recall is >= the level (0 if no point reaches it); average over all 101 levels")
    g = torch.Generator().manual_seed(0)
    long_flags = "".join("T" if v < 0.55 else "F" for v in torch.rand(60, generator=g).tolist())
    cases = [
        _ap_case("9 detections of 7 objects, reaching recall 1", "TTFTTFTTT", 7, how),
        _ap_case("precision rising again at the end", "FTTTT", 4,
                 "interpolate: at each recall level take the best precision at that recall or beyond, not the "
                 "precision of the point itself"),
        _ap_case("recall stops at 3/7", "TFTFT", 7,
                 "recall levels that no point reaches count as precision 0, and the mean is still over all 101 levels"),
        _ap_case("recall levels that fall on a detection's recall", "TFTT", 4,
                 "at level r take the first point whose recall is >= r (np.searchsorted(..., side='left')); with "
                 "recall exactly 0.25 that is the point that reached 0.25 first"),
        _ap_case("a perfect ranking", "TTTT", 4, "a detector that finds every object before any mistake has AP 1"),
        _ap_case("one correct detection of 4 objects", "T", 4,
                 "levels 0, 0.01, ..., 0.25 (26 of them) get precision 1, the other 75 get 0"),
        _ap_case("the first detection is wrong", "FT", 1),
        _ap_case("60 detections of 23 objects", long_flags, 23),
        Case("no detections",
             {"recall": torch.zeros(0, dtype=torch.float64), "precision": torch.zeros(0, dtype=torch.float64)},
             "with no detections the AP is 0"),
    ]

    def compare(received, expected, case):
        number = _as_number(received)
        if number is None:
            return f"return the AP as a number (float), got {type(received).__name__}"
        if not abs(number - expected) <= 1e-9:
            return f"the AP should be {expected:.6f}, got {number:.6f}"
        return None

    return run_cases("check_interpolated_ap", fn, reference_interpolated_ap, cases, compare)
