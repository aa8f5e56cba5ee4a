"""Chapter 03's checkers pass correct code (the package's and torchvision's) and reject plausible mistakes."""
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.poolers import LevelMapper

from mrcnn_from_scratch.exercises import check_fpn_forward, check_pyramid_shapes, check_roi_levels, check_top_down
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


def fpn_forward(features, lateral_convs, output_convs, relu=False, p6_from="P5", p6_kernel=1, scale_factor=None):
    """The FPN forward; the keyword arguments make the usual mistakes."""
    laterals = [conv(c) for conv, c in zip(lateral_convs, features)]
    if relu:
        laterals = [torch.relu(x) for x in laterals]
    merged = top_down(laterals, scale_factor=scale_factor)
    outputs = [conv(m) for conv, m in zip(output_convs, merged)]
    top = outputs[-1] if p6_from == "P5" else merged[-1]
    return outputs + [F.max_pool2d(top, kernel_size=p6_kernel, stride=2)]


def torchvision_fpn_forward(features, lateral_convs, output_convs):
    """torchvision.ops.FeaturePyramidNetwork holding the same weights."""
    fpn = torchvision.ops.FeaturePyramidNetwork([c.in_channels for c in lateral_convs], lateral_convs[0].out_channels,
                                                extra_blocks=LastLevelMaxPool())
    for i, (lateral, output) in enumerate(zip(lateral_convs, output_convs)):
        fpn.inner_blocks[i][0].load_state_dict(lateral.state_dict())
        fpn.layer_blocks[i][0].load_state_dict(output.state_dict())
    return fpn(OrderedDict((str(i), c) for i, c in enumerate(features)))  # a dict: the checker takes its values


def pyramid_shapes(height, width):
    shapes, h, w = [], height, width
    for k in range(1, 7):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        if k >= 2:
            shapes.append((h, w))
    return shapes


def torchvision_levels(boxes):
    mapper = LevelMapper(2, 5)
    return mapper([boxes]) + 2


def test_checkers_pass_correct_code(capsys):
    assert check_top_down(top_down)
    assert check_top_down(top_down_by_repeat)
    assert check_top_down(reference_top_down)
    assert check_fpn_forward(fpn_forward)
    assert check_fpn_forward(torchvision_fpn_forward)
    assert check_pyramid_shapes(pyramid_shapes)
    assert check_roi_levels(reference_roi_levels)
    assert check_roi_levels(torchvision_levels)
    out = capsys.readouterr().out
    assert out.count("✓") == 8 and "✓ check_fpn_forward passed 5 cases" in out


def test_references_agree_with_torchvision():
    gen = torch.Generator().manual_seed(0)
    corners = torch.rand(500, 2, generator=gen) * 500
    boxes = torch.cat([corners, corners + torch.rand(500, 2, generator=gen) ** 2 * 1200], dim=1)
    assert torch.equal(reference_roi_levels(boxes), torchvision_levels(boxes))


def test_unfilled_stub_raises_not_implemented():
    def stub(*args):
        raise NotImplementedError

    for check in [check_top_down, check_fpn_forward, check_pyramid_shapes, check_roi_levels]:
        with pytest.raises(NotImplementedError):
            check(stub)


def test_checkers_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_fpn_forward(fpn_forward)
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


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda f, l, o: fpn_forward(f, l, o, relu=True), "P2 has wrong values"),
        (lambda f, l, o: fpn_forward(f, l, o, p6_from="M5"), "max-pooled top level"),
        (lambda f, l, o: fpn_forward(f, l, o, p6_kernel=2), "max-pooled top level"),
        (lambda f, l, o: fpn_forward(f, l, o, scale_factor=2), "your function raised RuntimeError"),
        (lambda f, l, o: fpn_forward(f, l, o)[:-1], "return 5 maps"),
    ],
    ids=["relu on laterals", "P6 from M5", "P6 with a 2x2 max pool", "scale_factor=2", "no P6"],
)
def test_fpn_forward_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_fpn_forward(wrong)


def floor_shapes(height, width):
    return [(height // 2**k, width // 2**k) for k in range(2, 7)]


@pytest.mark.parametrize(
    "wrong, message",
    [
        (floor_shapes, "P6 should be 13×19, got 12×19"),
        (lambda h, w: pyramid_shapes(h, w)[:4], "return 5"),
        (lambda h, w: [(w_, h_) for h_, w_ in pyramid_shapes(h, w)], "P2 should be 200×304"),
    ],
    ids=["floor division", "no P6", "(width, height)"],
)
def test_pyramid_shapes_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_pyramid_shapes(wrong)


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
