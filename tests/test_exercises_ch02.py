"""Chapter 02's checkers pass correct code (the package's and torchvision's) and reject plausible mistakes."""
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from mrcnn_from_scratch.backbone import BasicBlock, Bottleneck, ResNet, conv
from mrcnn_from_scratch.exercises import (
    check_basic_block,
    check_bottleneck,
    check_feature_sizes,
    check_frozen_batch_norm,
    check_receptive_field,
)
from mrcnn_from_scratch.exercises.ch02 import measure_receptive_field, resnet_layers


def frozen_bn_with_batch_norm_module(x, weight, bias, running_mean, running_var, eps):
    bn = nn.BatchNorm2d(len(weight), eps=eps).to(x.dtype)
    bn.load_state_dict({"weight": weight, "bias": bias, "running_mean": running_mean, "running_var": running_var,
                        "num_batches_tracked": torch.tensor(0)})
    with torch.no_grad():
        return bn.eval()(x)


def receptive_field(layers):
    field, jump = 1, 1
    for kernel_size, stride, dilation in layers:
        field += dilation * (kernel_size - 1) * jump
        jump *= stride
    return field, jump


def test_checkers_pass_the_package_and_torchvision(capsys):
    assert check_frozen_batch_norm(lambda x, w, b, m, v, eps: F.batch_norm(x, m, v, w, b, False, 0.0, eps))
    assert check_frozen_batch_norm(frozen_bn_with_batch_norm_module)
    assert check_frozen_batch_norm(_torchvision_frozen)
    assert check_basic_block(BasicBlock)
    assert check_bottleneck(Bottleneck)
    assert check_feature_sizes(lambda h, w: [(math.ceil(h / 2**k), math.ceil(w / 2**k)) for k in range(2, 6)])
    assert check_receptive_field(receptive_field)
    out = capsys.readouterr().out
    assert out.count("✓") == 7 and "✓ check_bottleneck passed 4 cases" in out


def _torchvision_frozen(x, weight, bias, running_mean, running_var, eps):
    frozen = torchvision.ops.FrozenBatchNorm2d(len(weight), eps=eps).to(x.dtype)
    for name, value in [("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)]:
        getattr(frozen, name).copy_(value)
    return frozen(x)


def test_the_measured_receptive_field_agrees_with_the_recurrence():
    for depth in [18, 34, 50, 101]:
        for stage in [2, 3, 4, 5]:
            layers = resnet_layers(depth, stage)
            assert measure_receptive_field(layers) == receptive_field(layers)
    assert measure_receptive_field(resnet_layers(50, 5, c5_dilation=2)) == receptive_field(resnet_layers(50, 5, c5_dilation=2))
    # The values the notebook quotes.
    assert receptive_field(resnet_layers(50, 5)) == (427, 32)
    assert receptive_field(resnet_layers(18, 5)) == (435, 32)
    assert receptive_field(resnet_layers(50, 5, c5_dilation=2)) == (459, 16)


def test_feature_sizes_reference_is_the_real_network():
    with torch.no_grad():
        features = ResNet(18, width=8)(torch.rand(1, 3, 97, 131))
    assert [tuple(f.shape[-2:]) for f in features] == [(25, 33), (13, 17), (7, 9), (4, 5)]


def test_unfilled_stubs_raise_not_implemented():
    class Stub(nn.Module):
        def __init__(self, in_channels, width, stride, norm):
            super().__init__()
            raise NotImplementedError

    def stub(*args):
        raise NotImplementedError

    for checker, fn in [(check_basic_block, Stub), (check_bottleneck, Stub), (check_frozen_batch_norm, stub),
                        (check_feature_sizes, stub), (check_receptive_field, stub)]:
        with pytest.raises(NotImplementedError):
            checker(fn)


def test_block_checkers_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_basic_block(BasicBlock)
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------------------------- frozen BN


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda x, w, b, m, v, eps: (x - m[:, None, None]) / v[:, None, None].sqrt() * w[:, None, None] + b[:, None, None],
         '"tiny variances, eps 1e-3"'),
        (lambda x, w, b, m, v, eps: F.batch_norm(x, None, None, w, b, True, 0.0, eps), "wrong values"),
        (lambda x, w, b, m, v, eps: (x - m) / (v + eps).sqrt() * w + b, '"width equals the number of channels"|raised'),
        (lambda x, w, b, m, v, eps: (x - m[:, None, None]) / (v[:, None, None] + eps) * w[:, None, None] + b[:, None, None],
         "wrong values"),
        (lambda x, w, b, m, v, eps: F.batch_norm(x.float(), m.float(), v.float(), w.float(), b.float(), False, 0.0, eps),
         "dtype torch.float64"),
    ],
    ids=["no eps", "batch statistics", "broadcast over the width", "no square root", "always float32"],
)
def test_check_frozen_batch_norm_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_frozen_batch_norm(wrong)


# ------------------------------------------------------------------------------------- blocks


class ReluBeforeTheSum(BasicBlock):
    def forward(self, x):
        out = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(out))) + self.shortcut(x)


class NoFinalRelu(BasicBlock):
    def forward(self, x):
        out = torch.relu(self.norm1(self.conv1(x)))
        return self.norm2(self.conv2(out)) + self.shortcut(x)


class StrideOnTheSecondConv(BasicBlock):
    def __init__(self, in_channels, width, stride, norm):
        super().__init__(in_channels, width, stride, norm)
        self.conv1, self.conv2 = conv(in_channels, width, 3), conv(width, width, 3, stride)


