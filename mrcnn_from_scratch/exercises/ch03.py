"""Checkers for chapter 03's exercises: the FPN's top-down merge, its forward pass, the sizes of the
pyramid's levels, and the level that a box is pooled from.

Each checker runs your function on fixed cases, compares it with the package's finished version
(`mrcnn_from_scratch.fpn`, `mrcnn_from_scratch.backbone` and `mrcnn_from_scratch.poolers`), and raises AssertionError on the first
case it gets wrong, showing that input. The functions it expects:

    top_down(laterals: [L2, ..., L5]) -> [M2, ..., M5]
        M5 = L5 and M_k = L_k + nearest-neighbour upsampling of M_{k+1} to L_k's size; no convolutions.
    fpn_forward(features: [C2, ..., C5], lateral_convs, output_convs) -> [P2, P3, P4, P5, P6]
        lateral_convs[i] and output_convs[i] are the 1×1 and 3×3 convolutions of level i + 2.
    pyramid_shapes(height, width) -> [(h2, w2), ..., (h6, w6)]
        the spatial sizes of P2..P6 that a ResNet-FPN gives for an image of height × width.
    roi_levels(boxes: Tensor[K, 4]) -> Tensor[K] int64
        the FPN level k in 2..5 that each (x1, y1, x2, y2) box is pooled from.

Lists of feature maps work for any number of levels, not only four.
"""
import functools
import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..backbone import ResNet
from ..fpn import BackboneWithFPN, FeaturePyramidNetwork
from ..poolers import box_levels
from ._checking import Case, keeping_random_state, run_cases, tensor_problem

# The levels that the RoI heads pool from: P2..P5.
MIN_LEVEL, MAX_LEVEL = 2, 5


class FeatureMaps(list):
    """A list of feature maps that prints as their shapes, so that a failure message stays short."""

    def __repr__(self) -> str:
        return "[" + ", ".join(f"Tensor{list(t.shape)}" if isinstance(t, Tensor) else repr(t) for t in self) + "]"


def _as_feature_maps(output: Any) -> Any:
    """A list, tuple or dict of tensors as FeatureMaps (dicts by their values, in order); else unchanged."""
    if isinstance(output, dict):
        return FeatureMaps(output.values())
    if isinstance(output, (list, tuple)):
        return FeatureMaps(output)
    return output


def _call_with_copies(fn: Callable) -> Callable:
    """fn on copies of any lists of feature maps (run_cases copies tensors, not lists), its output as FeatureMaps."""

    def wrapped(*args):
        args = [FeatureMaps(t.clone() for t in a) if isinstance(a, FeatureMaps) else a for a in args]
        return _as_feature_maps(fn(*args))

    return wrapped


def _maps_problem(received: Any, expected: FeatureMaps, names: list[str], rtol: float, atol: float) -> str | None:
    """What is wrong with a list of maps next to the expected one, naming the first wrong map; None if right."""
    if not isinstance(received, FeatureMaps):
        return f"return a list of {len(expected)} tensors [{', '.join(names)}], got {type(received).__name__}"
    if len(received) != len(expected):
        return f"return {len(expected)} maps [{', '.join(names)}], got {len(received)}"
    for name, got, want in zip(names, received, expected):
        problem = tensor_problem(got, want, name, rtol=rtol, atol=atol * max(want.abs().max().item(), 1.0))
        if problem:
            return problem
    return None


