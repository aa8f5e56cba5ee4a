"""A synthetic instance-segmentation dataset of squares, circles and triangles, written in COCO format.

Each image has a gradient background with pixel noise and one to a few shapes of random size, colour and
rotation. Shapes are drawn one after another, so later ones may cover earlier ones. A shape's mask is
its *visible* part. A shape that would be mostly hidden (less than 20% of it visible, or under 16
pixels) is not drawn at all, so every shape pixel in an image belongs to an annotated instance.

    python -m mrcnn_from_scratch.data.shapes --out datasets/shapes --train 2000 --val 200 --size 128 --seed 0

writes OUT/annotations/instances_{train,val}.json and the PNGs in OUT/train/ and OUT/val/. Every image
has its own random generator, seeded from (seed, split, image index): the same seed gives byte-identical
files, and any one image can be remade alone.
"""
import argparse
import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

CATEGORIES = ("square", "circle", "triangle")  # category id = position + 1; 0 is the background
SPLITS = ("train", "val")
MIN_VISIBLE_FRACTION = 0.2
MIN_VISIBLE_PIXELS = 16
# Colours (in 0..255) must differ by this much in some channel from the background's end colours and
# from the other shapes' colours, so that no shape melts into its surroundings.
MIN_CONTRAST = 64


class Shape(NamedTuple):
    """One shape to draw. `radius` is the circumradius in pixels; `angle` (radians) rotates polygons."""

    category: str
    cx: float
    cy: float
    radius: float
    angle: float
    colour: tuple[int, int, int]


def shape_mask(shape: Shape, size: int) -> np.ndarray:
    """The pixels of a size × size image whose centres lie inside `shape`: bool [size, size]."""
    # Pixel (row i, column j) covers [j, j+1] × [i, i+1]; it belongs to the shape if its centre does.
    xs = np.arange(size)[None, :] + 0.5
    ys = np.arange(size)[:, None] + 0.5
    if shape.category == "circle":
        return (xs - shape.cx) ** 2 + (ys - shape.cy) ** 2 <= shape.radius**2
    sides = {"square": 4, "triangle": 3}[shape.category]
    angles = shape.angle + 2 * math.pi * np.arange(sides) / sides
    vx = shape.cx + shape.radius * np.cos(angles)
    vy = shape.cy + shape.radius * np.sin(angles)
    # A convex polygon is the intersection of half-planes, one per edge. With vertices at increasing
    # angles (y pointing down), the inside lies where the cross product edge × (p - start) is >= 0.
    inside = np.ones((size, size), dtype=bool)
    for k in range(sides):
        ex, ey = vx[(k + 1) % sides] - vx[k], vy[(k + 1) % sides] - vy[k]
        inside &= ex * (ys - vy[k]) - ey * (xs - vx[k]) >= 0
    return inside