class AlwaysProjects(BasicBlock):
    def __init__(self, in_channels, width, stride, norm):
        super().__init__(in_channels, width, stride, norm)
        self.shortcut = nn.Sequential(conv(in_channels, width, 1, stride), norm(width))


class OwnBatchNorm(BasicBlock):
    def __init__(self, in_channels, width, stride, norm):
        super().__init__(in_channels, width, stride, nn.BatchNorm2d)


class NoPadding(BasicBlock):
    def __init__(self, in_channels, width, stride, norm):
        super().__init__(in_channels, width, stride, norm)
        self.conv1.padding = (0, 0)
        self.conv2.padding = (0, 0)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (ReluBeforeTheSum, "negative values"),
        (NoFinalRelu, "negative values"),
        (StrideOnTheSecondConv, '"8 → 16 channels, stride 2: projection shortcut": the block\'s output has wrong values'),
        (AlwaysProjects, r"Not expected: \['shortcut.0.weight'"),
        (OwnBatchNorm, "Make the norm layers with the `norm` argument"),
        (NoPadding, "raised RuntimeError: The size of tensor a"),
    ],
    ids=["relu before the sum", "no final relu", "stride on conv2", "always a projection", "own BatchNorm2d",
         "no padding"],
)
def test_check_basic_block_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_basic_block(wrong)


class StrideOnTheFirstConv(Bottleneck):
    """The original ResNet v1: the stride on the first 1×1 convolution."""

    def __init__(self, in_channels, width, stride, norm):
        super().__init__(in_channels, width, stride, norm)
        self.conv1, self.conv2 = conv(in_channels, width, 1, stride), conv(width, width, 3)


class NoReluInTheMiddle(Bottleneck):
    def forward(self, x):
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(self.norm3(self.conv3(out)) + self.shortcut(x))


class ShortcutWithoutNorm(Bottleneck):
    def __init__(self, in_channels, width, stride, norm):
        super().__init__(in_channels, width, stride, norm)
        if not isinstance(self.shortcut, nn.Identity):
            self.shortcut = nn.Sequential(conv(in_channels, 4 * width, 1, stride))


class NoExpansion(Bottleneck):
    def __init__(self, in_channels, width, stride, norm):
        super().__init__(in_channels, width // 4 if width >= 4 else width, stride, norm)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (StrideOnTheFirstConv, r'(?s)"16 → 32 channels \(width 8\), stride 2".*wrong values.*Hint: the stride goes on the 3×3'),
        (NoReluInTheMiddle, "wrong values"),
        (ShortcutWithoutNorm, r"Missing: \['shortcut.1"),
        (NoExpansion, "do not have the package's names|wrong shape"),
        (BasicBlock, "do not have the package's names"),
    ],
    ids=["stride on conv1 (v1)", "no relu after norm2", "shortcut without norm", "no expansion", "a basic block"],
)
def test_check_bottleneck_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_bottleneck(wrong)


def test_block_failure_message_names_the_case_and_the_input():
    with pytest.raises(AssertionError) as failure:
        check_bottleneck(StrideOnTheFirstConv)
    text = str(failure.value)
    assert "check_bottleneck failed on case 3 of 4" in text
    assert "in_channels = 16" in text and "stride = 2" in text and "input_shape = (2, 16, 10, 12)" in text


# ------------------------------------------------------------------------- sizes and fields


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda h, w: [(h // 2**k, w // 2**k) for k in range(2, 6)], '"800 × 1333.*C2: expected \\(200, 334\\), got \\(200, 333\\)'),
        (lambda h, w: [(round(h / 2**k), round(w / 2**k)) for k in range(2, 6)], "wrong sizes"),
        (lambda h, w: [(math.ceil(h / 2**k), math.ceil(w / 2**k)) for k in range(1, 5)], "wrong sizes"),
        (lambda h, w: [(math.ceil(h / 2**k), math.ceil(w / 2**k)) for k in range(2, 5)], "expected 4 sizes"),
        (lambda h, w: math.ceil(h / 32), "expected a list of 4"),
    ],
    ids=["floor", "round", "C1 to C4", "three levels", "a number"],
)
def test_check_feature_sizes_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_feature_sizes(wrong)


def field_ignoring_strides(layers):
    return 1 + sum(d * (k - 1) for k, _, d in layers), math.prod(s for _, s, _ in layers)


def field_with_the_stride_updated_first(layers):
    field, jump = 1, 1
    for kernel_size, stride, dilation in layers:
        jump *= stride
        field += dilation * (kernel_size - 1) * jump
    return field, jump


def field_ignoring_dilation(layers):
    return receptive_field([(k, s, 1) for k, s, _ in layers])


def field_with_dilation_times_kernel(layers):
    return receptive_field([(d * k, s, 1) for k, s, d in layers])


@pytest.mark.parametrize(
    "wrong, message",
    [
        (field_ignoring_strides, '"the stem: 7×7 stride 2, max pool 3×3 stride 2"'),
        (field_with_the_stride_updated_first, '"one 3×3 convolution"|"the stem'),
        (lambda layers: receptive_field(layers)[0], "expected a pair"),
        (lambda layers: receptive_field(layers)[::-1], '"one 3×3 convolution"'),
        (field_ignoring_dilation, '(?s)"one 3×3 convolution with dilation 2".*Hint: a dilation d spreads'),
        (field_with_dilation_times_kernel, '"one 3×3 convolution with dilation 2"'),
    ],
    ids=["ignores strides", "stride updated first", "field only", "swapped", "ignores dilation", "kernel times dilation"],
)
def test_check_receptive_field_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_receptive_field(wrong)
