"""Chapter 10's checkers pass correct code (ours and pycocotools') and reject plausible mistakes."""
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from mrcnn_from_scratch import ops
from mrcnn_from_scratch.exercises.ch10 import (check_interpolated_ap, check_mask_iou, check_match_detections,
                                               check_precision_recall_at)

# ------------------------------------------------------------------ correct implementations


def mask_iou(masks_a, masks_b):
    a, b = masks_a.flatten(1).double(), masks_b.flatten(1).double()
    intersection = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1), 0.0)


def pycocotools_mask_iou(masks_a, masks_b):
    if len(masks_a) == 0 or len(masks_b) == 0:
        return torch.zeros(len(masks_a), len(masks_b))
    encode = lambda m: mask_utils.encode(np.asfortranarray(m.permute(1, 2, 0).numpy().astype(np.uint8)))
    return torch.tensor(mask_utils.iou(encode(masks_a), encode(masks_b), [0] * len(masks_b)))


def match_detections(iou, scores, threshold, vocabulary="coco"):
    """COCO's matching; the other `vocabulary` values are the plausible mistakes tested below."""
    order = torch.argsort(scores, descending=True, stable=True)
    if vocabulary == "input order":
        order = torch.arange(len(scores))
    matched = torch.full((len(scores),), -1, dtype=torch.int64)
    free = torch.ones(iou.shape[1], dtype=torch.bool)
    for d in order.tolist():
        if iou.shape[1] == 0:
            continue
        if vocabulary == "voc":  # the best object overall; a false positive if it is taken
            g = int(iou[d].argmax())
            if iou[d, g] >= threshold and free[g]:
                matched[d], free[g] = g, False
            continue
        candidates = iou[d] if vocabulary == "reuse objects" else torch.where(free, iou[d], -1.0)
        if vocabulary == "first above":
            above = torch.nonzero(candidates >= threshold)
            g = int(above[0]) if len(above) else int(candidates.argmax())
        else:
            g = int(candidates.argmax())
        passes = candidates[g] > threshold if vocabulary == "strict" else candidates[g] >= threshold
        if passes:
            matched[d], free[g] = g, False
    return matched


def greedy_by_iou(iou, scores, threshold):
    """Match the pairs of highest IoU first, whatever the scores: not what COCO does."""
    matched = torch.full((len(scores),), -1, dtype=torch.int64)
    iou = iou.clone()
    while iou.numel() and iou.max() >= threshold:
        d, g = divmod(int(iou.argmax()), iou.shape[1])
        matched[d] = g
        iou[d, :], iou[:, g] = -1, -1
    return matched


def precision_recall_at(scores, is_tp, num_gt, threshold):
    kept = scores >= threshold
    true_positives = is_tp[kept].sum().item()
    return (true_positives / kept.sum().item() if kept.any() else 0.0), true_positives / num_gt


def interpolated_ap(recall, precision, levels=None, side="left", envelope=True, divide_by_reached=False):
    """COCO's AP; the keyword arguments switch on the plausible mistakes tested below."""
    levels = torch.linspace(0, 1, 101, dtype=torch.float64) if levels is None else levels
    if envelope:
        precision = precision.flip(0).cummax(0).values.flip(0)
    first = torch.searchsorted(recall, levels.to(recall.dtype), side=side)
    reached = first < len(recall)
    values = torch.where(reached, precision[first.clamp(max=max(len(recall) - 1, 0))] if len(recall) else 0.0, 0.0)
    if divide_by_reached:
        return (values.sum() / max(int(reached.sum()), 1)).item()
    return values.mean().item()


def ap_as_max_beyond(recall, precision):
    """The textbook definition: at each level, the best precision at any recall >= the level."""
    return float(np.mean([precision[recall >= r].max().item() if (recall >= r).any() else 0.0
                          for r in np.linspace(0, 1, 101)]))


# ------------------------------------------------------------------ correct implementations pass

def test_checkers_pass_correct_implementations(capsys):
    assert check_mask_iou(mask_iou)
    assert check_mask_iou(pycocotools_mask_iou)
    assert check_match_detections(match_detections)
    assert check_precision_recall_at(precision_recall_at)
    assert check_precision_recall_at(lambda s, t, n, th: tuple(torch.tensor(precision_recall_at(s, t, n, th))))
    assert check_interpolated_ap(interpolated_ap)
    assert check_interpolated_ap(ap_as_max_beyond)
    # A grid of recall levels in float32 is fine too: the cases' recalls are never between the two grids.
    assert check_interpolated_ap(lambda r, p: interpolated_ap(r, p, levels=torch.linspace(0, 1, 101)))
    assert capsys.readouterr().out.count("✓") == 8


def test_unfilled_stub_raises_not_implemented():
    def stub(recall, precision):
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        check_interpolated_ap(stub)


# ---------------------------------------------------------------------------------- wrong mask IoU

def tight_boxes(masks):
    boxes = []
    for m in masks:
        rows, cols = torch.where(m.any(dim=1))[0], torch.where(m.any(dim=0))[0]
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1] if len(rows) else [0, 0, 0, 0])
    return torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)


