"""Checkers for chapter 02's exercises: frozen BatchNorm, the two residual blocks, feature sizes, receptive fields.

Each checker runs your code on a few fixed inputs, compares it with the package's finished version in
`mrcnn_from_scratch.backbone` (or with a measurement), and raises AssertionError on the first case it
gets wrong, showing that input. What they expect:

    frozen_batch_norm(x: Tensor[N, C, H, W], weight, bias, running_mean, running_var: Tensor[C], eps) -> Tensor[N, C, H, W]
    BasicBlock(in_channels, width, stride, norm) -> nn.Module with conv1, norm1, conv2, norm2, shortcut
    Bottleneck(in_channels, width, stride, norm) -> nn.Module with conv1, norm1, conv2, norm2, conv3, norm3, shortcut
    feature_sizes(height, width) -> [(H2, W2), (H3, W3), (H4, W4), (H5, W5)], the sizes of C2..C5
    receptive_field(layers: list of (kernel_size, stride, dilation)) -> (receptive field, stride), in input pixels

`norm` is a function from a number of channels to a normalization layer, e.g. FrozenBatchNorm2d. A
block's shortcut is nn.Identity() when its input and output shapes agree, else
nn.Sequential(1×1 convolution with the block's stride, norm), as in the package.
"""
from typing import Callable

import torch
from torch import Tensor, nn

from ..backbone import BasicBlock, Bottleneck, FrozenBatchNorm2d, ResNet
from ._checking import Case, run_cases, tensor_problem

# ------------------------------------------------------------------------------------ frozen BN


