"""Checkers for chapter 04's exercises: the anchors of one cell, anchors over a feature map's grid, the
matcher with low-quality matches, and the RPN's loss.

Each checker runs your function on fixed cases, compares it with the package's finished version
(`mrcnn_from_scratch.anchors`, `.matching` and `.losses`), and raises AssertionError on the first case
it gets wrong, showing that input. The functions it expects:

    cell_anchors(sizes: tuple[int, ...], aspect_ratios: tuple[float, ...]) -> Tensor[len(ratios)·len(sizes), 4]
        the anchors of one cell centred on (0, 0), float32, corners rounded, ratio-major order.
    grid_anchors(base_anchors: Tensor[A, 4], grid_size: (H, W), stride: (stride_y, stride_x)) -> Tensor[H·W·A, 4]
        the base anchors shifted to every cell (x by column·stride_x, y by row·stride_y), in
        (row, column, anchor) order.
    match(iou: Tensor[G, B], high_threshold, low_threshold, allow_low_quality_matches) -> Tensor[B] int64
        the matched GT index of every box, or -1 (below low_threshold) or -2 (in between).
    rpn_loss(objectness, deltas, labels, regression_targets, positive, negative) -> (loss_objectness, loss_box)
        objectness Tensor[A] logits, deltas and regression_targets Tensor[A, 4], labels Tensor[A]
        (1, 0 or -1), positive and negative Tensor[A] bool: the sampled anchors. Two scalar tensors.

Exercises 5 and 6 are experiments ("predict, then measure", see `_experiments.py`): the learner writes a
prediction, builds one variant of `rpn_lab`'s small RPN, and the checker checks the variant, trains it
and holds the prediction against the measured recall.

    build(seed) -> (backbone, rpn)
        rpn_lab.build_rpn(seed=seed) with one setting changed.
"""
from typing import Any, Callable

import torch
from torch import Tensor

from .. import ops
from ..anchors import AnchorGenerator
from ..anchors import cell_anchors as package_cell_anchors
from ..losses import rpn_loss as package_rpn_loss
from ..matching import Matcher
from ._checking import Case, run_cases, tensor_problem
from ._experiments import rpn_experiment

TORCHVISION_RATIOS = (0.5, 1.0, 2.0)


# ----------------------------------------------------------------------------------- cell anchors

def check_cell_anchors(fn: Callable) -> bool:
    """Check fn(sizes, aspect_ratios) -> Tensor[len(ratios)·len(sizes), 4] against anchors.cell_anchors."""
    formula = ("for ratio r = h / w and size s: h = s·sqrt(r), w = s / sqrt(r) (so h·w = s²); the anchor is "
               "(-w/2, -h/2, w/2, h/2), each corner rounded with torch.round")
    order = ("ratio-major order: all sizes of the first ratio, then all sizes of the second ratio...; "
             "e.g. widths = (w_factor[:, None] * sizes[None, :]).reshape(-1)")
    cases = [
        Case("torchvision's P2: size 32, ratios 0.5, 1, 2", {"sizes": (32,), "aspect_ratios": TORCHVISION_RATIOS}, formula),
        Case("torchvision's P6: size 512", {"sizes": (512,), "aspect_ratios": TORCHVISION_RATIOS}, formula),
        Case("a tall and a wide anchor: ratios 4 and 0.25", {"sizes": (64,), "aspect_ratios": (4.0, 0.25)},
             "the aspect ratio is height / width: ratio 4 is a tall box, 128 high and 32 wide"),
        Case("three sizes on one level", {"sizes": (32, 64, 128), "aspect_ratios": TORCHVISION_RATIOS}, order),
        Case("two sizes, unusual ratios", {"sizes": (16, 40), "aspect_ratios": (0.3, 1.0, 2.7)}, order),
        Case("half-pixel corners (ties in rounding)", {"sizes": (5, 7, 9, 3), "aspect_ratios": (1.0,)},
             "round the halved corners with torch.round, which rounds a tie (2.5, 3.5) to the even neighbour: "
             "±2.5 becomes ±2 and ±3.5 becomes ±4, the same on both sides of the centre (not floor(x + 0.5))"),
        Case("one size, one ratio", {"sizes": (20,), "aspect_ratios": (1.0,)}, "the result is Tensor[1, 4]"),
    ]

    def compare(received, expected, case):
        return tensor_problem(received, expected, "the anchors")

    return run_cases("check_cell_anchors", fn, package_cell_anchors, cases, compare)


