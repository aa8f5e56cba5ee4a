"""Checkers for chapter 00's exercises: COCO boxes, objects per class, the transform's sizes, anchor counts.

Each checker runs your function on fixed cases, compares it with the package's finished version (the
dataset's box conversion in `mrcnn_from_scratch.data`, the model's `ImageTransform`, its backbone and
its `AnchorGenerator`) or, for the counts, with a plain reference, and raises AssertionError on the
first case it gets wrong, showing that input. The functions it expects:

    coco_to_xyxy(bboxes: list of [x, y, w, h]) -> Tensor[N, 4] float32 (x1, y1, x2, y2)
    objects_per_class(coco_json: dict, a COCO instances file as json.load gives it) -> {category name: count}
        every category of the file is a key (0 if it has no objects); crowd annotations are not counted.
    transformed_size(height, width, min_size, max_size) -> ((h, w), (H, W))
        the image's size after the model's resize, and the padded batch's size (multiples of 32).
    count_anchors(height, width, min_size, max_size) -> int
        how many anchors the RPN scores on P2–P6 for one image of height × width, 3 per cell.
"""
import math
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ..anchors import AnchorGenerator
from ..backbone import ResNet
from ..config import MaskRCNNConfig
from ..data.coco import CocoInstances
from ..data.shapes import CATEGORIES, image_rng, make_shapes_image, mask_to_annotation
from ..fpn import BackboneWithFPN
from ..transform import ImageTransform
from ._checking import Case, keeping_random_state, run_cases, tensor_problem

_DEFAULTS = MaskRCNNConfig()  # torchvision's settings: 800 / 1333, anchors 32..512 at 3 aspect ratios

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


# ---------------------------------------------------------------------------- objects per class


def reference_objects_per_class(coco_json: dict) -> dict[str, int]:
    """{name: number of non-crowd annotations} over every category of a COCO instances dict."""
    names = {category["id"]: category["name"] for category in coco_json["categories"]}
    counts = {name: 0 for name in names.values()}
    for annotation in coco_json["annotations"]:
        if not annotation.get("iscrowd", 0):
            counts[names[annotation["category_id"]]] += 1
    return counts


def _coco_dict(categories: list[tuple[int, str]], annotations: list[tuple[int, int]]) -> dict:
    """A minimal COCO instances dict: categories (id, name) and annotations (category_id, iscrowd)."""
    return {
        "images": [{"id": 1, "file_name": "000000.png", "height": 100, "width": 100}],
        "annotations": [{"id": i + 1, "image_id": 1, "category_id": c, "iscrowd": crowd, "bbox": [0, 0, 10, 10],
                         "area": 100} for i, (c, crowd) in enumerate(annotations)],
        "categories": [{"id": i, "name": name, "supercategory": "thing"} for i, name in categories],
    }


def _shapes_dict(images: int) -> dict:
    """The annotations of the first `images` shapes images (train split, seed 0), as a COCO dict."""
    annotations = []
    for index in range(images):
        _, masks, labels = make_shapes_image(image_rng(0, "train", index))
        for mask, label in zip(masks, labels):
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": int(label),
                                **mask_to_annotation(mask)})
    return {
        "images": [{"id": i + 1, "file_name": f"{i:06d}.png", "height": 128, "width": 128} for i in range(images)],
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CATEGORIES)],
    }


class CocoDict(dict):
    """A COCO dict that prints as a summary, so that a failure message stays short."""

    def __repr__(self) -> str:
        categories = [(c["id"], c["name"]) for c in self["categories"]]
        annotations = [(a["category_id"], a.get("iscrowd", 0)) for a in self["annotations"]]
        shown = annotations if len(annotations) <= 12 else annotations[:12] + ["..."]
        return (f"{{'categories' (id, name): {categories}, {len(self['images'])} images, "
                f"{len(annotations)} 'annotations' (category_id, iscrowd): {shown}}}")


def _coco_args(categories: list[tuple[int, str]], annotations: list[tuple[int, int]]) -> dict[str, Any]:
    """A case's arguments: a minimal COCO dict of categories (id, name) and annotations (category_id, iscrowd)."""
    return {"coco_json": CocoDict(_coco_dict(categories, annotations))}