def intersection_and_areas(a, b):
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return a @ b.T, a.sum(1)[:, None], b.sum(1)[None, :]


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda a, b: (lambda i, sa, sb: i / sa.clamp(min=1))(*intersection_and_areas(a, b)), "wrong values"),
        (lambda a, b: (lambda i, sa, sb: i / (sa + sb).clamp(min=1))(*intersection_and_areas(a, b)), "wrong values"),
        (lambda a, b: ops.box_iou(tight_boxes(a), tight_boxes(b)), "wrong values"),
        (lambda a, b: (lambda i, sa, sb: i / (sa + sb - i))(*intersection_and_areas(a, b)), '"an empty mask"'),
        (lambda a, b: torch.diagonal(mask_iou(a, b)), "should have shape"),
        (lambda a, b: (lambda i, sa, sb: i.long() // (sa + sb - i).clamp(min=1).long())(*intersection_and_areas(a, b)),
         "should be floats"),
    ],
    ids=["over the first mask's area", "union without the intersection", "box IoU", "nan for empty masks",
         "pairs on the diagonal only", "integer division"],
)
def test_check_mask_iou_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_mask_iou(wrong)


# ---------------------------------------------------------------------------------- wrong matching

@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda i, s, t: match_detections(i, s, t, "input order"), '"detections not sorted by score"'),
        (lambda i, s, t: match_detections(i, s, t, "reuse objects"), '"a duplicate detection"'),
        (lambda i, s, t: match_detections(i, s, t, "voc"), '"the best object is taken, another is free"'),
        (lambda i, s, t: match_detections(i, s, t, "first above"), '"one detection over two free objects"'),
        (lambda i, s, t: match_detections(i, s, t, "strict"), '"an IoU exactly at the threshold"'),
        (greedy_by_iou, '"greedy by score, not the best assignment"'),
        (lambda i, s, t: match_detections(i, s, t)[torch.argsort(s, descending=True, stable=True)],
         '"detections not sorted by score"'),
        (lambda i, s, t: match_detections(i, s, t) >= 0, "integer indices"),
        (lambda i, s, t: match_detections(i, s, 0.5), '"a strict threshold'),
    ],
    ids=["input order", "an object matched twice", "PASCAL VOC's rule", "first object above the threshold",
         "IoU > threshold", "highest IoU pairs first", "results in score order", "bool", "threshold fixed at 0.5"],
)
def test_check_match_detections_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_match_detections(wrong)


# ---------------------------------------------------------------------- wrong precision and recall

def count_from_the_top(scores, is_tp, num_gt, threshold):
    """Assumes the detections come sorted by score."""
    kept = int((scores >= threshold).sum())
    true_positives = int(is_tp[:kept].sum())
    return (true_positives / kept if kept else 0.0), true_positives / num_gt


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda s, t, n, th: precision_recall_at(s, t, n, th + 1e-9), '"a threshold equal to a score"'),
        (lambda s, t, n, th: (precision_recall_at(s, t, n, th)[0],
                              t[s >= th].sum().item() / max((s >= th).sum().item(), 1)), "the recall should be"),
        (lambda s, t, n, th: precision_recall_at(s, t, n, th)[::-1], "the precision should be"),
        (lambda s, t, n, th: (t[s >= th].sum().item() / (s >= th).sum().item(), t[s >= th].sum().item() / n),
         '"a threshold above every score": your function raised ZeroDivisionError'),
        (lambda s, t, n, th: (t[s >= th].sum().item() / len(s), t[s >= th].sum().item() / n),
         "the precision should be"),
        (count_from_the_top, '"detections not sorted by score"'),
        (lambda s, t, n, th: torch.tensor(precision_recall_at(s, t, n, th)), "return two numbers"),
    ],
    ids=["score > threshold", "recall over the detections", "(recall, precision)", "nothing kept: division by zero",
         "precision over all detections", "assumes sorted scores", "one tensor"],
)
def test_check_precision_recall_at_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_precision_recall_at(wrong)


# -------------------------------------------------------------------------------------- wrong AP

def voc_11_points(recall, precision):
    return float(np.mean([precision[recall >= r].max().item() if (recall >= r).any() else 0.0
                          for r in np.linspace(0, 1, 11)]))


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda r, p: torch.trapezoid(p, r).item() if len(r) else 0.0, "the AP should be"),
        (lambda r, p: p.mean().item() if len(p) else 0.0, "the AP should be"),
        (voc_11_points, "the AP should be"),
        (lambda r, p: interpolated_ap(r, p, envelope=False), "the AP should be"),
        (lambda r, p: interpolated_ap(r, p, side="right"), "the AP should be"),
        (lambda r, p: interpolated_ap(r, p, divide_by_reached=True), '"recall stops at 3/7"'),
        (lambda r, p: interpolated_ap(r, p, levels=torch.linspace(0, 1, 100, dtype=torch.float64)), "the AP should be"),
        (lambda r, p: float(np.mean([p[r >= x].max().item() for x in np.linspace(0, 1, 101) if (r >= x).any()]
                                    or [0.0])), '"recall stops at 3/7"'),
        (lambda r, p: torch.tensor([interpolated_ap(r, p)] * 2), "return the AP as a number"),
    ],
    ids=["trapezoid area", "mean precision", "11 points (PASCAL VOC 2007)", "no envelope", "searchsorted right",
         "mean over the reached levels", "100 levels", "levels beyond the last recall skipped", "a tensor of two"],
)
def test_check_interpolated_ap_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_interpolated_ap(wrong)
