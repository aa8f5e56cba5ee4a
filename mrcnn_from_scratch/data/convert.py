"""Converters from two common ways of annotating your own photos to the COCO layout that `CocoInstances`
reads, so that your data trains like the shapes data:

    OUT/annotations/instances_{SPLIT}.json    images, annotations (one per object), categories from 1
    OUT/{SPLIT}/                              the images, copied under their own file names

`instance-masks` reads one mask PNG per image in which every object has its own integer id (0 is the
background), as in Penn-Fudan's PedMasks. Masks become compressed RLE, which is exact to the pixel.
`labelme` reads labelme's JSON files. Polygons and rectangles stay polygons, as the annotator drew them.

What is refused and what is only warned about follows one rule: an object that goes missing would be
trained on as background. So an image without a mask, and a labelme shape that is not a polygon or a
rectangle (circle, line, point), are errors; a mask without an image only raises a warning.

Every input is read and checked before anything is written, and the output is first written into a
temporary folder inside OUT and then moved into place, so that an error (which names the file to fix)
never leaves half a split behind. An existing split is never overwritten; other splits in OUT are
left alone, so converting train and val one after the other fills one dataset folder.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
# PIL modes whose pixels are integers. RGB and RGBA hold colours and F holds fractions, not object ids;
# a P (palette) image's pixels are indices into its palette, and the indices are the ids.
INTEGER_MASK_MODES = ("1", "L", "P", "I", "I;16")
LABELME_SHAPE_TYPES = ("polygon", "rectangle")


class ConversionError(ValueError):
    """Bad input, described so that the user knows which file to fix; the CLI prints it without a traceback."""


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, read from its header only."""
    try:
        with Image.open(path) as file:
            return file.height, file.width
    except (OSError, UnidentifiedImageError) as error:
        raise ConversionError(f"{path}: cannot read the image ({error})") from error


def mask_annotation(mask: np.ndarray) -> dict:
    """COCO fields for one object's bool [H, W] mask: compressed RLE, pixel-count area, [x, y, w, h] box."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {
        # pycocotools gives the counts as bytes; JSON needs a str.
        "segmentation": {"size": [int(side) for side in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "area": int(mask.sum()),
        "bbox": [float(value) for value in mask_utils.toBbox(rle)],
        "iscrowd": 0,
    }


def read_instance_ids(path: Path) -> np.ndarray:
    """A mask file as an integer array [H, W] of object ids, 0 for the background."""
    try:
        with Image.open(path) as file:
            if file.mode not in INTEGER_MASK_MODES:
                raise ConversionError(
                    f"{path}: mask mode {file.mode} does not hold integer object ids; save one id per object "
                    f"as a grayscale, 16/32-bit integer or palette PNG (PIL modes {', '.join(INTEGER_MASK_MODES)})"
                )
            return np.array(file).astype(np.int64)  # for P, np.array gives the palette indices, not colours
    except (OSError, UnidentifiedImageError) as error:
        raise ConversionError(f"{path}: cannot read the mask ({error})") from error


def files_with_suffix(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files in `folder` (not below it) with one of `suffixes`, in any case, sorted by name."""
    if not folder.is_dir():
        raise ConversionError(f"{folder}: not a folder")
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in suffixes)


