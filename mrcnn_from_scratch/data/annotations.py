"""What makes a COCO annotation file, and each annotation in it, usable: the rules that CocoInstances
applies to each image it loads and that `mrcnn_from_scratch.data.check` applies to a whole split.

`read_annotations` reads a file (or raises a DataError naming it); the other rules return what is wrong
with one annotation, in words (None if nothing is), and their callers add the file, image and annotation
ids; `empty_after_clipping` says which boxes to drop.
"""
import json
import math
from pathlib import Path

import numpy as np

from .errors import DataError

# How far (in pixels) a box may stick out of its image: exporters round coordinates, so a box often ends
# a fraction of a pixel past the edge. Such boxes are clipped to the image.
BOX_TOLERANCE = 1.0


def read_annotations(ann_file: str | Path) -> dict:
    """The JSON of a COCO instances file, with its three lists; DataError naming the file otherwise."""
    ann_file = Path(ann_file)
    if ann_file.is_dir():
        raise DataError(f"{ann_file}: is a folder, not an annotation file")
    try:
        text = ann_file.read_bytes()
        dataset = json.loads(text)
    except FileNotFoundError:
        raise DataError(f"{ann_file}: annotation file not found") from None
    except json.JSONDecodeError as error:
        # A JSON object ends with "}": a file that does not was cut short (an interrupted copy or download).
        cut = "; the file ends too soon: was it copied whole?" if not text.rstrip().endswith(b"}") else ""
        where = f"line {error.lineno}, column {error.colno}"
        raise DataError(f"{ann_file}: not valid JSON: {error.msg} at {where}{cut}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{ann_file}: cannot read it: {error}") from None
    if not isinstance(dataset, dict):
        raise DataError(f"{ann_file}: expected a JSON object with images, annotations and categories")
    # The keys pycocotools indexes by: without them it fails with a bare KeyError.
    required = {"images": ("id",), "annotations": ("id", "image_id", "category_id"), "categories": ("id",)}
    for key, fields in required.items():
        entries = dataset.setdefault(key, [])  # a file of images without annotations may leave them out
        if not isinstance(entries, list):
            raise DataError(f"{ann_file}: '{key}' must be a list, got {type(entries).__name__}")
        for number, entry in enumerate(entries):
            if not (isinstance(entry, dict) and all(isinstance(entry.get(f), int) for f in fields)):
                raise DataError(f"{ann_file}: {key}[{number}] must be an object with the whole numbers "
                                f"{', '.join(fields)}; got {str(entry)[:100]}")
    return dataset


def all_numbers(values: list) -> bool:
    """True if every value is a finite int or float (True and False are not numbers here). In C, not a
    Python loop: COCO's training file holds tens of millions of polygon coordinates."""
    if not set(map(type, values)) <= {int, float}:
        return False
    try:
        return math.isfinite(sum(values))
    except OverflowError:  # an integer beyond float's range
        return False


def rle_counts(counts: str) -> list[int] | None:
    """The run lengths of COCO's compressed RLE string, or None if it is not one.

    Each count is a signed number in 5-bit groups, one character each (48 + group, bit 0x20: more
    groups follow); from the third count on, each is stored as its difference from the count two before.
    This mirrors pycocotools' rleFrString, which does not check its input and decodes garbage into
    garbage masks: hence this check."""
    runs, value, shift = [], 0, 0
    for char in counts:
        group = ord(char) - 48
        if not 0 <= group < 64:
            return None
        value |= (group & 0x1F) << shift
        shift += 5
        if group & 0x20:
            continue
        if group & 0x10:  # the sign bit of the last group
            value -= 1 << shift
        runs.append(value + runs[-2] if len(runs) > 2 else value)
        value, shift = 0, 0
    return runs if shift == 0 else None


def segmentation_problem(segmentation, height: int, width: int) -> str | None:
    """What is wrong with a polygon list or RLE dict for an image of height × width, or None."""
    if isinstance(segmentation, list):  # polygons [x1, y1, x2, y2, ...], one per part of the object
        if not segmentation:
            return "empty list of polygons"
        for polygon in segmentation:
            if not isinstance(polygon, list) or not all_numbers(polygon):
                return f"a polygon must be a list of numbers, got {str(polygon)[:60]}"
            if len(polygon) < 6 or len(polygon) % 2:
                return f"a polygon needs at least 3 (x, y) points, got {len(polygon)} numbers"
        return None
    if isinstance(segmentation, dict):  # run-length encoded, compressed (str) or not (list of counts)
        if list(segmentation.get("size", [])) != [height, width]:
            return f"RLE size {segmentation.get('size')} is not the image's [{height}, {width}]"
        counts = segmentation.get("counts")
        if isinstance(counts, str):
            runs = rle_counts(counts)
        elif isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            runs = counts
        else:
            return f"RLE counts must be a string or a list of whole numbers, got {type(counts).__name__}"
        if runs is None or any(run < 0 for run in runs) or sum(runs) != height * width:
            return f"RLE counts do not decode to the {height}×{width} image's {height * width} pixels"
        return None
    return f"segmentation must be polygons or RLE, got {type(segmentation).__name__}"


def annotation_problem(ann: dict, image: dict, category_ids: set) -> str | None:
    """What stops `ann` from becoming a target of `image`, or None. (Empty boxes are not a problem here:
    see empty_after_clipping.)"""
    if ann.get("category_id") not in category_ids:
        return f"unknown category id {ann.get('category_id')!r} (the file has {sorted(category_ids)})"
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all_numbers(bbox):
        return f"bbox must be [x, y, w, h], four numbers, got {bbox!r}"
    if not all_numbers([ann.get("area")]):
        return (f"area must be a number, got {ann.get('area')!r} (COCO's evaluation sorts objects by area "
                "into small, medium and large)")
    x, y, w, h = bbox
    width, height = image["width"], image["height"]
    if x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > width + BOX_TOLERANCE or y + h > height + BOX_TOLERANCE:
        return f"box {bbox} (x, y, w, h) lies outside the {width}×{height} image"
    return segmentation_problem(ann.get("segmentation"), height, width)


def empty_after_clipping(bbox: list, width: int, height: int) -> bool:
    """True if the box [x, y, w, h] has no area once clipped to the image: such a box teaches nothing
    and the model refuses it, so it is dropped (as torchvision's reference training does).

    In float32, as CocoInstances makes its boxes: a width of 1e-7 at x = 10 is a box in float64, but
    10 + 1e-7 rounds to 10 in float32."""
    x, y, w, h = np.float32(bbox)
    return min(x + w, width) <= max(x, 0) or min(y + h, height) <= max(y, 0)
