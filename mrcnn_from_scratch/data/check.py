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

CocoInstances applies the same rules (data/annotations.py) to each image it
loads, so a dataset used without this pass fails in the same words.
"""
import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .annotations import annotation_problem, empty_after_clipping, read_annotations
from .errors import DataError
from .images import load_image

SHOWN = 3  # examples named per problem


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


ERRORS = ("files without categories", "categories without a name", "duplicate category ids",
          "images without file_name, width or height", "duplicate image ids", "duplicate annotation ids",
          "annotations of images not in the file", "unusable annotations", "image files missing",
          "images that do not decode as the JSON says", "splits with no object to learn from")
WARNINGS = ("boxes empty once clipped to their image (dropped)", "images without objects")


def check_split(image_dir: str | Path, ann_file: str | Path, training: bool = False, decode: bool = False,
                dataset: dict | None = None) -> Report:
    """Every problem of one split. training: a split without any object is an error (it is fine for
    validation). decode: also decode every image (slow; otherwise only that each file exists).
    dataset: the file's JSON if it has been read already (by CocoInstances)."""
    ann_file = Path(ann_file)
    dataset = read_annotations(ann_file) if dataset is None else dataset
    found = {kind: Problem(True, kind) for kind in ERRORS} | {kind: Problem(False, kind) for kind in WARNINGS}
    images = check_entries(dataset, found)
    objects = check_annotations(dataset["annotations"], images, {cat["id"] for cat in dataset["categories"]}, found)
    check_image_files(Path(image_dir), images, decode, found)
    for image_id in images:
        if not objects[image_id]:
            found["images without objects"].places.append(f"image {image_id}")
    if training and not sum(objects.values()):
        found["splits with no object to learn from"].places.append(
            "no annotation is usable (crowd annotations, iscrowd 1, are left out)")
    return Report(ann_file, list(found.values()))


def check_entries(dataset: dict, found: dict[str, Problem]) -> dict[int, dict]:
    """The file's categories and images, and every id's uniqueness; returns the usable images by id."""
    if not dataset["categories"]:
        found["files without categories"].places.append("'categories' is empty")
    for cat in dataset["categories"]:
        if not isinstance(cat.get("name"), str):
            found["categories without a name"].places.append(f"category {cat['id']}")
    for key, noun in (("categories", "category"), ("images", "image"), ("annotations", "annotation")):
        repeated = Counter(entry["id"] for entry in dataset[key])
        found[f"duplicate {noun} ids"].places += [f"{noun} {i} ({n} times)" for i, n in repeated.items() if n > 1]
    images = {}
    for image in dataset["images"]:
        sizes = [image.get(side) for side in ("width", "height")]
        if isinstance(image.get("file_name"), str) and all(type(side) is int and side > 0 for side in sizes):
            images[image["id"]] = image
        else:
            found["images without file_name, width or height"].places.append(f"image {image['id']}")
    return images


def check_annotations(annotations: list[dict], images: dict[int, dict], category_ids: set,
                      found: dict[str, Problem]) -> Counter:
    """Each annotation against its image; returns the count of objects (not crowds, not dropped) per image."""
    objects = Counter()
    for ann in annotations:
        image = images.get(ann["image_id"])
        if image is None:
            found["annotations of images not in the file"].places.append(
                f"annotation {ann['id']} (image_id {ann['image_id']!r})")
            continue
        where = f"image {image['id']} ({image['file_name']}), annotation {ann['id']}"
        problem = annotation_problem(ann, image, category_ids)
        if problem:  # (still an object: the error is its own message, not that the image has none)
            found["unusable annotations"].places.append(f"{where}: {problem}")
        elif empty_after_clipping(ann["bbox"], image["width"], image["height"]):
            found["boxes empty once clipped to their image (dropped)"].places.append(f"{where}: {ann['bbox']}")
            continue
        if not ann.get("iscrowd", 0):
            objects[image["id"]] += 1
    return objects


def check_image_files(image_dir: Path, images: dict[int, dict], decode: bool, found: dict[str, Problem]) -> None:
    """Every image file exists (and, with `decode`, decodes to the JSON's size)."""
    for image in images.values():
        path = image_dir / image["file_name"]
        if not path.is_file():
            found["image files missing"].places.append(f"image {image['id']}: {path}")
            continue
        if not decode:
            continue
        try:
            size = tuple(load_image(path, f"image {image['id']} ({image['file_name']})").shape[1:])
        except DataError as error:
            found["images that do not decode as the JSON says"].places.append(str(error))
            continue
        if size != (image["height"], image["width"]):
            found["images that do not decode as the JSON says"].places.append(
                f"image {image['id']} ({path}): {size[1]}×{size[0]}, "
                f"the JSON says {image['width']}×{image['height']}")


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