def pair_images_with_masks(image_dir: Path, mask_dir: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs, matched by stem: `a.jpg` takes `a.png` or `a_mask.png`.

    An image without a mask is an error: training on it would teach that its objects are background.
    A mask without an image is only warned about, as masks folders often hold a few leftovers.
    """
    images = files_with_suffix(image_dir, IMAGE_SUFFIXES)
    if not images:
        raise ConversionError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    masks = {path.stem: path for path in files_with_suffix(mask_dir, MASK_SUFFIXES)}
    pairs = []
    for image in images:
        found = [masks.pop(stem) for stem in (image.stem, image.stem + "_mask") if stem in masks]
        if not found:
            raise ConversionError(
                f"{image}: no mask named {image.stem}.png or {image.stem}_mask.png (or .bmp, .tif) in {mask_dir}"
            )
        if len(found) > 1:
            raise ConversionError(f"{image}: two masks match it, {found[0].name} and {found[1].name}")
        pairs.append((image, found[0]))
    if masks:
        names = ", ".join(path.name for path in list(masks.values())[:5])
        warnings.warn(f"{len(masks)} masks in {mask_dir} have no image and were left out: {names}", stacklevel=3)
    return pairs


def convert_instance_masks(
    image_dir: str | Path, mask_dir: str | Path, out: str | Path, split: str, category: str = "object"
) -> Path:
    """Convert images and their instance-id masks (see the top of this file); returns the JSON's path."""
    images, annotations = [], []
    for image_id, (image_path, mask_path) in enumerate(pair_images_with_masks(Path(image_dir), Path(mask_dir)), 1):
        height, width = image_size(image_path)
        ids = read_instance_ids(mask_path)  # [H, W]
        if ids.shape != (height, width):
            raise ConversionError(f"{mask_path}: the mask is {ids.shape[1]}×{ids.shape[0]} but its image "
                                  f"{image_path.name} is {width}×{height}")
        images.append({"id": image_id, "file_name": image_path.name, "height": height, "width": width,
                       "source": image_path})
        for object_id in np.unique(ids[ids != 0]):  # ids need not run 1, 2, 3: any nonzero value is one object
            annotation = {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1}
            annotations.append({**annotation, **mask_annotation(ids == object_id)})
    return write_split(out, split, images, annotations, [category])


def labelme_polygon(shape: dict, where: str) -> list[float]:
    """One labelme shape as a flat COCO polygon [x1, y1, x2, y2, ...]."""
    shape_type = shape.get("shape_type") or "polygon"  # labelme's first versions wrote polygons only
    if shape_type not in LABELME_SHAPE_TYPES:
        raise ConversionError(
            f"{where}: shape type {shape_type!r} is not supported ({' or '.join(LABELME_SHAPE_TYPES)}); "
            "redraw it as a polygon or delete it"
        )
    try:
        points = [(float(x), float(y)) for x, y in shape["points"]]
    except (KeyError, TypeError, ValueError) as error:
        raise ConversionError(f"{where}: points must be a list of [x, y] pairs") from error
    if shape_type == "rectangle":
        if len(points) != 2:
            raise ConversionError(f"{where}: a rectangle needs 2 corner points, got {len(points)}")
        (x1, y1), (x2, y2) = points  # two opposite corners, in either order
        (left, right), (top, bottom) = sorted((x1, x2)), sorted((y1, y2))
        points = [(left, top), (right, top), (right, bottom), (left, bottom)]
    if len(points) < 3:
        raise ConversionError(f"{where}: a polygon needs at least 3 points, got {len(points)}")
    return [coordinate for point in points for coordinate in point]


def read_labelme_file(path: Path) -> tuple[Path, int, int, list[tuple[str, list[list[float]]]]]:
    """One labelme JSON as (image path, height, width, objects); an object is (label, its polygons).

    Shapes with the same label and the same non-null group_id are one object, drawn in several parts
    (a person behind a lamp post); every shape with a null group_id is an object of its own.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        # imagePath is relative to the JSON file; labelme on Windows writes it with backslashes.
        image_path = path.parent / document["imagePath"].replace("\\", "/")
        shapes = list(document["shapes"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConversionError(f"{path}: not a readable JSON file ({error})") from error
    except (KeyError, TypeError, AttributeError) as error:
        raise ConversionError(f"{path}: not a labelme file (it needs imagePath and shapes)") from error
    if not image_path.is_file():
        raise ConversionError(f"{path}: its image {image_path} does not exist")
    height, width = image_size(image_path)
    stated = (document.get("imageHeight", height), document.get("imageWidth", width))
    if stated != (height, width):
        raise ConversionError(f"{path}: says the image is {stated[1]}×{stated[0]}, "
                              f"but {image_path} is {width}×{height}")
    objects = {}  # (label, group) -> polygons, in the order the objects were first drawn
    for index, shape in enumerate(shapes):
        where = f"{path}, shape {index}"
        label = shape.get("label") if isinstance(shape, dict) else None
        if not isinstance(label, str) or not label:
            raise ConversionError(f"{where}: needs a label")
        group = ("group", shape["group_id"]) if shape.get("group_id") is not None else ("shape", index)
        objects.setdefault((label, group), []).append(labelme_polygon(shape, where))
    return image_path, height, width, [(label, polygons) for (label, _), polygons in objects.items()]


def convert_labelme(src: str | Path, out: str | Path, split: str) -> Path:
    """Convert a folder of labelme JSON files (see the top of this file); returns the JSON's path."""
    files = files_with_suffix(Path(src), (".json",))
    if not files:
        raise ConversionError(f"{src}: no labelme .json files")
    read = [read_labelme_file(path) for path in files]
    labels = sorted({label for *_, objects in read for label, _ in objects})
    category_ids = {label: category_id for category_id, label in enumerate(labels, 1)}
    images, annotations, sources = [], [], {}
    for image_id, (path, (image_path, height, width, objects)) in enumerate(zip(files, read), 1):
        if sources.setdefault(image_path.name, path) != path:
            raise ConversionError(f"{path}: its image has the same file name as that of {sources[image_path.name]}")
        images.append({"id": image_id, "file_name": image_path.name, "height": height, "width": width,
                       "source": image_path})
        for label, polygons in objects:
            # Area and box come from the rasterized polygons, as the mask the model is trained on does.
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
            area = int(mask_utils.area(rle))
            if area == 0:
                raise ConversionError(f"{path}: an object labelled {label!r} covers no pixel")
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category_ids[label],
                "segmentation": polygons, "area": area,
                "bbox": [float(value) for value in mask_utils.toBbox(rle)], "iscrowd": 0,
            })
    return write_split(out, split, images, annotations, labels)


