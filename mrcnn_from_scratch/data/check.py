"""Checking a dataset split before training: one pass over its annotation JSON (and its image files).

    python -m mrcnn_from_scratch.data.check DIR [--split train] [--decode]

`train` runs the same pass on its splits before it starts, so that a bad annotation stops the run in
its first second, not at step 3,000 when its image comes up. Each problem is counted and named with
the file, the image id and the annotation id:
- errors stop training: unreadable JSON, duplicate image or annotation ids, annotations of images that
  are not in the file, unknown categories, malformed boxes, polygons or run-length encodings (RLE), a
  missing `area`, image files that do not exist, and a training split with no object to learn from;
- warnings are printed and training goes on: images without objects, and boxes that are empty once
  clipped to their image, which are dropped, as torchvision's reference training drops them.

CocoInstances applies the same rules (`annotation_problem`, `empty_after_clipping`) to each image it
loads, so a dataset used without this pass fails in the same words.
"""
import argparse
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError

# How far (in pixels) a box may stick out of its image: exporters round coordinates, so a box often ends
# a fraction of a pixel past the edge. Such boxes are clipped to the image.
BOX_TOLERANCE = 1.0
SHOWN = 3  # examples named per problem


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
    and the model refuses it, so it is dropped (as torchvision's reference training does)."""
    x, y, w, h = bbox
    return min(x + w, width) <= max(x, 0) or min(y + h, height) <= max(y, 0)


@dataclass
class Problem:
    """One kind of problem, with how often it occurs and the first few places."""
    error: bool  # False: a warning
    what: str
    places: list[str] = field(default_factory=list)

    def line(self, ann_file: Path) -> str:
        shown = "; ".join(self.places[:SHOWN]) + ("; ..." if len(self.places) > SHOWN else "")
        return f"{'error' if self.error else 'warning'}: {ann_file}: {len(self.places)} {self.what}: {shown}"


@dataclass
class Report:
    ann_file: Path
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.error and p.places]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.error and p.places]


def check_split(image_dir: str | Path, ann_file: str | Path, training: bool = False, decode: bool = False,
                dataset: dict | None = None) -> Report:
    """Every problem of one split. training: a split without any object is an error (it is fine for
    validation). decode: also decode every image (slow; otherwise only that each file exists).
    dataset: the file's JSON if it has been read already (by CocoInstances)."""
    from .images import load_image

    image_dir, ann_file = Path(image_dir), Path(ann_file)
    dataset = read_annotations(ann_file) if dataset is None else dataset
    kinds = ["files without categories", "categories without a name", "duplicate category ids",
             "images without file_name, width or height", "duplicate image ids", "duplicate annotation ids",
             "annotations of images not in the file", "unusable annotations", "image files missing",
             "images that do not decode as the JSON says", "splits with no object to learn from"]
    found = {kind: Problem(True, kind) for kind in kinds}
    warned = {kind: Problem(False, kind) for kind in ("boxes empty once clipped to their image (dropped)",
                                                      "images without objects")}
    for cat in dataset["categories"]:
        if not isinstance(cat.get("name"), str):
            found["categories without a name"].places.append(f"category {cat['id']}")
    for kind, entries, noun in (("duplicate category ids", dataset["categories"], "category"),
                                ("duplicate image ids", dataset["images"], "image"),
                                ("duplicate annotation ids", dataset["annotations"], "annotation")):
        repeated = Counter(entry["id"] for entry in entries)
        found[kind].places += [f"{noun} {i} ({n} times)" for i, n in repeated.items() if n > 1]
    if not dataset["categories"]:
        found["files without categories"].places.append("'categories' is empty")
    images = {}
    for image in dataset["images"]:
        if not (isinstance(image.get("file_name"), str) and all(
                isinstance(image.get(k), int) and image[k] > 0 for k in ("width", "height"))):
            found["images without file_name, width or height"].places.append(f"image {image['id']}")
        else:
            images[image["id"]] = image
    category_ids = {cat["id"] for cat in dataset["categories"]}
    objects = Counter()
    for ann in dataset["annotations"]:
        image = images.get(ann.get("image_id"))
        if image is None:
            found["annotations of images not in the file"].places.append(
                f"annotation {ann['id']} (image_id {ann.get('image_id')!r})")
            continue
        where = f"image {image['id']} ({image['file_name']}), annotation {ann['id']}"
        problem = annotation_problem(ann, image, category_ids)
        if problem:  # (still an object: the error is its own message, not that the image has none)
            found["unusable annotations"].places.append(f"{where}: {problem}")
        elif empty_after_clipping(ann["bbox"], image["width"], image["height"]):
            warned["boxes empty once clipped to their image (dropped)"].places.append(f"{where}: {ann['bbox']}")
            continue
        if not ann.get("iscrowd", 0):
            objects[image["id"]] += 1
    for image in images.values():
        path = image_dir / image["file_name"]
        if not path.is_file():
            found["image files missing"].places.append(f"image {image['id']}: {path}")
        elif decode:
            try:
                size = tuple(load_image(path, f"image {image['id']} ({image['file_name']})").shape[1:])
            except DataError as error:
                found["images that do not decode as the JSON says"].places.append(str(error))
                continue
            if size != (image["height"], image["width"]):
                found["images that do not decode as the JSON says"].places.append(
                    f"image {image['id']} ({path}): {size[1]}×{size[0]}, "
                    f"the JSON says {image['width']}×{image['height']}")
        if not objects[image["id"]]:
            warned["images without objects"].places.append(f"image {image['id']}")
    if training and not sum(objects.values()):
        found["splits with no object to learn from"].places.append(
            "no annotation is usable (crowd annotations, iscrowd 1, are left out)")
    return Report(ann_file, [*found.values(), *warned.values()])


def validate_split(split, training: bool, verbose: bool = True) -> Report:
    """check_split on a CocoInstances `split` (its JSON is not read again): raise DataError with the first
    error (and how many more there are), or print the warnings (if verbose) and return the report."""
    report = check_split(split.image_dir, split.ann_file, training, dataset=split.coco.dataset)
    if report.errors:
        more = len(report.errors) - 1
        data_dir, name = report.ann_file.parent.parent, report.ann_file.stem.removeprefix("instances_")
        raise DataError(report.errors[0].line(report.ann_file).removeprefix("error: ")
                        + (f" (and {more} more kinds of problem)" if more else "")
                        + f"; python -m mrcnn_from_scratch.data.check {data_dir} --split {name} lists them")
    if verbose:
        for problem in report.warnings:
            print(problem.line(report.ann_file), file=sys.stderr)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mrcnn_from_scratch.data.check",
                                     description="Check a COCO-layout dataset split; exit 1 if it has errors.")
    parser.add_argument("data", metavar="DIR",
                        help="dataset folder: DIR/annotations/instances_{split}.json, DIR/{split}/")
    parser.add_argument("--split", default="train", help="default: train")
    parser.add_argument("--decode", action="store_true", help="also decode every image (slow)")
    args = parser.parse_args(argv)
    data_dir = Path(args.data)
    try:
        report = check_split(data_dir / args.split, data_dir / "annotations" / f"instances_{args.split}.json",
                             training=args.split.startswith("train"), decode=args.decode)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for problem in report.errors + report.warnings:
        print(problem.line(report.ann_file), file=sys.stderr)
        for place in problem.places[SHOWN:]:
            print(f"    {place}", file=sys.stderr)
    print(f"{report.ann_file}: {len(report.errors)} kinds of error, {len(report.warnings)} of warning")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
