"""Chapter 04's checkers pass correct code (ours and torchvision's) and reject plausible mistakes."""
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchorGenerator

from mrcnn_from_scratch.anchors import cell_anchors
from mrcnn_from_scratch.exercises import (check_anchor_size_experiment, check_cell_anchors, check_grid_anchors,
                                         check_low_quality_experiment, check_matcher, check_rpn_loss, rpn_lab)
from mrcnn_from_scratch.exercises.ch04 import reference_grid_anchors, reference_match
from mrcnn_from_scratch.losses import rpn_loss
from mrcnn_from_scratch.matching import Matcher


# ------------------------------------------------------------------ correct implementations pass

def test_checkers_pass_the_package_and_torchvision(capsys):
    assert check_cell_anchors(cell_anchors)
    assert check_cell_anchors(lambda sizes, ratios: TorchvisionAnchorGenerator().generate_anchors(sizes, ratios))
    assert check_grid_anchors(reference_grid_anchors)
    assert check_matcher(reference_match)
    assert check_matcher(lambda iou, high, low, allow: tv_utils.Matcher(high, low, allow)(iou))
    assert check_rpn_loss(rpn_loss)
    out = capsys.readouterr().out
    assert out.count("✓") == 6 and "✓ check_matcher passed" in out


def test_unfilled_stub_raises_not_implemented():
    def stub(*args):
        raise NotImplementedError

    for check in (check_cell_anchors, check_grid_anchors, check_matcher, check_rpn_loss):
        with pytest.raises(NotImplementedError):
            check(stub)


# ------------------------------------------------------------------------------- cell anchors

def loop_cell_anchors(sizes, aspect_ratios, rounding="torch", ratio="h/w", size_major=False, halve=True, dtype=torch.float32):
    """Cell anchors written with loops in float64, with switches for the usual mistakes."""
    pairs = [(s, r) for s in sizes for r in aspect_ratios] if size_major else [(s, r) for r in aspect_ratios for s in sizes]
    rows = []
    for size, r in pairs:
        h, w = size * math.sqrt(r), size / math.sqrt(r)
        if ratio == "w/h":
            h, w = w, h
        half = 2 if halve else 1
        rows.append([-w / half, -h / half, w / half, h / half])
    anchors = torch.tensor(rows, dtype=torch.float64)
    if rounding == "torch":
        anchors = anchors.round()
    elif rounding == "floor+0.5":
        anchors = torch.floor(anchors + 0.5)
    elif rounding == "truncate":
        anchors = anchors.trunc()
    return anchors.to(dtype)


def test_check_cell_anchors_passes_a_float64_loop():
    assert check_cell_anchors(loop_cell_anchors)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda s, r: loop_cell_anchors(s, r, rounding=None), "wrong values"),
        (lambda s, r: loop_cell_anchors(s, r, rounding="floor+0.5"), '"half-pixel corners'),
        (lambda s, r: loop_cell_anchors(s, r, rounding="truncate"), "wrong values"),
        (lambda s, r: loop_cell_anchors(s, r, ratio="w/h"), r"for ratio r = h / w and size s: h = s·sqrt\(r\)"),
        (lambda s, r: loop_cell_anchors(s, r, size_major=True), "ratio-major order"),
        (lambda s, r: loop_cell_anchors(s, r, halve=False), "wrong values"),
        (lambda s, r: loop_cell_anchors(s, r, dtype=torch.float64), "dtype torch.float32"),
    ],
    ids=["no rounding", "floor(x + 0.5)", "truncation", "ratio is w/h", "size-major order", "not halved", "float64"],
)
def test_check_cell_anchors_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_cell_anchors(wrong)


# ------------------------------------------------------------------------------- grid anchors

