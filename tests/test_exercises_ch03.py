"""Chapter 03's checkers pass correct code (the package's and torchvision's) and reject plausible mistakes."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.poolers import LevelMapper

from mrcnn_from_scratch.exercises import check_output_conv_experiment, check_roi_levels, check_top_down
from mrcnn_from_scratch.exercises import rpn_lab
from mrcnn_from_scratch.exercises.ch03 import reference_roi_levels, reference_top_down


# --------------------------------------------------------------- correct implementations

def top_down(laterals, mode="nearest", scale_factor=None, add_merged=True):
    """M_k = L_k + up(M_{k+1}); the keyword arguments make the usual mistakes."""
    merged = [laterals[-1]]
    for k in range(len(laterals) - 2, -1, -1):
        above = merged[0] if add_merged else laterals[k + 1]
        if scale_factor:
            up = F.interpolate(above, scale_factor=scale_factor, mode=mode)
        else:
            up = F.interpolate(above, size=laterals[k].shape[-2:], mode=mode)
        merged.insert(0, laterals[k] + up)
    return merged


def top_down_by_repeat(laterals):
    """Nearest-neighbour ×2 by repeating rows and columns, then cropping to the lateral's size."""
    merged = [laterals[-1]]
    for lateral in reversed(laterals[:-1]):
        h, w = lateral.shape[-2:]
        up = merged[0].repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[..., :h, :w]
        merged.insert(0, lateral + up)
    return merged


def torchvision_levels(boxes):
    mapper = LevelMapper(2, 5)
    return mapper([boxes]) + 2


def test_checkers_pass_correct_code(capsys):
    assert check_top_down(top_down)
    assert check_top_down(top_down_by_repeat)
    assert check_top_down(reference_top_down)
    assert check_roi_levels(reference_roi_levels)
    assert check_roi_levels(torchvision_levels)
    out = capsys.readouterr().out
    assert out.count("✓") == 5 and "✓ check_roi_levels passed 7 cases" in out


def test_references_agree_with_torchvision():
    gen = torch.Generator().manual_seed(0)
    corners = torch.rand(500, 2, generator=gen) * 500
    boxes = torch.cat([corners, corners + torch.rand(500, 2, generator=gen) ** 2 * 1200], dim=1)
    assert torch.equal(reference_roi_levels(boxes), torchvision_levels(boxes))


def test_unfilled_stub_raises_not_implemented():
    def stub(*args):
        raise NotImplementedError

    for check in [check_top_down, check_roi_levels]:
        with pytest.raises(NotImplementedError):
            check(stub)


def test_checkers_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_top_down(top_down)
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------- plausible mistakes

@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda ls: top_down(ls, scale_factor=2), "your function raised RuntimeError"),
        (lambda ls: top_down(ls, mode="bilinear"), "wrong values"),
        (lambda ls: top_down(ls, add_merged=False), "wrong values"),
        (lambda ls: top_down(ls)[::-1], "should have shape"),
        (lambda ls: top_down(ls)[:-1], "return 4 maps"),
        (lambda ls: torch.cat([m.flatten() for m in top_down(ls)]), "return a list of 4 tensors"),
    ],
    ids=["scale_factor=2", "bilinear", "adds laterals, not merged maps", "reversed order", "drops the top level", "one tensor"],
)
def test_top_down_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_top_down(wrong)


def test_failure_message_shows_shapes_not_whole_tensors():
    with pytest.raises(AssertionError) as info:
        check_top_down(lambda ls: top_down(ls, mode="bilinear"))
    text = str(info.value)
    assert "Tensor[1, 8, 16, 16]" in text and len(text) < 2000