def draw_shapes(background: np.ndarray, shapes: list[Shape]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint `shapes` in order onto a copy of `background`, later shapes on top.

    Args:
        background: uint8 [S, S, 3].
        shapes: bottom first.

    Returns:
        image: uint8 [S, S, 3].
        masks: bool [N, S, S], the visible part of each drawn shape, in drawing order.
        labels: int64 [N], category ids 1..len(CATEGORIES).

    A shape with less than MIN_VISIBLE_FRACTION of its area (or MIN_VISIBLE_PIXELS) left visible is
    skipped. Going from the top shape down settles this in one pass: what hides a shape is only the
    kept shapes above it, and skipping a shape can only uncover shapes below it, not yet decided.
    """
    size = background.shape[0]
    full = [shape_mask(shape, size) for shape in shapes]
    covered = np.zeros((size, size), dtype=bool)
    kept = []  # (index, visible mask), top shape first
    for i in reversed(range(len(shapes))):
        visible = full[i] & ~covered
        pixels = int(visible.sum())
        if pixels < MIN_VISIBLE_PIXELS or pixels < MIN_VISIBLE_FRACTION * full[i].sum():
            continue
        kept.append((i, visible))
        covered |= full[i]
    kept.reverse()
    image = background.copy()
    for i, _ in kept:
        image[full[i]] = shapes[i].colour
    masks = np.stack([visible for _, visible in kept]) if kept else np.zeros((0, size, size), dtype=bool)
    labels = np.array([CATEGORIES.index(shapes[i].category) + 1 for i, _ in kept], dtype=np.int64)
    return image, masks, labels


def random_background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A linear gradient between two random colours in a random direction (a solid colour half the time).

    Returns the uint8 image [size, size, 3] and its two end colours, float [2, 3].
    """
    start = rng.uniform(0, 255, 3)
    end = start if rng.random() < 0.5 else rng.uniform(0, 255, 3)
    direction = rng.uniform(0, 2 * math.pi)
    coords = (np.arange(size) + 0.5) / size
    # t runs from 0 to 1 across the image along `direction`.
    t = math.cos(direction) * coords[None, :] + math.sin(direction) * coords[:, None]
    t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
    image = start + t[..., None] * (end - start)
    return image.round().astype(np.uint8), np.stack([start, end])


def random_shapes(rng: np.random.Generator, size: int, avoid_colours: np.ndarray, max_shapes: int) -> list[Shape]:
    """1 to `max_shapes` shapes that fit inside the image, with circumradius 8% to 22% of its side."""
    shapes = []
    used = list(avoid_colours)
    for _ in range(rng.integers(1, max_shapes + 1)):
        category = CATEGORIES[rng.integers(len(CATEGORIES))]
        radius = rng.uniform(0.08, 0.22) * size
        cx, cy = rng.uniform(radius, size - radius, 2)
        angle = rng.uniform(0, 2 * math.pi)
        # Rejection sampling: each colour to avoid rules out at most an eighth of the RGB cube, so with
        # a handful of shapes a contrasting colour comes up at the first or second try.
        while True:
            colour = rng.integers(0, 256, 3)
            if all(np.abs(colour - other).max() >= MIN_CONTRAST for other in used):
                break
        used.append(colour)
        shapes.append(Shape(category, float(cx), float(cy), float(radius), float(angle), tuple(int(c) for c in colour)))
    return shapes


def make_shapes_image(
    rng: np.random.Generator, size: int = 128, max_shapes: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One random image and its instances, in memory: image uint8 [S, S, 3], masks bool [N, S, S],
    labels int64 [N] (category ids; names in CATEGORIES[label - 1]). See `draw_shapes`."""
    background, end_colours = random_background(rng, size)
    image, masks, labels = draw_shapes(background, random_shapes(rng, size, end_colours, max_shapes))
    # Noise over everything, so that neither the background nor a shape is a perfectly flat colour.
    noise = rng.normal(0.0, rng.uniform(0.0, 8.0), image.shape)
    return np.clip(image + noise, 0, 255).round().astype(np.uint8), masks, labels


def mask_to_annotation(mask: np.ndarray) -> dict:
    """COCO fields for one bool [H, W] mask: compressed RLE, pixel-count area, tight [x, y, w, h] box."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    x, y = int(cols[0]), int(rows[0])
    return {
        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("utf-8")},
        "area": int(mask.sum()),
        "bbox": [x, y, int(cols[-1]) + 1 - x, int(rows[-1]) + 1 - y],
        "iscrowd": 0,
    }


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of image `index` of `split`: the dataset is a pure function of the seed."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


def generate_split(
    out: str | Path, split: str, count: int, size: int = 128, seed: int = 0, progress: bool = True
) -> Path:
    """Write `count` images to OUT/split/ and their annotations to OUT/annotations/instances_{split}.json.

    Returns the path of the JSON file.
    """
    out = Path(out)
    (out / split).mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in tqdm(range(count), desc=f"shapes {split}", disable=not progress):
        image, masks, labels = make_shapes_image(image_rng(seed, split, index), size)
        image_id = index + 1
        file_name = f"{index:06d}.png"
        # Light compression: half the time of the default level, for files about 10% larger.
        Image.fromarray(image).save(out / split / file_name, compress_level=1)
        images.append({"id": image_id, "file_name": file_name, "height": size, "width": size})
        for mask, label in zip(masks, labels):
            annotation = {"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label)}
            annotations.append({**annotation, **mask_to_annotation(mask)})
    dataset = {
        "info": {"description": f"synthetic shapes, seed {seed}, {size} px"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CATEGORIES)],
    }
    ann_file = out / "annotations" / f"instances_{split}.json"
    ann_file.write_text(json.dumps(dataset))
    return ann_file


def generate_shapes_dataset(
    out: str | Path, train: int, val: int, size: int = 128, seed: int = 0, progress: bool = True
) -> None:
    """Write both splits, `train` and `val` images, in the COCO layout described at the top of this file."""
    for split, count in zip(SPLITS, (train, val)):
        generate_split(out, split, count, size, seed, progress)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the synthetic shapes dataset in COCO format.")
    parser.add_argument("--out", default="datasets/shapes", help="dataset folder (default: datasets/shapes)")
    parser.add_argument("--train", type=int, default=2000, help="number of training images")
    parser.add_argument("--val", type=int, default=200, help="number of validation images")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    generate_shapes_dataset(args.out, args.train, args.val, args.size, args.seed)
    print(f"wrote {args.train} train and {args.val} val images to {args.out}")


if __name__ == "__main__":
    main()
