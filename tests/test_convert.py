"""The converters to the COCO layout, on images, masks and labelme files drawn here: exact masks from
instance-id PNGs, labelme polygons against an independent rasterization, and bad inputs that must name
the file to fix and leave no half-written split behind."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.path import Path as PolygonPath
from PIL import Image

from mrcnn_from_scratch.data import CocoInstances
from mrcnn_from_scratch.data.convert import ConversionError, convert_instance_masks, convert_labelme, main

# pycocotools' mask decoding trips a NumPy 2 DeprecationWarning inside its compiled code, once per mask.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

HEIGHT, WIDTH = 30, 40


def save_photo(path, height=HEIGHT, width=WIDTH, seed=0):
    """A random RGB picture: the converters copy it and never look inside."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def instance_ids(boxes: dict[int, tuple[int, int, int, int]], height=HEIGHT, width=WIDTH) -> np.ndarray:
    """int32 [H, W] with each id painted over its (x1, y1, x2, y2) box, later boxes on top."""
    ids = np.zeros((height, width), dtype=np.int32)
    for object_id, (x1, y1, x2, y2) in boxes.items():
        ids[y1:y2, x1:x2] = object_id
    return ids


@pytest.fixture
def penn_fudan_like(tmp_path):
    """Images and masks in two folders, as Penn-Fudan ships them; returns (images, masks, ids by file name).

    a.png: ids 3 and 7 (not 1, 2), overlapping, mask a_mask.png in mode L.
    b.jpg: ids 1 and 2 in a palette mask b.png whose colours are not the ids.
    c.png: an all-zero mask, no objects.
    d.png: id 1000 in a 16-bit mask.
    """
    images, masks = tmp_path / "PNGImages", tmp_path / "PedMasks"
    images.mkdir()
    masks.mkdir()
    expected = {
        "a.png": instance_ids({3: (2, 3, 20, 25), 7: (15, 10, 38, 28)}),
        "b.jpg": instance_ids({1: (0, 0, 10, 30), 2: (30, 5, 40, 15)}),
        "c.png": instance_ids({}),
        "d.png": instance_ids({1000: (5, 5, 9, 7)}),
    }
    for seed, name in enumerate(expected):
        save_photo(images / name, seed=seed)
    Image.fromarray(expected["a.png"].astype(np.uint8)).save(masks / "a_mask.png")
    palette_mask = Image.fromarray(expected["b.jpg"].astype(np.uint8))
    palette_mask.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0])  # turns the L image into P
    palette_mask.save(masks / "b.png")
    Image.fromarray(expected["c.png"].astype(np.uint8)).save(masks / "c_mask.png")
    Image.fromarray(expected["d.png"].astype(np.uint16)).save(masks / "d.png")  # mode I;16
    return images, masks, expected


# labelme's images are larger, so that the edge pixels on which two rasterizers may disagree are few.
LABELME_HEIGHT, LABELME_WIDTH = 90, 120


def labelme_file(folder, name, shapes, image_path):
    document = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_path, "imageData": None,
                "imageHeight": LABELME_HEIGHT, "imageWidth": LABELME_WIDTH}
    (folder / name).write_text(json.dumps(document))


def shape(label, points, shape_type="polygon", group_id=None):
    return {"label": label, "points": points, "group_id": group_id, "shape_type": shape_type, "flags": {}}


TRIANGLE = [[9, 6], [54, 12], [24.5, 60]]
LEFT_HALF = [[60, 9], [84, 9], [84, 42], [60, 42]]
RIGHT_HALF = [[93, 9], [114, 9], [114.5, 42], [93, 42.5]]
RECTANGLE_CORNERS = [[108, 84], [66, 51]]  # in either order
RECTANGLE = [[66, 51], [108, 51], [108, 84], [66, 84]]


@pytest.fixture
def labelme_folder(tmp_path):
    """Two labelme files in labelme/, their images in images/ (imagePath is relative to the JSON)."""
    src, images = tmp_path / "labelme", tmp_path / "images"
    src.mkdir()
    images.mkdir()
    save_photo(images / "one.png", LABELME_HEIGHT, LABELME_WIDTH, seed=1)
    save_photo(images / "two.jpg", LABELME_HEIGHT, LABELME_WIDTH, seed=2)
    labelme_file(src, "one.json", [
        shape("cat", TRIANGLE),
        shape("dog", LEFT_HALF, group_id=1),  # one dog behind a post: two polygons, one object
        shape("dog", RIGHT_HALF, group_id=1),
        shape("box", RECTANGLE_CORNERS, "rectangle"),
    ], "../images/one.png")
    labelme_file(src, "two.json", [shape("dog", TRIANGLE), shape("dog", LEFT_HALF)], "../images/two.jpg")
    return src


