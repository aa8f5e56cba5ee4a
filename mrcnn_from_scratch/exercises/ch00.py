"""Checkers for chapter 00's exercises: COCO boxes and the transform's sizes.

Each checker runs your function on fixed cases, compares it with the package's finished version (the
dataset's box conversion in `mrcnn_from_scratch.data` and the model's `ImageTransform`), and raises
AssertionError on the first case it gets wrong, showing that input. The functions it expects:

    coco_to_xyxy(bboxes: list of [x, y, w, h]) -> Tensor[N, 4] float32 (x1, y1, x2, y2)
    transformed_size(height, width, min_size, max_size) -> ((h, w), (H, W))
        the image's size after the model's resize, and the padded batch's size (multiples of 32).
"""
import math
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ..config import MaskRCNNConfig
from ..data.coco import CocoInstances
from ..data.shapes import image_rng, make_shapes_image, mask_to_annotation
from ..transform import ImageTransform
from ._checking import Case, keeping_random_state, run_cases, tensor_problem

_DEFAULTS = MaskRCNNConfig()  # torchvision's settings: 800 / 1333, ImageNet's mean and std

# --------------------------------------------------------------------------------- COCO boxes


def reference_coco_to_xyxy(bboxes: list[list[float]]) -> Tensor:
    """What `CocoInstances` does to each annotation's bbox, without its clipping to the image."""
    return CocoInstances._boxes([{"bbox": list(b)} for b in bboxes], height=math.inf, width=math.inf)


def check_coco_to_xyxy(fn: Callable) -> bool:
    """Check fn(bboxes: list of [x, y, w, h]) -> Tensor[N, 4] float32 (x1, y1, x2, y2)."""
    formula = "x2 = x + w and y2 = y + h: COCO's (x, y) is the top-left corner, and w, h are the sizes"
    cases = [
        Case("one box", {"bboxes": [[10, 20, 30, 40]]}, formula),
        Case("the objects of a shapes image", {"bboxes": _shapes_bboxes(0)}, formula),
        Case("fractional coordinates, as in COCO's own files",
             {"bboxes": [[473.07, 395.93, 38.65, 28.67], [204.86, 31.02, 254.88, 324.12], [0.0, 0.5, 1.25, 0.75]]},
             "no rounding and no +1: coordinates are edges between pixels, so the width is exactly w"),
        Case("a box at the image's origin", {"bboxes": [[0, 0, 128, 128]]}, formula),
        Case("no boxes", {"bboxes": []}, "an image without objects gives Tensor[0, 4]: torch.tensor([]) has shape [0]"),
    ]

    def compare(received, expected, case):
        return tensor_problem(received, expected, "the box tensor", rtol=1e-6, atol=1e-5)

    return run_cases("check_coco_to_xyxy", fn, reference_coco_to_xyxy, cases, compare)


def _shapes_bboxes(index: int) -> list[list[int]]:
    """The COCO bboxes of one generated shapes image (train split, seed 0), as the generator writes them."""
    _, masks, _ = make_shapes_image(image_rng(0, "train", index))
    return [mask_to_annotation(mask)["bbox"] for mask in masks]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# ---------------------------------------------------------------------- the transform's sizes


def _transform(min_size: int, max_size: int) -> ImageTransform:
    return ImageTransform(min_size, max_size, _DEFAULTS.image_mean, _DEFAULTS.image_std).eval()


def _resized_batch(height: int, width: int, min_size: int, max_size: int) -> tuple[Tensor, tuple[int, int]]:
    """The model's transform on an empty image of that size: the padded batch and the resized size.

    The image and the transform's buffers (mean, std) live on the "meta" device: shapes but no data, so
    nothing is computed."""
    with torch.device("meta"):
        batch, image_sizes, _ = _transform(min_size, max_size)([torch.zeros(3, height, width)])
    return batch, tuple(image_sizes[0])


def reference_transformed_size(height: int, width: int, min_size: int = 800, max_size: int = 1333
                               ) -> tuple[tuple[int, int], tuple[int, int]]:
    """((h, w) after the model's resize, (H, W) of the batch padded to multiples of 32), from ImageTransform."""
    batch, resized = _resized_batch(height, width, min_size, max_size)
    return resized, tuple(batch.shape[-2:])


def _size_case(height: int, width: int, min_size: int, max_size: int, name: str = "", hint: str = "") -> Case:
    name = name or f"a {height}×{width} image, min_size {min_size}, max_size {max_size}"
    return Case(name, {"height": height, "width": width, "min_size": min_size, "max_size": max_size}, hint)


def _size_cases(hint: str) -> list[Case]:
    cap = "scale = min(min_size / short side, max_size / long side): a long image is limited by max_size"
    floor = ("each side becomes floor(side · scale), as F.interpolate computes it, so 193 · (800 / 193) "
             "gives 799 in floating point, not 800: compute the size from the scale, do not set it")
    return [
        _size_case(480, 640, 800, 1333, hint=hint),
        _size_case(427, 640, 800, 1333, hint=hint),
        _size_case(128, 128, 128, 128, "a 128×128 shapes image, the small config (128, 128)", hint),
        _size_case(1000, 3000, 800, 1333, "a panorama, 1000×3000", cap),
        _size_case(640, 480, 800, 1333, "a portrait image, 640×480", "height comes first: (h, w) and (H, W)"),
        _size_case(800, 1024, 800, 1333, "already 800×1024: nothing to resize or pad",
                   "pad to the next multiple of 32 only if the side is not one already: ceil(side / 32) · 32"),
        _size_case(193, 257, 800, 1333, "a 193×257 image", floor),
        _size_case(100, 200, 128, 128, "a 100×200 image, the small config", cap),
    ]


@keeping_random_state
def check_transformed_size(fn: Callable) -> bool:
    """Check fn(height, width, min_size, max_size) -> ((h, w) resized, (H, W) padded) against ImageTransform."""
    steps = ("scale = min(min_size / short side, max_size / long side); h, w = floor(side · scale); "
             "H, W = each rounded up to a multiple of 32")

    def compare(received, expected, case):
        try:
            (h, w), (ph, pw) = received
        except (TypeError, ValueError):
            return f"return ((h, w), (H, W)), two pairs of ints, got {received!r}"
        if not all(_is_int(side) for side in (h, w, ph, pw)):
            return f"the sizes should be ints (pixels are whole), got {received!r}"
        got = ((h, w), (ph, pw))
        if got[0] != expected[0]:
            return f"the resized size should be {expected[0]}, got {got[0]}"
        if got[1] != expected[1]:
            return f"the padded size should be {expected[1]}, got {got[1]}"
        return None

    return run_cases("check_transformed_size", fn, reference_transformed_size, _size_cases(steps), compare)
