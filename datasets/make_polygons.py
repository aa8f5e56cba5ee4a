"""An independent COCO-format dataset, to check the package on data it was not built around.

    python datasets/make_polygons.py --out datasets/polygons [--train 1500 --val 150 --seed 0]

It shares no code with `mrcnn_from_scratch.data.shapes`, and differs from the shapes data wherever the
package could have quietly depended on it: the images are 160 × 120 (not square), the classes are
different (star, hexagon, ellipse, plus), the segmentations are polygons (not RLE) drawn with PIL, the
backgrounds are noisy gradients, and the category ids are 3, 5, 7 and 11 (not 1..K), so the mapping
from category id to label is exercised. Objects do not overlap, so each polygon is the whole visible
object. Train and evaluate on it through the command line:

    python -m mrcnn_from_scratch train --data datasets/polygons --out runs/polygons
    python -m mrcnn_from_scratch evaluate --checkpoint runs/polygons/last.pt --data datasets/polygons
"""
import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 160, 120
CATEGORIES = {3: "star", 5: "hexagon", 7: "ellipse", 11: "plus"}


def outline(kind: str, cx: float, cy: float, radius: float, angle: float, stretch: float) -> list[tuple[float, float]]:
    """The polygon of one object, as (x, y) corners in pixels."""
    if kind == "star":
        radii = [radius if i % 2 == 0 else 0.45 * radius for i in range(10)]
        angles = [angle + i * math.pi / 5 for i in range(10)]
    elif kind == "hexagon":
        radii, angles = [radius] * 6, [angle + i * math.pi / 3 for i in range(6)]
    elif kind == "ellipse":
        angles = [i * 2 * math.pi / 32 for i in range(32)]
        points = [(radius * math.cos(a), stretch * radius * math.sin(a)) for a in angles]
        return [(cx + x * math.cos(angle) - y * math.sin(angle), cy + x * math.sin(angle) + y * math.cos(angle))
                for x, y in points]
    else:  # a plus sign: 12 corners at half-widths of 1/3 of the radius
        t = radius / 3
        corners = [(t, t), (t, radius), (-t, radius), (-t, t), (-radius, t), (-radius, -t), (-t, -t),
                   (-t, -radius), (t, -radius), (t, -t), (radius, -t), (radius, t)]
        return [(cx + x * math.cos(angle) - y * math.sin(angle), cy + x * math.sin(angle) + y * math.cos(angle))
                for x, y in corners]
    return [(cx + r * math.cos(a), cy + r * math.sin(a)) for r, a in zip(radii, angles)]


def make_image(rng: np.random.Generator) -> tuple[Image.Image, list[tuple[int, list[tuple[float, float]]]]]:
    """One image and its objects (category id, polygon); 1 to 4 objects whose discs do not overlap."""
    gradient = np.linspace(0, 1, WIDTH)[None, :, None] * rng.uniform(-60, 60, 3)
    base = rng.uniform(60, 190, 3) + gradient + rng.normal(0, 8, (HEIGHT, WIDTH, 3))
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    placed, objects = [], []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(20):
            radius = rng.uniform(8, 28)
            cx, cy = rng.uniform(radius, WIDTH - radius), rng.uniform(radius, HEIGHT - radius)
            category = int(rng.choice(list(CATEGORIES)))
            polygon = outline(CATEGORIES[category], cx, cy, radius, rng.uniform(0, math.pi), rng.uniform(0.4, 0.8))
            # A plus sign's corners reach past `radius`, so the polygon itself must fit in the image.
            inside = all(0 <= x <= WIDTH and 0 <= y <= HEIGHT for x, y in polygon)
            # 1.06 · radius encloses every outline (a plus sign's corners: √(1 + 1/9) = 1.054).
            apart = all(math.hypot(cx - x, cy - y) > 1.06 * (radius + r) + 2 for x, y, r in placed)
            if inside and apart:
                break
        else:
            continue
        placed.append((cx, cy, radius))
        draw.polygon(polygon, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        objects.append((category, polygon))
    return image, objects


def polygon_area(polygon: list[tuple[float, float]]) -> float:
    """The shoelace formula."""
    xs, ys = np.array(polygon).T
    return float(abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))) / 2)


def write_split(out: Path, split: str, count: int, seed: int) -> None:
    rng = np.random.default_rng([seed, ["train", "val"].index(split)])
    (out / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image, objects = make_image(rng)
        name = f"{index:05d}.png"
        image.save(out / split / name)
        image_id = 1000 + index  # not 0..N-1: ids are names, not positions
        images.append({"id": image_id, "file_name": name, "width": WIDTH, "height": HEIGHT})
        for category, polygon in objects:
            xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category, "iscrowd": 0,
                "segmentation": [[round(v, 2) for point in polygon for v in point]],
                "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)], "area": polygon_area(polygon)})
    categories = [{"id": cat_id, "name": name, "supercategory": "polygon"} for cat_id, name in CATEGORIES.items()]
    (out / "annotations").mkdir(exist_ok=True)
    (out / "annotations" / f"instances_{split}.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="datasets/polygons")
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--val", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for split, count in (("train", args.train), ("val", args.val)):
        write_split(Path(args.out), split, count, args.seed)
    print(f"wrote {args.train} train and {args.val} val images to {args.out}")


if __name__ == "__main__":
    main()