def assert_nothing_written(out, split):
    assert not (out / split).exists()
    assert not (out / "annotations" / f"instances_{split}.json").exists()
    assert not any(out.glob(".converting-*"))  # no temporary folder either


def test_instance_masks_give_back_each_mask_exactly(penn_fudan_like, tmp_path):
    images, masks, expected = penn_fudan_like
    ann_file = convert_instance_masks(images, masks, tmp_path / "out", "train", category="person")
    dataset = CocoInstances(tmp_path / "out" / "train", ann_file)
    assert Image.open(masks / "b.png").mode == "P" and Image.open(masks / "d.png").mode == "I;16"
    assert len(dataset) == 4 and dataset.categories == {1: "person"}
    assert len(dataset.coco.anns) == 5
    for index, image_id in enumerate(dataset.ids):
        file_name = dataset.coco.imgs[image_id]["file_name"]
        ids = expected[file_name]
        object_ids = [object_id for object_id in np.unique(ids) if object_id != 0]
        _, target = dataset[index]
        assert target["masks"].shape == (len(object_ids), HEIGHT, WIDTH)
        for mask, object_id in zip(target["masks"].numpy(), object_ids):
            assert np.array_equal(mask, ids == object_id)
        annotations = dataset.coco.imgToAnns[image_id]
        assert [ann["area"] for ann in annotations] == [int((ids == object_id).sum()) for object_id in object_ids]
    # Images are numbered in file-name order. The box of object 7 in a.png (image 1): x from 15 to 38,
    # y from 10 to 28 (it lies on top of object 3). c.png (image 3) is kept, with no objects.
    assert dataset.coco.imgToAnns[1][1]["bbox"] == [15.0, 10.0, 23.0, 18.0]
    assert dataset.coco.imgToAnns[3] == []


def test_instance_masks_default_category_and_mask_without_image(penn_fudan_like, tmp_path):
    images, masks, _ = penn_fudan_like
    Image.fromarray(instance_ids({1: (0, 0, 5, 5)}).astype(np.uint8)).save(masks / "leftover_mask.png")
    with pytest.warns(UserWarning, match="leftover_mask.png"):
        ann_file = convert_instance_masks(images, masks, tmp_path / "out", "val")
    dataset = json.loads(ann_file.read_text())
    assert dataset["categories"] == [{"id": 1, "name": "object"}]
    assert len(dataset["images"]) == 4 and len(dataset["annotations"]) == 5


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def drawn_mask(polygons: list[list[list[float]]]) -> np.ndarray:
    """bool [H, W]: the pixels whose centre lies inside one of the polygons ([x, y] points), the rule
    pycocotools follows, here through matplotlib's point-in-polygon test rather than its own code."""
    rows, cols = np.mgrid[0:LABELME_HEIGHT, 0:LABELME_WIDTH]
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    inside = [PolygonPath(points).contains_points(centres) for points in polygons]
    return np.any(inside, axis=0).reshape(LABELME_HEIGHT, LABELME_WIDTH)


def test_labelme_objects_categories_and_masks(labelme_folder, tmp_path):
    ann_file = convert_labelme(labelme_folder, tmp_path / "out", "train")
    dataset = CocoInstances(tmp_path / "out" / "train", ann_file)
    assert dataset.categories == {1: "box", 2: "cat", 3: "dog"}
    assert [dataset.coco.imgs[image_id]["file_name"] for image_id in dataset.ids] == ["one.png", "two.jpg"]
    one, two = (dataset.coco.imgToAnns[image_id] for image_id in dataset.ids)
    assert [ann["category_id"] for ann in one] == [2, 3, 1]  # cat, the grouped dog, box
    assert [ann["category_id"] for ann in two] == [3, 3]  # null group ids: two dogs
    assert len(one[1]["segmentation"]) == 2
    expected = [[TRIANGLE], [LEFT_HALF, RIGHT_HALF], [RECTANGLE], [TRIANGLE], [LEFT_HALF]]
    masks = [mask for index in range(len(dataset)) for mask in dataset[index][1]["masks"].numpy().astype(bool)]
    for mask, ann, polygons in zip(masks, one + two, expected, strict=True):
        assert mask_iou(mask, drawn_mask(polygons)) >= 0.95
        assert ann["area"] == mask.sum()
        x, y, w, h = ann["bbox"]
        rows, cols = np.nonzero(mask)
        assert [x, y, x + w, y + h] == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_two_splits_in_one_folder_keep_their_own_categories(penn_fudan_like, labelme_folder, tmp_path):
    images, masks, _ = penn_fudan_like
    out = tmp_path / "out"
    convert_instance_masks(images, masks, out, "train", category="person")
    convert_labelme(labelme_folder, out, "val")
    train = CocoInstances(out / "train", out / "annotations" / "instances_train.json")
    val = CocoInstances(out / "val", out / "annotations" / "instances_val.json")
    assert train.categories == {1: "person"} and val.categories == {1: "box", 2: "cat", 3: "dog"}
    assert sorted(path.name for path in out.iterdir()) == ["annotations", "train", "val"]