# ----------------------------------------------------------------------------------- grid anchors

def reference_grid_anchors(base_anchors: Tensor, grid_size: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """The package's AnchorGenerator on one level whose cell anchors are `base_anchors`."""
    generator = AnchorGenerator(((1,),), ((1.0,),))
    generator.cell_anchors_0 = base_anchors  # the buffer that holds level 0's cell anchors
    height, width = grid_size
    return generator((height * stride[0], width * stride[1]), [torch.zeros(1, 1, height, width)])


def _grid_case(name: str, base_anchors: Tensor, grid_size: tuple[int, int], stride: tuple[int, int], hint: str) -> Case:
    return Case(name, {"base_anchors": base_anchors, "grid_size": grid_size, "stride": stride}, hint)


def check_grid_anchors(fn: Callable) -> bool:
    """Check fn(base_anchors Tensor[A, 4], (H, W), (stride_y, stride_x)) -> Tensor[H·W·A, 4] against AnchorGenerator."""
    order = ("order (row, column, anchor): all A anchors of cell (0, 0), then of cell (0, 1)...; "
             "shifts of shape [H·W, 1, 4] plus base anchors [1, A, 4], then reshape(-1, 4)")
    axes = ("cell (row i, column j) moves x by j·stride_x and y by i·stride_y: "
            "torch.meshgrid(shift_y, shift_x, indexing='ij') gives [H, W] grids")
    offset = "shift by i·stride exactly, with no half-stride offset: cell (0, 0)'s anchors stay centred on (0, 0)"
    torchvision_p2 = package_cell_anchors((32,), TORCHVISION_RATIOS)
    nine = package_cell_anchors((32, 64, 128), TORCHVISION_RATIOS)
    one = torch.tensor([[-2.0, -2.0, 2.0, 2.0]])
    cases = [
        _grid_case("one square anchor on a 2×3 map, stride 4", one, (2, 3), (4, 4), offset),
        _grid_case("three anchors on a 2×2 map, stride 8", torchvision_p2, (2, 2), (8, 8), order),
        _grid_case("a 3×2 map (taller than wide)", one, (3, 2), (16, 16), axes),
        _grid_case("different strides in y and x, like P6 of an 800×1216 batch", torchvision_p2, (2, 3), (61, 64),
                   "use stride_y for the rows and stride_x for the columns; " + axes),
        _grid_case("nine anchors per cell (3 sizes × 3 ratios)", nine, (2, 2), (4, 4), order),
        _grid_case("a 1×1 map", torchvision_p2, (1, 1), (64, 64), "one cell: the result is the base anchors themselves"),
        _grid_case("P2 of a 64×96 batch", torchvision_p2, (16, 24), (4, 4), order),
    ]

    def compare(received, expected, case):
        return tensor_problem(received, expected, "the anchors")

    return run_cases("check_grid_anchors", fn, reference_grid_anchors, cases, compare)


# ---------------------------------------------------------------------------------------- matcher

def reference_match(iou: Tensor, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool) -> Tensor:
    return Matcher(high_threshold, low_threshold, allow_low_quality_matches)(iou)


def _match_case(name: str, iou: list | Tensor, high: float = 0.7, low: float = 0.3, allow: bool = True, hint: str = "") -> Case:
    iou = torch.as_tensor(iou, dtype=torch.float32)
    return Case(name, {"iou": iou, "high_threshold": high, "low_threshold": low, "allow_low_quality_matches": allow}, hint)


def _random_iou(gt: int, boxes: int, seed: int) -> Tensor:
    """IoU of `gt` random GT boxes with `boxes` anchors jittered around them, so that every band of IoU occurs."""
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(gt, 2, generator=g) * 60
    gt_boxes = torch.cat([corner, corner + 10 + torch.rand(gt, 2, generator=g) * 30], dim=1)
    which = torch.randint(0, gt, (boxes,), generator=g)
    anchors = gt_boxes[which] + torch.randn(boxes, 4, generator=g) * 6
    anchors[:, 2:] = torch.maximum(anchors[:, 2:], anchors[:, :2] + 1)
    return ops.box_iou(gt_boxes, anchors)


def check_matcher(fn: Callable) -> bool:
    """Check fn(iou Tensor[G, B], high_threshold, low_threshold, allow_low_quality_matches) -> Tensor[B] int64."""
    bands = "best IoU >= high: its GT index; < low: -1; in between: -2 (each box's best IoU over the GT boxes, dim=0)"
    revive = ("with allow_low_quality_matches, for each GT box the box(es) with its highest IoU become positives "
              "again, even below high_threshold")
    cases = [
        _match_case("random boxes, without low-quality matches", _random_iou(3, 12, 0), allow=False,
                    hint=bands + "; allow_low_quality_matches is False here, so no box is revived"),
        _match_case("IoU exactly at the thresholds", [[0.7, 0.3, 0.2999, 0.6999, 0.1]], allow=False,
                    hint="IoU >= high_threshold is a positive and IoU < low_threshold background: exactly 0.7 is "
                         "positive, exactly 0.3 is ignored (-2)"),
        _match_case("a GT box whose best box is below 0.7", [[0.9, 0.4, 0.1], [0.1, 0.2, 0.25]], hint=revive),
        _match_case("a GT box with two equally best boxes (a tie)", [[0.5, 0.5, 0.1, 0.0], [0.0, 0.1, 0.2, 0.9]],
                    hint="every box tied for a GT box's highest IoU is revived, not only the first one that "
                         "argmax returns: compare iou with each row's maximum, iou == highest[:, None]"),
        _match_case("a revived box that overlaps another GT box more", [[0.6, 0.0, 0.1], [0.65, 0.9, 0.0]],
                    hint="a revived box gets its own best GT (argmax over the GT boxes), which need not be the GT "
                         "box that revived it: here box 0 is GT 0's best box, but GT 1 overlaps it more"),
        _match_case("two GT boxes tied for one box", [[0.8, 0.1], [0.8, 0.2]],
                    hint="with equal IoUs the lower GT index wins: iou.max(dim=0) returns the first maximum"),
        _match_case("random boxes, with low-quality matches", _random_iou(4, 20, 1), hint=revive),
        _match_case("the box head's thresholds 0.5 / 0.5", _random_iou(3, 15, 2), 0.5, 0.5, False,
                    "with equal thresholds nothing is ignored: IoU >= 0.5 positive, below background"),
        _match_case("low-quality matches off", [[0.9, 0.4, 0.1], [0.1, 0.2, 0.25]], allow=False,
                    hint="revive boxes only when allow_low_quality_matches is True"),
        _match_case("one GT box, many anchors", _random_iou(1, 30, 3), hint=revive),
    ]

    def compare(received, expected, case):
        return tensor_problem(received, expected, "the matches")

    return run_cases("check_matcher", fn, reference_match, cases, compare)


# --------------------------------------------------------------------------------------- RPN loss

def _loss_case(name: str, seed: int, anchors: int = 24, error: float = 1.0, positives: int = 4, negatives: int = 8,
               hint: str = "") -> Case:
    """Random anchors labelled 1 / 0 / -1; `positives` and `negatives` of them sampled; deltas off by ~error."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(-1, 2, (anchors,), generator=g).float()
    labels[:positives] = 1.0  # enough of each kind to sample from
    labels[positives:positives + negatives] = 0.0
    order = torch.randperm(anchors, generator=g)
    labels = labels[order]
    positive = torch.zeros(anchors, dtype=torch.bool)
    negative = torch.zeros(anchors, dtype=torch.bool)
    positive[torch.where(labels == 1)[0][:positives]] = True
    negative[torch.where(labels == 0)[0][:negatives]] = True
    targets = torch.randn(anchors, 4, generator=g) * 0.5
    deltas = targets + torch.randn(anchors, 4, generator=g) * error
    objectness = torch.randn(anchors, generator=g) * 2
    return Case(name, {"objectness": objectness, "deltas": deltas, "labels": labels, "regression_targets": targets,
                       "positive": positive, "negative": negative}, hint)


class _Losses(tuple):
    """Two losses that print as their names and values."""

    def __repr__(self) -> str:
        return ", ".join(f"{name} {_value(t)}" for name, t in zip(("loss_objectness", "loss_rpn_box_reg"), self))


def _value(t: Any) -> str:
    return f"{t.item():.6g}" if isinstance(t, Tensor) and t.numel() == 1 else repr(t)


def check_rpn_loss(fn: Callable) -> bool:
    """Check fn(objectness, deltas, labels, regression_targets, positive, negative) -> (loss_objectness, loss_box)."""
    average = ("loss_objectness: binary cross-entropy with logits, averaged over the sampled anchors (positive | negative); "
               "loss_rpn_box_reg: smooth L1 with beta = 1/9, summed over the 4 deltas of the sampled positives, "
               "divided by the number of sampled anchors (not of positives)")
    cases = [
        _loss_case("random anchors, 4 positives and 8 negatives sampled", 0, hint=average),
        _loss_case("small box errors (the quadratic part, |x| < 1/9)", 1, error=0.02,
                   hint="smooth L1 is 0.5·x²/beta for |x| < beta and |x| - 0.5·beta beyond, with beta = 1/9"),
        _loss_case("large box errors (the linear part)", 2, error=3.0,
                   hint="smooth L1 is |x| - 0.5·beta for |x| >= beta, with beta = 1/9 (not F.smooth_l1_loss's default 1)"),
        _loss_case("unsampled anchors with large errors", 3, anchors=60, positives=3, negatives=5,
                   hint="only the sampled anchors count: labelled anchors outside positive | negative are left out"),
        _loss_case("no positive sampled", 4, positives=0, negatives=10,
                   hint="with no positives the box loss is 0: divide by the number of sampled anchors, never by the "
                        "number of positives (0 / 0 is nan)"),
        _loss_case("positives only", 5, positives=6, negatives=0, hint=average),
        _loss_case("one positive, one negative", 6, anchors=10, positives=1, negatives=1, hint=average),
    ]

    def reference(*args):
        return _Losses(package_rpn_loss(*args))

    def compare(received, expected, case):
        if not isinstance(received, (tuple, list)) or len(received) != 2:
            return "return two losses: (loss_objectness, loss_rpn_box_reg)"
        for name, got, want in zip(("loss_objectness", "loss_rpn_box_reg"), received, expected):
            problem = tensor_problem(got, want, name, rtol=1e-5, atol=1e-6)
            if problem:
                return problem
        return None

    def fn_with_printable_output(*args):
        output = fn(*args)
        return _Losses(output) if isinstance(output, (tuple, list)) else output

    return run_cases("check_rpn_loss", fn_with_printable_output, reference, cases, compare)


# ------------------------------------------------------------------- predict, then measure: the RPN bench

def check_low_quality_experiment(build: Callable, prediction, baseline: dict | None = None, iterations: int = 250,
                                 train_count: int = 1000, val_count: int = 100) -> dict:
    """Exercise 5: build(seed) -> (backbone, rpn), rpn_lab's bench with allow_low_quality_matches=False.

    Checks the variant, trains it (and the bench unchanged, unless `baseline` gives its recall_by_size),
    and holds `prediction` (recall at IoU 0.7 with 100 proposals) against the measurement, ± 0.1.
    """
    hint = ("start from rpn_lab.build_rpn(seed=seed) and give the RPN a new matcher, "
            "Matcher(0.7, 0.3, allow_low_quality_matches=False): change nothing else")
    why = ("without low-quality matches, an object whose best anchor reaches only IoU 0.3-0.7 gets no positive "
           "anchor: its anchors are ignored, never trained as objects. Section 9 counted how many objects have an "
           "anchor at IoU 0.7; compare that count with the recall measured here, and look at which size groups lose.")
    return rpn_experiment("check_low_quality_experiment", build, prediction, {"allow_low_quality_matches": False},
                          hint, why, baseline, iterations, train_count, val_count)


def check_anchor_size_experiment(build: Callable, prediction, baseline: dict | None = None, iterations: int = 250,
                                 train_count: int = 1000, val_count: int = 100) -> dict:
    """Exercise 6: build(seed) -> (backbone, rpn), rpn_lab's bench with anchors of 8 strides: 32, 64, ..., 512.

    The same protocol as check_low_quality_experiment: the variant checked, trained and measured, and
    `prediction` (recall at IoU 0.7 with 100 proposals) held against the measurement, ± 0.1.
    """
    hint = "rpn_lab.build_rpn(anchor_sizes=(32, 64, 128, 256, 512), seed=seed): torchvision's sizes, 8 strides per level"
    why = ("anchors of 8 strides start at 32 pixels on P2, and most shapes are 11-56 pixels: a 16-pixel object "
           "overlaps no anchor by 0.3, so it gets positives only through its low-quality matches, and the deltas "
           "must shrink those anchors by half. Whether that costs recall is what the small-object column shows.")
    return rpn_experiment("check_anchor_size_experiment", build, prediction, {"anchor_sizes": (32, 64, 128, 256, 512)},
                          hint, why, baseline, iterations, train_count, val_count)