def levels(boxes, rounding=torch.floor, clamp=True, offset=0):
    size = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    k = rounding(4 + torch.log2(size / 224))
    if clamp:
        k = k.clamp(2, 5)
    return k.to(torch.int64) - offset


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda b: levels(b, rounding=torch.round), '"just below and at each boundary"'),
        (lambda b: levels(b, clamp=False), '"tiny and huge squares"'),
        (lambda b: levels(b, offset=2), "levels minus 2"),
        (lambda b: levels(b).float(), "dtype torch.int64"),
        (lambda b: torch.floor(4 + torch.log2((b[:, 2] - b[:, 0] + b[:, 3] - b[:, 1]) / 2 / 224)).clamp(2, 5).long(),
         '"long thin boxes"'),
    ],
    ids=["round", "no clamp", "0-based", "float", "mean side, not sqrt(area)"],
)
def test_roi_levels_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_roi_levels(wrong)


# ------------------------------------------------------------ the experiment: no 3×3 output convolutions

TINY_BUDGET = dict(iterations=2, train_count=16, val_count=8)  # the protocol, not the result, is under test


def without_output_convs(seed=0):
    backbone, rpn = rpn_lab.build_rpn(seed=seed)
    backbone.fpn.output_convs = nn.ModuleList(nn.Identity() for _ in backbone.fpn.output_convs)
    return backbone, rpn


def test_output_conv_experiment_measures_the_variant(capsys):
    result = check_output_conv_experiment(without_output_convs, 0.5, **TINY_BUDGET)
    out = capsys.readouterr().out
    assert "✓ check_output_conv_experiment: your variant is the one asked for" in out
    assert set(result) == {"measured", "baseline", "prediction", "within"} and result["prediction"] == 0.5
    assert set(result["measured"]) == {"all", *rpn_lab.SIZE_GROUPS}
    assert 0.0 <= result["measured"]["all"] <= 1.0
    # The verdict is the distance to the measurement, whichever way it falls.
    assert result["within"] == (abs(0.5 - result["measured"]["all"]) <= 0.1)
    assert ("✓ within" if result["within"] else "✗ outside") in out


def test_output_conv_experiment_judges_the_prediction_against_the_measurement(capsys):
    measured = check_output_conv_experiment(without_output_convs, 0.0, **TINY_BUDGET)["measured"]["all"]
    again = check_output_conv_experiment(without_output_convs, measured + 0.05, baseline={"all": 0.0}, **TINY_BUDGET)
    assert again["measured"]["all"] == measured and again["within"]  # seeded: the same measurement
    far = check_output_conv_experiment(without_output_convs, measured + 0.3, baseline={"all": 0.0}, **TINY_BUDGET)
    assert not far["within"] and "✗ outside" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda seed=0: rpn_lab.build_rpn(seed=seed), "not the variant asked for"),
        (lambda seed=0: rpn_lab.build_rpn(output_convs=False, seed=seed + 1), "not the variant asked for"),
        (lambda seed=0: rpn_lab.build_rpn(output_convs=False, allow_low_quality_matches=False, seed=seed),
         "not the variant asked for"),
        (lambda seed=0: rpn_lab.build_rpn(output_convs=False, seed=seed)[0], "return \\(backbone, rpn\\)"),
    ],
    ids=["unchanged", "another seed", "two changes", "backbone only"],
)
def test_output_conv_experiment_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_output_conv_experiment(wrong, 0.5, **TINY_BUDGET)


def test_output_conv_experiment_wants_a_prediction_first():
    with pytest.raises(NotImplementedError, match="prediction first"):
        check_output_conv_experiment(without_output_convs, None, **TINY_BUDGET)
    with pytest.raises(AssertionError, match="should be a number"):
        check_output_conv_experiment(without_output_convs, "high", **TINY_BUDGET)


def test_the_accepted_range_is_a_fraction(capsys):
    from mrcnn_from_scratch.exercises._experiments import judge_prediction

    assert judge_prediction("check", 0.99, 0.95, 0.1, "a share", "because")
    assert not judge_prediction("check", 0.8, 0.95, 0.1, "a share", "because")
    out = capsys.readouterr().out
    assert "the accepted range 0.850 to 1.000" in out and "✗ outside" in out