def grid_anchors(base_anchors, grid_size, stride, order="hwa", offset=0.0, swap_xy=False, one_stride=False):
    """Anchors over a grid, with switches for the usual mistakes."""
    height, width = grid_size
    stride_y, stride_x = (stride[0], stride[0]) if one_stride else stride
    shift_y = torch.arange(height, dtype=torch.float32) * stride_y + offset * stride_y
    shift_x = torch.arange(width, dtype=torch.float32) * stride_x + offset * stride_x
    grid_y, grid_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
    if swap_xy:
        grid_y, grid_x = grid_x.T.reshape(height, width), grid_y.T.reshape(height, width)
    shifts = torch.stack([grid_x, grid_y, grid_x, grid_y], dim=-1).reshape(-1, 1, 4)
    anchors = shifts + base_anchors[None]  # [H·W, A, 4]
    if order == "ahw":
        anchors = anchors.transpose(0, 1)
    return anchors.reshape(-1, 4)


def test_check_grid_anchors_passes_the_straightforward_version():
    assert check_grid_anchors(grid_anchors)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda b, g, s: grid_anchors(b, g, s, order="ahw"), "order \\(row, column, anchor\\)"),
        (lambda b, g, s: grid_anchors(b, g, s, offset=0.5), "no half-stride offset"),
        (lambda b, g, s: grid_anchors(b, g, s, swap_xy=True), "wrong values"),
        (lambda b, g, s: grid_anchors(b, g, s, one_stride=True), "different strides in y and x"),
    ],
    ids=["(anchor, row, column) order", "half-stride offset", "x and y swapped", "stride_y for both axes"],
)
def test_check_grid_anchors_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_grid_anchors(wrong)


# ------------------------------------------------------------------------------------- matcher

def match(iou, high, low, allow, strict=False, argmax_only=False, revive_with_own_gt=False, ignore_flag=False,
          dtype=torch.int64):
    """A matcher with switches for the usual mistakes."""
    best_iou, best_gt = iou.max(dim=0)
    matches = best_gt.clone()
    positive = best_iou > high if strict else best_iou >= high
    matches[~positive] = -2
    matches[best_iou < low] = -1
    if allow or ignore_flag:
        if argmax_only:
            gt_index, revived = torch.arange(len(iou)), iou.argmax(dim=1)
        else:
            gt_index, revived = torch.where(iou == iou.max(dim=1, keepdim=True).values)
        matches[revived] = gt_index if revive_with_own_gt else best_gt[revived]
    return matches.to(dtype)


def test_check_matcher_passes_the_straightforward_version():
    assert check_matcher(match)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda i, h, l, a: match(i, h, l, a, strict=True), '"IoU exactly at the thresholds"'),
        (lambda i, h, l, a: match(i, h, l, a, argmax_only=True), "not only the first one that argmax returns"),
        (lambda i, h, l, a: match(i, h, l, a, revive_with_own_gt=True), "its own best GT"),
        (lambda i, h, l, a: match(i, h, l, a, ignore_flag=True), "allow_low_quality_matches is False here"),
        (lambda i, h, l, a: match(i, h, l, False), '"a GT box whose best box is below 0.7"'),
        (lambda i, h, l, a: match(i, h, l, a, dtype=torch.int32), "dtype torch.int64"),
        (lambda i, h, l, a: match(i.T, h, l, a), "should have shape|raised"),
    ],
    ids=[">", "argmax only", "revived with the reviving GT", "flag ignored", "no low-quality matches", "int32",
         "transposed IoU"],
)
def test_check_matcher_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_matcher(wrong)


def test_matcher_failure_shows_the_iou_matrix():
    with pytest.raises(AssertionError) as failure:
        check_matcher(lambda i, h, l, a: match(i, h, l, a, argmax_only=True))
    text = str(failure.value)
    assert '"a GT box with two equally best boxes (a tie)"' in text
    assert "iou = tensor([[0.5000, 0.5000" in text and "Expected: tensor([ 0,  0, -1,  1])" in text


# ------------------------------------------------------------------------------------ RPN loss

def loss(objectness, deltas, labels, targets, positive, negative, beta=1 / 9, per_positive=False, all_labelled=False,
         mean=False, as_list=False):
    """The RPN loss with switches for the usual mistakes."""
    sampled = (labels >= 0) if all_labelled else (positive | negative)
    objectness_loss = F.binary_cross_entropy_with_logits(objectness[sampled], labels[sampled])
    reduction = "mean" if mean else "sum"
    box_loss = F.smooth_l1_loss(deltas[positive], targets[positive], beta=beta, reduction=reduction)
    if not mean:
        box_loss = box_loss / (positive.sum() if per_positive else sampled.sum())
    return [objectness_loss, box_loss] if as_list else (objectness_loss, box_loss)