def test_labelme_refuses_unsupported_shape_types(labelme_folder, tmp_path):
    circle = shape("cat", [[30, 30], [40, 40]], "circle")  # centre and a point on the circle
    labelme_file(labelme_folder, "two.json", [shape("cat", TRIANGLE), circle], "../images/two.jpg")
    with pytest.raises(ConversionError, match=r"two\.json, shape 1: shape type 'circle'"):
        convert_labelme(labelme_folder, tmp_path / "out", "train")
    assert_nothing_written(tmp_path / "out", "train")


def break_image_without_mask(images, masks, labelme):
    save_photo(images / "lonely.png")
    return "lonely.png"


def break_with_rgb_mask(images, masks, labelme):
    Image.new("RGB", (WIDTH, HEIGHT), (255, 0, 0)).save(masks / "b.png")
    return "b.png"


def break_with_float_mask(images, masks, labelme):
    Image.fromarray(np.zeros((HEIGHT, WIDTH), dtype=np.float32)).save(masks / "d.tif")
    (masks / "d.png").unlink()
    return "d.tif"


def break_mask_size(images, masks, labelme):
    Image.fromarray(instance_ids({1: (0, 0, 5, 5)}, HEIGHT, WIDTH + 1).astype(np.uint8)).save(masks / "c_mask.png")
    return "c_mask.png"


def break_polygon_with_two_points(images, masks, labelme):
    labelme_file(labelme, "one.json", [shape("cat", TRIANGLE), shape("cat", [[1, 1], [9, 9]])], "../images/one.png")
    return "one.json"


def break_polygon_without_area(images, masks, labelme):
    labelme_file(labelme, "one.json", [shape("cat", [[1, 1], [9, 9], [20, 20]])], "../images/one.png")
    return "one.json"


def break_image_path(images, masks, labelme):
    labelme_file(labelme, "two.json", [shape("dog", TRIANGLE)], "../images/missing.jpg")
    return "two.json"


def break_json(images, masks, labelme):
    (labelme / "one.json").write_text('{"shapes": [')
    return "one.json"


@pytest.mark.parametrize("break_input", [
    break_image_without_mask, break_with_rgb_mask, break_with_float_mask, break_mask_size,
    break_polygon_with_two_points, break_polygon_without_area, break_image_path, break_json,
])
def test_bad_input_names_the_file_and_writes_nothing(break_input, penn_fudan_like, labelme_folder, tmp_path):
    images, masks, _ = penn_fudan_like
    out = tmp_path / "out"
    convert_labelme(labelme_folder, out, "train")  # an existing split, which a failed one must not touch
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    culprit = break_input(images, masks, labelme_folder)
    with pytest.raises(ConversionError, match=re.escape(culprit)):
        if culprit.endswith(".json"):
            convert_labelme(labelme_folder, out, "val")
        else:
            convert_instance_masks(images, masks, out, "val")
    assert_nothing_written(out, "val")
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


def test_no_images_and_existing_split_are_refused(penn_fudan_like, tmp_path):
    images, masks, _ = penn_fudan_like
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match="no images"):
        convert_instance_masks(tmp_path / "empty", masks, tmp_path / "out", "train")
    assert_nothing_written(tmp_path / "out", "train")
    convert_instance_masks(images, masks, tmp_path / "out", "train")
    with pytest.raises(ConversionError, match="already exists"):
        convert_instance_masks(images, masks, tmp_path / "out", "train")


def test_cli_prints_a_summary(labelme_folder, tmp_path, capsys):
    main(["labelme", "--src", str(labelme_folder), "--out", str(tmp_path / "out"), "--split", "val"])
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("val: 2 images, 5 objects, 3 categories -> ") and "instances_val.json" in printed
    assert "\n" not in printed


def test_cli_error_is_one_line_with_status_2(penn_fudan_like, tmp_path):
    images, masks, _ = penn_fudan_like
    (masks / "b.png").unlink()
    command = [sys.executable, "-m", "mrcnn_from_scratch.data.convert", "instance-masks", "--images", str(images),
               "--masks", str(masks), "--out", str(tmp_path / "out"), "--split", "train"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and "b.jpg" in result.stderr
    assert_nothing_written(tmp_path / "out", "train")


@pytest.mark.parametrize("command", ["instance-masks", "labelme"])
def test_help_shows_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"example:\n  python -m mrcnn_from_scratch.data.convert {command} --" in capsys.readouterr().out