def write_split(
    out: str | Path, split: str, images: list[dict], annotations: list[dict], category_names: list[str]
) -> Path:
    """Copy each image from its "source" path and write the JSON, all or nothing; returns the JSON's path.

    `images` are the JSON's image entries plus "source", the path to copy the file from.
    """
    out = Path(out)
    if split in ("", ".", "..", "annotations") or Path(split).name != split:
        raise ConversionError(f"--split {split!r}: give a plain folder name such as train or val")
    image_dir, ann_file = out / split, out / "annotations" / f"instances_{split}.json"
    for path in (image_dir, ann_file):
        if path.exists():
            raise ConversionError(f"{path} already exists: delete it first, or choose another --out or --split")
    dataset = {
        "images": [{key: value for key, value in image.items() if key != "source"} for image in images],
        "annotations": annotations,
        "categories": [{"id": index, "name": name} for index, name in enumerate(category_names, 1)],
    }
    out.mkdir(parents=True, exist_ok=True)
    # The temporary folder sits inside OUT, on the same file system, so that moving it is a rename.
    staging = Path(tempfile.mkdtemp(prefix=f".converting-{split}-", dir=out))
    try:
        (staging / "images").mkdir()
        for image in images:
            shutil.copyfile(image["source"], staging / "images" / image["file_name"])
        (staging / "instances.json").write_text(json.dumps(dataset))
        ann_file.parent.mkdir(exist_ok=True)
        os.replace(staging / "images", image_dir)
        try:
            os.replace(staging / "instances.json", ann_file)  # last: the JSON's presence means "complete"
        except OSError:
            shutil.rmtree(image_dir)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ann_file


EXAMPLES = {
    "instance-masks": "python -m mrcnn_from_scratch.data.convert instance-masks --images PennFudanPed/PNGImages "
    "--masks PennFudanPed/PedMasks --out datasets/pennfudan --split train --category person",
    "labelme": "python -m mrcnn_from_scratch.data.convert labelme --src my_photos/labelme --out datasets/mine "
    "--split train",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mrcnn_from_scratch.data.convert", description="Convert annotations to the COCO layout.",
        epilog="examples:\n  " + "\n  ".join(EXAMPLES.values()), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    masks = commands.add_parser(
        "instance-masks", help="one mask PNG per image, one integer id per object (Penn-Fudan style)",
        epilog=f"example:\n  {EXAMPLES['instance-masks']}", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    masks.add_argument("--images", required=True, metavar="DIR", help="folder of images (.png, .jpg, .jpeg, .bmp)")
    masks.add_argument("--masks", required=True, metavar="DIR", help="folder of masks, named as the image or + _mask")
    masks.add_argument("--category", default="object", metavar="NAME", help="the category's name (default: object)")
    labelme = commands.add_parser(
        "labelme", help="a folder of labelme JSON files (polygons and rectangles)",
        epilog=f"example:\n  {EXAMPLES['labelme']}", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    labelme.add_argument("--src", required=True, metavar="DIR", help="folder of labelme .json files")
    for command in (masks, labelme):
        command.add_argument("--out", required=True, metavar="DIR", help="dataset folder; other splits in it are kept")
        command.add_argument("--split", required=True, metavar="NAME", help="split name, such as train or val")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            if args.command == "instance-masks":
                ann_file = convert_instance_masks(args.images, args.masks, args.out, args.split, args.category)
            else:
                ann_file = convert_labelme(args.src, args.out, args.split)
        except ConversionError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    dataset = json.loads(ann_file.read_text())
    print(f"{args.split}: {len(dataset['images'])} images, {len(dataset['annotations'])} objects, "
          f"{len(dataset['categories'])} categories -> {Path(args.out) / args.split} and {ann_file}")


if __name__ == "__main__":
    main()