def test_check_rpn_loss_passes_torch_functional_and_a_list():
    assert check_rpn_loss(loss)
    assert check_rpn_loss(lambda *args: loss(*args, as_list=True))


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda *a: loss(*a, per_positive=True), "loss_rpn_box_reg has wrong values"),
        (lambda *a: loss(*a, beta=1.0), "loss_rpn_box_reg has wrong values"),
        (lambda *a: loss(*a, mean=True), "loss_rpn_box_reg has wrong values"),
        (lambda *a: loss(*a, all_labelled=True), "loss_objectness has wrong values"),
        (lambda *a: loss(*a)[0], "return two losses"),
        (lambda *a: tuple(t.reshape(1) for t in loss(*a)), "should have shape \\[\\]"),
    ],
    ids=["divided by positives", "beta 1", "mean", "all labelled anchors", "one loss", "shape [1]"],
)
def test_check_rpn_loss_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_rpn_loss(wrong)


def test_rpn_loss_failure_names_the_losses():
    with pytest.raises(AssertionError) as failure:
        check_rpn_loss(lambda *a: loss(*a, beta=1.0))
    text = str(failure.value)
    assert "Expected: loss_objectness " in text and "Received: loss_objectness " in text
    assert "Hint: loss_objectness: binary cross-entropy" in text


# ------------------------------------------------------------- the experiments: predict, then measure

TINY_BUDGET = dict(iterations=2, train_count=16, val_count=8)  # the protocol, not the result, is under test


def without_low_quality_matches(seed=0):
    backbone, rpn = rpn_lab.build_rpn(seed=seed)
    rpn.matcher = Matcher(0.7, 0.3, allow_low_quality_matches=False)
    return backbone, rpn


def anchors_of_8_strides(seed=0):
    return rpn_lab.build_rpn(anchor_sizes=(32, 64, 128, 256, 512), seed=seed)


@pytest.mark.parametrize("check, build", [(check_low_quality_experiment, without_low_quality_matches),
                                          (check_anchor_size_experiment, anchors_of_8_strides)],
                         ids=["low-quality matches", "anchor sizes"])
def test_experiments_measure_the_variant(check, build, capsys):
    result = check(build, 0.5, **TINY_BUDGET)
    out = capsys.readouterr().out
    assert f"✓ {check.__name__}: your variant is the one asked for" in out and "Why:" in out
    assert set(result["measured"]) == set(result["baseline"]) == {"all", *rpn_lab.SIZE_GROUPS}
    assert result["within"] == (abs(0.5 - result["measured"]["all"]) <= 0.1)


@pytest.mark.parametrize(
    "check, wrong",
    [
        (check_low_quality_experiment, lambda seed=0: rpn_lab.build_rpn(seed=seed)),
        (check_low_quality_experiment, lambda seed=0: rpn_lab.build_rpn(allow_low_quality_matches=False, seed=seed,
                                                                         anchor_sizes=(32, 64, 128, 256, 512))),
        (check_anchor_size_experiment, lambda seed=0: rpn_lab.build_rpn(seed=seed)),
        (check_anchor_size_experiment, lambda seed=0: rpn_lab.build_rpn(anchor_sizes=(8, 16, 32, 64, 128), seed=seed)),
        (check_anchor_size_experiment, without_low_quality_matches),
    ],
    ids=["low-quality: unchanged", "low-quality: two changes", "sizes: unchanged", "sizes: 2 strides",
         "sizes: the other experiment"],
)
def test_experiments_reject_another_model(check, wrong):
    with pytest.raises(AssertionError, match="not the variant asked for"):
        check(wrong, 0.5, **TINY_BUDGET)


def test_experiments_want_a_prediction_first():
    for check, build in ((check_low_quality_experiment, without_low_quality_matches),
                         (check_anchor_size_experiment, anchors_of_8_strides)):
        with pytest.raises(NotImplementedError, match="prediction first"):
            check(build, None, **TINY_BUDGET)