def check_objects_per_class(fn: Callable) -> bool:
    """Check fn(coco_json: COCO instances dict) -> {category name: number of non-crowd annotations}."""
    by_id = "look each annotation's category_id up in coco_json['categories']: ids are not positions in that list"
    cases = [
        Case("three categories",
             _coco_args([(1, "square"), (2, "circle"), (3, "triangle")],
                        [(1, 0), (2, 0), (2, 0), (3, 0), (1, 0), (2, 0)]),
             "count the annotations of each category and key the counts by the category's name"),
        Case("20 shapes images", {"coco_json": CocoDict(_shapes_dict(20))}),
        Case("a category without objects", _coco_args([(1, "cat"), (2, "dog"), (3, "bird")], [(1, 0), (3, 0), (1, 0)]),
             "every category of the file is a key, with 0 if no annotation uses it"),
        Case("category ids with gaps, as COCO's 1..90",
             _coco_args([(1, "person"), (18, "dog"), (90, "toothbrush")], [(18, 0), (90, 0), (1, 0), (18, 0)]), by_id),
        Case("categories listed out of order", _coco_args([(3, "c"), (1, "a"), (2, "b")], [(1, 0), (3, 0), (3, 0)]),
             by_id),
        Case("crowd annotations", _coco_args([(1, "person"), (2, "car")], [(1, 0), (1, 1), (2, 0), (1, 0), (2, 1)]),
             "leave out annotations with iscrowd = 1, as CocoInstances does: a crowd is not one object"),
        Case("no annotations", _coco_args([(1, "square"), (2, "circle")], []), "every category counts 0"),
    ]

    def compare(received, expected, case):
        if not isinstance(received, dict):
            return f"return a dict {{category name: count}}, got {type(received).__name__}"
        if set(received) != set(expected):
            missing = sorted(set(expected) - set(received), key=str)
            extra = sorted(set(received) - set(expected), key=str)
            parts = [f"missing keys {missing}"] * bool(missing) + [f"unexpected keys {extra}"] * bool(extra)
            return f"the keys should be the category names {sorted(expected)}: " + ", ".join(parts)
        not_ints = [f"{name!r}: {count!r}" for name, count in received.items() if not _is_int(count)]
        if not_ints:
            return "the counts should be Python ints (use int(...) on a tensor), got " + ", ".join(not_ints)
        wrong = [f"{name}: expected {count}, got {received[name]}" for name, count in expected.items()
                 if received[name] != count]
        return "wrong counts: " + "; ".join(wrong) if wrong else None

    return run_cases("check_objects_per_class", fn, reference_objects_per_class, cases, compare)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# ---------------------------------------------------------------------- the transform's sizes


def _transform(min_size: int, max_size: int) -> ImageTransform:
    return ImageTransform(min_size, max_size, _DEFAULTS.image_mean, _DEFAULTS.image_std).eval()


def _resized_batch(height: int, width: int, min_size: int, max_size: int) -> tuple[Tensor, tuple[int, int]]:
    """The model's transform on an empty image of that size: the padded batch and the resized size.

    The image lives on the "meta" device: it has a shape but no data, so nothing is computed."""
    batch, image_sizes, _ = _transform(min_size, max_size)([torch.zeros(3, height, width, device="meta")])
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


# ---------------------------------------------------------------------------------- anchor counts


def reference_count_anchors(height: int, width: int, min_size: int = 800, max_size: int = 1333) -> int:
    """The number of anchors the package's RPN scores for one image: its transform, a ResNet-FPN and
    its AnchorGenerator, run on the meta device (shapes only, nothing computed)."""
    batch, _ = _resized_batch(height, width, min_size, max_size)
    with torch.device("meta"):
        # One channel wide: the same layers, strides and paddings as a real ResNet-18-FPN, but no cost.
        backbone = BackboneWithFPN(ResNet(18, width=1), out_channels=1).eval()
        anchors = AnchorGenerator(tuple((s,) for s in _DEFAULTS.anchor_sizes),
                                  (tuple(_DEFAULTS.aspect_ratios),) * len(_DEFAULTS.anchor_sizes))
        pyramid = backbone(batch)
        return len(anchors(tuple(batch.shape[-2:]), list(pyramid.values())))


@keeping_random_state
def check_count_anchors(fn: Callable) -> bool:
    """Check fn(height, width, min_size, max_size) -> int, the number of anchors on P2–P6, 3 per cell."""
    levels = ("resize and pad as in transformed_size; P2..P5 are the padded size / 4, 8, 16, 32, and P6, P5 "
              "subsampled with stride 2, has ceil(P5 / 2) cells a side; anchors = 3 · the cells of all five levels")

    def compare(received, expected, case):
        if not _is_int(received):
            return f"return the count as an int, got {type(received).__name__} {received!r}"
        if received != expected:
            if received == 3 * expected:
                return f"expected {expected}, got {received}: 3 times too many; one size per level, 3 ratios"
            return f"expected {expected} anchors, got {received}"
        return None

    return run_cases("check_count_anchors", fn, reference_count_anchors, _size_cases(levels), compare)