def _frozen_bn_reference(x, weight, bias, running_mean, running_var, eps):
    frozen = FrozenBatchNorm2d(len(weight), eps=eps).to(x.dtype)
    for name, value in [("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)]:
        getattr(frozen, name).copy_(value)
    return frozen(x)


def _norm_args(seed: int, shape: tuple, eps: float, dtype=torch.float32, tiny_var: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    var = torch.rand(c, generator=g, dtype=dtype) * (1e-3 if tiny_var else 1.0) + (1e-4 if tiny_var else 0.5)
    return {
        "x": (torch.randn(shape, generator=g, dtype=dtype) * 2 + 1),
        "weight": torch.rand(c, generator=g, dtype=dtype) + 0.5,
        "bias": torch.randn(c, generator=g, dtype=dtype),
        "running_mean": torch.randn(c, generator=g, dtype=dtype),
        "running_var": var,
        "eps": eps,
    }


def check_frozen_batch_norm(fn: Callable) -> bool:
    """Check fn(x, weight, bias, running_mean, running_var, eps) -> Tensor, BatchNorm2d in eval mode."""
    formula = "y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, per channel (dim 1)"
    stats = "use the stored running_mean and running_var, not the mean and variance of x: they are what make it frozen"
    cases = [
        Case("4 channels, eps 1e-5", _norm_args(0, (2, 4, 3, 5), 1e-5), formula),
        Case("one image, 3 channels", _norm_args(1, (1, 3, 4, 4), 1e-5), stats),
        Case("eps 0 (torchvision's COCO checkpoint)", _norm_args(2, (2, 5, 2, 3), 0.0), formula),
        Case("tiny variances, eps 1e-3", _norm_args(3, (1, 4, 3, 3), 1e-3, tiny_var=True),
             "add eps to the variance before the square root: here eps is larger than the variances"),
        Case("width equals the number of channels", _norm_args(4, (2, 3, 3, 3), 1e-5),
             "the channels are dim 1: reshape the per-channel vectors to [1, C, 1, 1] before broadcasting"),
        Case("a 1×1 map", _norm_args(5, (3, 6, 1, 1), 1e-5), stats),
        Case("float64", _norm_args(6, (2, 4, 3, 2), 1e-5, dtype=torch.float64), "keep the input's dtype"),
    ]

    def compare(received, expected, case):
        return tensor_problem(received, expected, "the output", rtol=1e-5, atol=1e-5)

    return run_cases("check_frozen_batch_norm", fn, _frozen_bn_reference, cases, compare)


# ----------------------------------------------------------------------------- residual blocks


def _randomize_frozen_norms(module: nn.Module, seed: int) -> None:
    """Non-trivial statistics and affine weights in every FrozenBatchNorm2d, so that a swapped norm shows."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, FrozenBatchNorm2d):
            c = len(m.weight)
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.25)
            m.bias.copy_(torch.randn(c, generator=g) * 0.1)


def _reference_block(block_class, in_channels, width, stride, seed):
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(seed)
        block = block_class(in_channels, width, stride, FrozenBatchNorm2d)
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    _randomize_frozen_norms(block, seed)
    return block.eval()


def _load_reference_weights(block: nn.Module, reference: nn.Module) -> None:
    """Copy the reference block's tensors into the learner's; raise ValueError naming what does not fit."""
    if not isinstance(block, nn.Module):
        raise TypeError(f"the class should build an nn.Module, got {type(block).__name__}")
    expected = reference.state_dict()
    own = block.state_dict()
    missing, unexpected = sorted(set(expected) - set(own)), sorted(set(own) - set(expected))
    if missing or unexpected:
        message = f"your block's tensors do not have the package's names. Expected {list(expected)}."
        if missing:
            message += f" Missing: {missing}."
        if unexpected:
            message += f" Not expected: {unexpected}."
        if any(k.endswith("num_batches_tracked") for k in unexpected):
            message += " Make the norm layers with the `norm` argument, e.g. self.norm1 = norm(width)."
        elif any(k.startswith("shortcut") for k in missing + unexpected):
            message += (" The shortcut is nn.Identity() when stride == 1 and in_channels == out_channels,"
                        " else nn.Sequential(conv1×1 with the stride, norm(out_channels)).")
        raise ValueError(message)
    wrong_shapes = [f"{k}: {list(own[k].shape)} instead of {list(v.shape)}" for k, v in expected.items()
                    if own[k].shape != v.shape]
    if wrong_shapes:
        raise ValueError("some of your block's tensors have the wrong shape: " + "; ".join(wrong_shapes))
    block.load_state_dict(expected)


def _block_input(input_shape, seed) -> Tensor:
    return torch.randn(input_shape, generator=torch.Generator().manual_seed(seed))


class _Shown:
    """A block's output, shown in a failure message by its shape and one channel, not all of its numbers."""

    def __init__(self, value):
        self.value = value

    def __repr__(self) -> str:
        if isinstance(self.value, Tensor) and self.value.dim() == 4 and self.value.numel():
            return f"Tensor{list(self.value.shape)}, whose image 0, channel 0 is\n{self.value[0, 0]!r}"
        return repr(self.value)


def _check_block(checker: str, block_class: Callable, reference_class: type, cases: list[Case]) -> bool:
    def run(reference_or_learner):
        def build_and_run(in_channels, width, stride, input_shape):
            seed = in_channels + 10 * width + 100 * stride
            reference = _reference_block(reference_class, in_channels, width, stride, seed)
            if reference_or_learner is reference_class:
                block = reference
            else:
                block = reference_or_learner(in_channels, width, stride, FrozenBatchNorm2d)
                _load_reference_weights(block, reference)
                block.eval()
            with torch.no_grad():
                return _Shown(block(_block_input(input_shape, seed)))

        return build_and_run

    def compare(received, expected, case):
        received, expected = received.value, expected.value
        problem = tensor_problem(received, expected, "the block's output", rtol=1e-4, atol=1e-5)
        if problem and isinstance(received, Tensor) and received.shape == expected.shape and (received < 0).any():
            problem += "; it has negative values: a block ends with relu(residual + shortcut(x))"
        return problem

    return run_cases(checker, run(block_class), run(reference_class), cases, compare)


def check_basic_block(block_class: Callable) -> bool:
    """Check block_class(in_channels, width, stride, norm): conv3×3 → norm → ReLU → conv3×3 → norm, + shortcut, ReLU."""
    order = "out = relu(norm1(conv1(x))); out = norm2(conv2(out)); return relu(out + shortcut(x))"
    cases = [
        Case("8 → 8 channels, stride 1: identity shortcut", {"in_channels": 8, "width": 8, "stride": 1, "input_shape": (2, 8, 10, 12)}, order),
        Case("8 → 16 channels, stride 2: projection shortcut", {"in_channels": 8, "width": 16, "stride": 2, "input_shape": (2, 8, 10, 12)},
             "conv1 (the first 3×3) has the stride; the shortcut is a 1×1 convolution with the same stride, then a norm"),
        Case("odd input size, stride 2", {"in_channels": 8, "width": 16, "stride": 2, "input_shape": (1, 8, 9, 11)},
             "padding 1 for the 3×3 convolutions, 0 for the 1×1: a 9×11 map becomes 5×6"),
        Case("8 → 16 channels, stride 1: projection for the channels alone", {"in_channels": 8, "width": 16, "stride": 1, "input_shape": (1, 8, 7, 7)},
             "a change of channels needs the projection too, even with stride 1"),
    ]
    return _check_block("check_basic_block", block_class, BasicBlock, cases)


def check_bottleneck(block_class: Callable) -> bool:
    """Check block_class(in_channels, width, stride, norm): 1×1 → 3×3 (stride) → 1×1 to 4·width, + shortcut, ReLU."""
    order = ("out = relu(norm1(conv1(x))); out = relu(norm2(conv2(out))); out = norm3(conv3(out)); "
             "return relu(out + shortcut(x))")
    cases = [
        Case("16 → 16 channels (width 4), stride 1: identity shortcut", {"in_channels": 16, "width": 4, "stride": 1, "input_shape": (2, 16, 8, 10)}, order),
        Case("8 → 16 channels (width 4), stride 1: the first block of stage 2", {"in_channels": 8, "width": 4, "stride": 1, "input_shape": (2, 8, 8, 10)},
             "out_channels = 4 · width; the shortcut projects in_channels to 4 · width when they differ"),
        Case("16 → 32 channels (width 8), stride 2", {"in_channels": 16, "width": 8, "stride": 2, "input_shape": (2, 16, 10, 12)},
             "the stride goes on the 3×3 convolution (conv2), not on the first 1×1 (ResNet v1.5, as torchvision)"),
        Case("odd input size, stride 2", {"in_channels": 16, "width": 8, "stride": 2, "input_shape": (1, 16, 9, 11)},
             "padding 1 for the 3×3 convolution, 0 for the 1×1s: a 9×11 map becomes 5×6"),
    ]
    return _check_block("check_bottleneck", block_class, Bottleneck, cases)


# ------------------------------------------------------------------------------- feature sizes


def _resnet_feature_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """The sizes of C2..C5, read off a ResNet run on the meta device (shapes only, no arithmetic)."""
    with torch.device("meta"):
        net = ResNet(18, width=4)
        features = net(torch.zeros(1, 3, height, width))
    return [tuple(int(s) for s in f.shape[-2:]) for f in features]


def check_feature_sizes(fn: Callable) -> bool:
    """Check fn(height, width) -> [(H, W) of C2, C3, C4, C5] for a ResNet with an input of height × width."""
    rounding = "each stride-2 layer (7×7 conv, 3×3 max pool, 3×3 conv) maps n to floor((n + 2·padding - kernel) / 2) + 1"
    cases = [
        Case("800 × 1088 (multiples of 32)", {"height": 800, "width": 1088}),
        Case("800 × 1333 (not multiples of 32)", {"height": 800, "width": 1333}, rounding),
        Case("97 × 131 (odd)", {"height": 97, "width": 131}, rounding),
        Case("224 × 224", {"height": 224, "width": 224}),
        Case("33 × 65", {"height": 33, "width": 65}, rounding),
        Case("1 × 1", {"height": 1, "width": 1}, "no size ever drops below 1: padding keeps one output"),
    ]

    def compare(received, expected, case):
        try:
            got = [tuple(int(s) for s in size) for size in received]
        except (TypeError, ValueError):
            return f"expected a list of 4 (height, width) pairs, got {received!r}"
        if len(got) != 4:
            return f"expected 4 sizes (C2, C3, C4, C5), got {len(got)}"
        if got != expected:
            wrong = [f"C{i + 2}: expected {e}, got {g}" for i, (e, g) in enumerate(zip(expected, got)) if e != g]
            return "wrong sizes: " + "; ".join(wrong)
        return None

    return run_cases("check_feature_sizes", fn, _resnet_feature_sizes, cases, compare)


# ----------------------------------------------------------------------------- receptive fields


def measure_receptive_field(layers: list[tuple[int, int, int]]) -> tuple[int, int]:
    """(receptive field, stride) of a chain of (kernel_size, stride, dilation) layers, measured with gradients.

    Runs a 1-D chain of convolutions with all-ones kernels and no padding, and reads which input pixels
    the gradient of one output reaches (the receptive field, from the first to the last), and how far
    that window moves for the next output (the stride). No formula involved: it is what autograd sees.
    """
    total_stride = 1
    for _, stride, _ in layers:
        total_stride *= stride
    span = sum(dilation * (kernel_size - 1) + 1 for kernel_size, _, dilation in layers)
    length = (span + 3) * total_stride + 1  # long enough for 3 outputs
    x = torch.zeros(1, 1, length, dtype=torch.float64, requires_grad=True)
    y = x
    for kernel_size, stride, dilation in layers:
        kernel = torch.ones(1, 1, kernel_size, dtype=torch.float64)
        y = nn.functional.conv1d(y, kernel, stride=stride, dilation=dilation)
    centre = y.shape[-1] // 2
    first_grad = torch.autograd.grad(y[0, 0, centre], x, retain_graph=True)[0]
    second_grad = torch.autograd.grad(y[0, 0, centre + 1], x)[0]
    reached, reached_next = torch.nonzero(first_grad[0, 0]).flatten(), torch.nonzero(second_grad[0, 0]).flatten()
    return int(reached[-1] - reached[0] + 1), int(reached_next[0] - reached[0])


def resnet_layers(depth: int, stage: int, c5_dilation: int = 1) -> list[tuple[int, int, int]]:
    """(kernel_size, stride, dilation) of the layers on the main path of ResNet-`depth` from the input up to
    C`stage` (2..5): the stem's convolution and max pool, then every convolution of the blocks, shortcuts
    left out. c5_dilation=2 gives the "DC5" variant: stage 5 without its stride, its 3×3 convolutions dilated."""
    with torch.device("meta"):
        net = ResNet(depth, width=4)
    layers = [(7, 2, 1), (3, 2, 1)]  # stem: 7×7 stride-2 convolution, 3×3 stride-2 max pool
    for index, stage_module in enumerate(net.stages[: stage - 1]):
        for name, module in stage_module.named_modules():
            if isinstance(module, nn.Conv2d) and "shortcut" not in name:
                kernel_size, stride = module.kernel_size[0], module.stride[0]
                if index == 3 and c5_dilation != 1:
                    stride, dilation = 1, (c5_dilation if kernel_size > 1 else 1)
                else:
                    dilation = 1
                layers.append((kernel_size, stride, dilation))
    return layers


def check_receptive_field(fn: Callable) -> bool:
    """Check fn(layers: list of (kernel_size, stride, dilation)) -> (receptive field, stride) in input pixels."""
    recurrence = ("keep the stride so far, j (input pixels between neighbouring outputs); a layer with kernel k "
                  "adds (k - 1) · j to the receptive field, then multiplies j by its stride")
    dilated = "a dilation d spreads the k taps over d · (k - 1) + 1 pixels: it adds d · (k - 1) · j"
    cases = [
        Case("no layers", {"layers": []}, "with no layers each output is one input pixel: (1, 1)"),
        Case("one 3×3 convolution", {"layers": [(3, 1, 1)]}),
        Case("two 3×3 convolutions", {"layers": [(3, 1, 1), (3, 1, 1)]}, "stacked 3×3 convolutions: 3, 5, 7, ..."),
        Case("1×1 convolutions", {"layers": [(1, 1, 1), (1, 2, 1)]}, "a 1×1 convolution adds nothing, whatever its stride"),
        Case("the stem: 7×7 stride 2, max pool 3×3 stride 2", {"layers": [(7, 2, 1), (3, 2, 1)]}, recurrence),
        Case("stride first, then a 3×3", {"layers": [(2, 2, 1), (3, 1, 1)]}, recurrence),
        Case("ResNet-18 up to C3", {"layers": resnet_layers(18, 3)}, recurrence),
        Case("ResNet-50 up to C5", {"layers": resnet_layers(50, 5)}, recurrence),
        Case("one 3×3 convolution with dilation 2", {"layers": [(3, 1, 2)]}, dilated),
        Case("a dilated convolution after a stride", {"layers": [(3, 2, 1), (3, 1, 3)]}, dilated),
        Case("ResNet-50-DC5 up to C5 (dilation 2 instead of stride 2 in stage 5)",
             {"layers": resnet_layers(50, 5, c5_dilation=2)}, dilated),
    ]

    def compare(received, expected, case):
        try:
            got = tuple(int(v) for v in received)
        except (TypeError, ValueError):
            return f"expected a pair (receptive field, stride), got {received!r}"
        if len(got) != 2:
            return f"expected a pair (receptive field, stride), got {len(got)} values"
        if got != expected:
            return f"expected receptive field {expected[0]} and stride {expected[1]}, got {got[0]} and {got[1]}"
        return None

    return run_cases("check_receptive_field", fn, measure_receptive_field, cases, compare)