def _odd_sizes(height: int, width: int, levels: int = 4) -> list[tuple[int, int]]:
    """Sizes of C2, C3, ... for an image of height × width: every stride-2 layer rounds up."""
    sizes, h, w = [], math.ceil(height / 4), math.ceil(width / 4)
    for _ in range(levels):
        sizes.append((h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return sizes


def _random_maps(sizes: list[tuple[int, int]], channels: list[int], seed: int, batch: int = 1) -> FeatureMaps:
    g = torch.Generator().manual_seed(seed)
    return FeatureMaps(torch.randn(batch, c, h, w, generator=g) for (h, w), c in zip(sizes, channels))


def _level_names(first: int, count: int, letter: str) -> list[str]:
    return [f"{letter}{first + i}" for i in range(count)]


# --------------------------------------------------------------------------------- top-down merge

def _identity_fpn(channels: int, levels: int) -> FeaturePyramidNetwork:
    """The package's FPN with identity convolutions: its outputs P2.. are then the merged maps M2.."""
    fpn = FeaturePyramidNetwork([channels] * levels, channels)
    eye = torch.eye(channels)
    with torch.no_grad():
        for lateral, output in zip(fpn.lateral_convs, fpn.output_convs):
            lateral.weight.copy_(eye[:, :, None, None])
            output.weight.zero_()
            output.weight[:, :, 1, 1] = eye  # a 3×3 kernel that is 1 at its centre passes the map through
            lateral.bias.zero_()
            output.bias.zero_()
    return fpn


def reference_top_down(laterals: list[Tensor]) -> FeatureMaps:
    """[L2, ..., L5] -> [M2, ..., M5], computed by the package's FeaturePyramidNetwork with identity convolutions."""
    fpn = _identity_fpn(laterals[0].shape[1], len(laterals))
    with torch.no_grad():
        return FeatureMaps(list(fpn(list(laterals)).values())[: len(laterals)])


@keeping_random_state
def check_top_down(fn: Callable) -> bool:
    """Check fn(laterals [L2, ..., L5]) -> [M2, ..., M5] against the package's FPN with identity convolutions."""
    odd = "upsample to the lateral map's size (F.interpolate(..., size=lateral.shape[-2:])): with odd sizes it is not exactly ×2"
    running = "M_k = L_k + up(M_{k+1}): add the *merged* map from above, not the lateral map L_{k+1}"
    nearest = "nearest-neighbour upsampling copies each value into a 2×2 block (mode='nearest', no interpolation)"
    cases = [
        Case("a 64×64 image's sizes, 8 channels", {"laterals": _random_maps(_odd_sizes(64, 64), [8] * 4, 0)}, running),
        Case("a 128×96 image's sizes, batch of 2", {"laterals": _random_maps(_odd_sizes(128, 96), [4] * 4, 1, batch=2)}, nearest),
        Case("a 100×75 image's sizes (odd: 25×19, 13×10, 7×5, 4×3)", {"laterals": _random_maps(_odd_sizes(100, 75), [4] * 4, 2)}, odd),
        Case("a 333×517 image's sizes", {"laterals": _random_maps(_odd_sizes(333, 517), [2] * 4, 3)}, odd),
        Case("three levels", {"laterals": _random_maps(_odd_sizes(96, 64, levels=3), [4] * 3, 4)},
             "loop over however many levels there are, from the top one down"),
        Case("one level", {"laterals": _random_maps(_odd_sizes(32, 32, levels=1), [4], 5)},
             "with one level there is nothing to merge: M = L"),
    ]

    def compare(received, expected, case):
        names = _level_names(2, len(expected), "M")
        return _maps_problem(received, expected, names, rtol=1e-5, atol=1e-6)

    return run_cases("check_top_down", _call_with_copies(fn), reference_top_down, cases, compare)


# ------------------------------------------------------------------------------------ FPN forward

def _fpn_case(in_channels: list[int], out_channels: int, image_size: tuple[int, int], seed: int, batch: int = 1) -> dict:
    """Inputs for fn(features, lateral_convs, output_convs): random C_k and a random package FPN's weights,
    loaded into plain ModuleLists of 1×1 and 3×3 convolutions."""
    torch.manual_seed(seed)  # the FPN initializes itself from the global generator (check_* restore it)
    fpn = FeaturePyramidNetwork(in_channels, out_channels)
    for conv in [*fpn.lateral_convs, *fpn.output_convs]:
        nn.init.uniform_(conv.bias, -0.5, 0.5)  # the package starts biases at 0; make them count
    lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
    output_convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
    lateral_convs.load_state_dict(fpn.lateral_convs.state_dict())
    output_convs.load_state_dict(fpn.output_convs.state_dict())
    features = _random_maps(_odd_sizes(*image_size, levels=len(in_channels)), in_channels, seed + 100, batch)
    return {"features": features, "lateral_convs": lateral_convs, "output_convs": output_convs}


def reference_fpn_forward(features: list[Tensor], lateral_convs: nn.ModuleList, output_convs: nn.ModuleList) -> FeatureMaps:
    """[C2, ..., C5] -> [P2, ..., P6] by the package's FeaturePyramidNetwork holding the given convolutions' weights."""
    fpn = FeaturePyramidNetwork([c.in_channels for c in lateral_convs], lateral_convs[0].out_channels)
    fpn.lateral_convs.load_state_dict(lateral_convs.state_dict())
    fpn.output_convs.load_state_dict(output_convs.state_dict())
    with torch.no_grad():
        return FeatureMaps(fpn(list(features)).values())


@keeping_random_state
def check_fpn_forward(fn: Callable) -> bool:
    """Check fn(features [C2, ..., C5], lateral_convs, output_convs) -> [P2, ..., P6] against the package's FPN."""
    p6 = ("P6 = F.max_pool2d(P5, kernel_size=1, stride=2): the top *output* P5 (after its 3×3), subsampled; "
          "a 1×1 kernel keeps every other value, and odd sizes round up")
    order = ("lateral 1×1 on every C_k, top-down merge from C5 down (upsample to the lateral's size, add), "
             "then the 3×3 on every merged map; no activations anywhere")
    cases = [
        Case("4 levels, a 64×64 image", _fpn_case([8, 16, 32, 64], 16, (64, 64), 0), order),
        Case("4 levels, a 100×75 image (odd sizes)", _fpn_case([8, 16, 32, 64], 16, (100, 75), 1),
             "upsample to the lateral map's size (size=lateral.shape[-2:]), not by scale_factor=2; " + p6),
        Case("4 levels, a batch of 2", _fpn_case([4, 8, 16, 32], 8, (96, 128), 2, batch=2), p6),
        Case("ResNet-50's channels, 32 output channels", _fpn_case([256, 512, 1024, 2048], 32, (64, 96), 3), order),
        Case("3 levels", _fpn_case([8, 16, 32], 8, (80, 48), 4), "loop over however many levels there are"),
    ]

    def compare(received, expected, case):
        names = _level_names(2, len(expected) - 1, "P") + [f"P{len(expected) + 1} (the max-pooled top level)"]
        return _maps_problem(received, expected, names, rtol=1e-4, atol=1e-5)

    with torch.no_grad():
        return run_cases("check_fpn_forward", _call_with_copies(fn), reference_fpn_forward, cases, compare)


# --------------------------------------------------------------------------------- pyramid shapes

@functools.lru_cache(maxsize=1)
def _thin_resnet_fpn() -> BackboneWithFPN:
    """A ResNet-18-FPN one channel wide: the same layers, strides and paddings as a real one, but cheap."""
    return BackboneWithFPN(ResNet(18, width=1), out_channels=1).eval()


def reference_pyramid_shapes(height: int, width: int) -> list[tuple[int, int]]:
    """The sizes of P2..P6 for an image of height × width, measured on the package's ResNet-18-FPN (one channel wide)."""
    with torch.no_grad():
        pyramid = _thin_resnet_fpn()(torch.zeros(1, 3, height, width))
    return [tuple(p.shape[-2:]) for p in pyramid.values()]


@keeping_random_state
def check_pyramid_shapes(fn: Callable) -> bool:
    """Check fn(height, width) -> [(h, w) of P2, ..., P6] against a real ResNet-FPN's outputs."""
    rounding = ("every stride-2 layer (the stem's conv and max pool, the first block of stages 3–5, and P6's "
                "subsampling) maps a side s to ceil(s / 2), not s // 2")
    sizes = [(800, 1216), (64, 64), (333, 517), (100, 75), (801, 1333), (37, 5), (1, 1)]
    cases = [Case(f"a {h}×{w} image", {"height": h, "width": w}, rounding) for h, w in sizes]

    def compare(received, expected, case):
        try:
            got = [tuple(int(v) for v in size) for size in received]
        except (TypeError, ValueError):
            return "return a list of 5 (height, width) pairs, for P2, P3, P4, P5 and P6"
        if len(got) != len(expected):
            return f"return {len(expected)} (height, width) pairs, for P2..P6; got {len(got)}"
        for k, (g, e) in enumerate(zip(got, expected), start=2):
            if g != e:
                return f"P{k} should be {e[0]}×{e[1]}, got {g[0]}×{g[1]}"
        return None

    return run_cases("check_pyramid_shapes", fn, reference_pyramid_shapes, cases, compare)


# ------------------------------------------------------------------------------ RoI level mapping

def reference_roi_levels(boxes: Tensor) -> Tensor:
    """Tensor[K, 4] boxes -> Tensor[K] int64 levels: floor(4 + log2(sqrt(wh) / 224) + 1e-6) clamped to [2, 5].

    The rule of the package's multi-scale RoIAlign (`poolers.box_levels`, which counts from P2 as index 0).
    """
    return box_levels(boxes, MIN_LEVEL, MAX_LEVEL) + MIN_LEVEL


def _square_boxes(*sides: float) -> Tensor:
    return torch.tensor([[10.0, 20.0, 10.0 + s, 20.0 + s] for s in sides]).reshape(-1, 4)


@keeping_random_state
def check_roi_levels(fn: Callable) -> bool:
    """Check fn(boxes Tensor[K, 4]) -> Tensor[K] int64 of levels 2..5 against floor(4 + log2(sqrt(wh)/224)) in [2, 5]."""
    formula = "k = floor(4 + log2(sqrt(w·h) / 224)), then clamp to [2, 5]; return the level k itself (2..5), as int64"
    clamp = "clamp k to [2, 5]: tiny boxes go to P2, huge ones to P5 (P6 is for the RPN only)"
    g = torch.Generator().manual_seed(0)
    corners = torch.rand(12, 2, generator=g) * 300
    random_boxes = torch.cat([corners, corners + 4 + torch.rand(12, 2, generator=g) ** 2 * 700], dim=1)
    cases = [
        Case("squares of side 224, 112, 448 and 300", {"boxes": _square_boxes(224, 112, 448, 300)}, formula),
        Case("just below and at each boundary", {"boxes": _square_boxes(111.5, 112, 223.5, 224, 447, 448)},
             "floor, not round: a 223-pixel box is still on P3"),
        Case("tiny and huge squares", {"boxes": _square_boxes(4, 20, 60, 900, 1400)}, clamp),
        Case("long thin boxes", {"boxes": torch.tensor([[0.0, 0.0, 448.0, 112.0], [5.0, 5.0, 29.0, 605.0], [0.0, 0.0, 900.0, 8.0]])},
             "the size of a box is sqrt(w·h), the side of the square with its area"),
        Case("random boxes", {"boxes": random_boxes}, formula),
        Case("a box of zero area", {"boxes": torch.tensor([[5.0, 5.0, 5.0, 40.0], [0.0, 0.0, 50.0, 50.0]])},
             "log2(0) is -inf: clamp before converting to int64"),
        Case("no boxes", {"boxes": torch.zeros(0, 4)}, "the result is an empty Tensor[0] of int64"),
    ]

    def compare(received, expected, case):
        problem = tensor_problem(received, expected, "the levels")
        if problem and isinstance(received, Tensor) and received.shape == expected.shape and len(expected):
            if torch.equal(received.to(torch.int64), expected - MIN_LEVEL):
                problem += " (these are the levels minus 2: return k itself, 2 for P2 ... 5 for P5)"
        return problem

    return run_cases("check_roi_levels", fn, reference_roi_levels, cases, compare)
