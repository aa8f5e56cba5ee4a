"""Checkers for chapter 03's exercises: the FPN's top-down merge, what its 3×3 output convolutions are
worth (an experiment), and the level that a box is pooled from.

Each checker runs your function on fixed cases, compares it with the package's finished version
(`mrcnn_from_scratch.fpn`, `mrcnn_from_scratch.backbone` and `mrcnn_from_scratch.poolers`), and raises AssertionError on the first
case it gets wrong, showing that input. The functions it expects:

    top_down(laterals: [L2, ..., L5]) -> [M2, ..., M5]
        M5 = L5 and M_k = L_k + nearest-neighbour upsampling of M_{k+1} to L_k's size; no convolutions.
    build(seed) -> (backbone, rpn)
        chapter 04's small RPN (`rpn_lab.build_rpn(seed=seed)`) with the FPN's 3×3 output convolutions
        replaced by the identity; the checker trains it and holds your prediction against its recall.
    roi_levels(boxes: Tensor[K, 4]) -> Tensor[K] int64
        the FPN level k in 2..5 that each (x1, y1, x2, y2) box is pooled from.

Lists of feature maps work for any number of levels, not only four.
"""
import math
from typing import Any, Callable

import torch
from torch import Tensor

from ..fpn import FeaturePyramidNetwork
from ..poolers import box_levels
from ._checking import Case, keeping_random_state, run_cases, tensor_problem
from ._experiments import rpn_experiment

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


# ------------------------------------------------------------- predict, then measure: the 3×3 output conv

def check_output_conv_experiment(build: Callable, prediction, baseline: dict | None = None, iterations: int = 250,
                                 train_count: int = 1000, val_count: int = 100) -> dict:
    """Exercise 2: build(seed) -> (backbone, rpn), rpn_lab's bench with P_k = M_k (no 3×3 output convolutions).

    Checks the variant, trains it (and the bench unchanged, unless `baseline` gives its recall_by_size) and
    holds `prediction` (recall at IoU 0.7 with 100 proposals) against the measurement, ± 0.1.
    """
    hint = ("start from backbone, rpn = rpn_lab.build_rpn(seed=seed) and replace every module of "
            "backbone.fpn.output_convs by nn.Identity(); or call rpn_lab.build_rpn(output_convs=False, seed=seed)")
    why = ("the 3×3 convolutions are 36,928 parameters per level here, and the RPN head has a 3×3 convolution of "
           "its own, which can smooth the 2×2 steps of the upsampling too; what the output convolutions add on "
           "top of that is the measured difference. On COCO's 256 channels and 80 classes the FPN paper kept them.")
    return rpn_experiment("check_output_conv_experiment", build, prediction, {"output_convs": False}, hint, why,
                          baseline, iterations, train_count, val_count)
