"""The shapes generator and the COCO-format Dataset: round trip, determinism, occlusion, hand-written
COCO files, bad annotations and the flip augmentation."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mrcnn_from_scratch.data import CocoInstances, collate_fn, generate_shapes_dataset, image_rng, make_shapes_image
from mrcnn_from_scratch.data.errors import DataError
from mrcnn_from_scratch.data.shapes import CATEGORIES, Shape, draw_shapes, shape_mask
from mrcnn_from_scratch.data.transforms import train_transforms

# pycocotools' mask decoding trips a NumPy 2 DeprecationWarning inside its compiled code, once per mask.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def tight_box(mask) -> list[int]:
    """[x1, y1, x2, y2] around the True pixels of an [H, W] mask, in pixel-edge coordinates."""
    ys, xs = np.nonzero(np.asarray(mask))
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    generate_shapes_dataset(out, train=8, val=3, size=64, seed=0, progress=False)
    return out


def test_generated_files_match_what_was_drawn(shapes_dir):
    coco = COCO(str(shapes_dir / "annotations" / "instances_train.json"))
    assert [c["name"] for c in coco.loadCats(sorted(coco.getCatIds()))] == list(CATEGORIES)
    assert len(coco.imgs) == 8
    for index, image_id in enumerate(sorted(coco.imgs)):
        info = coco.imgs[image_id]
        image, masks, labels = make_shapes_image(image_rng(0, "train", index), size=64)
        assert np.array_equal(np.asarray(Image.open(shapes_dir / "train" / info["file_name"])), image)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert [ann["category_id"] for ann in anns] == labels.tolist()
        for ann, mask in zip(anns, masks):
            assert np.array_equal(coco.annToMask(ann), mask)
            assert ann["area"] == mask.sum() and ann["iscrowd"] == 0
            x1, y1, x2, y2 = tight_box(mask)
            assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1]
        # Visible parts never overlap: each pixel shows at most one shape.
        assert masks.sum(axis=0).max(initial=0) <= 1


def test_coco_instances_on_shapes(shapes_dir):
    dataset = CocoInstances(shapes_dir / "val", shapes_dir / "annotations" / "instances_val.json")
    assert len(dataset) == 3
    assert dataset.categories == {1: "square", 2: "circle", 3: "triangle"}
    for image, target in dataset:
        assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
        assert 0 <= image.min() and image.max() <= 1
        masks = target["masks"]
        assert masks.dtype == torch.uint8 and masks.shape[1:] == (64, 64) and len(masks) > 0
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        assert isinstance(target["image_id"], int)
        assert ((1 <= target["labels"]) & (target["labels"] <= 3)).all()
        torch.testing.assert_close(target["area"], masks.sum(dim=(1, 2)).float())
        for box, mask in zip(target["boxes"], masks):
            assert box.tolist() == tight_box(mask)
        assert target["iscrowd"].tolist() == [0] * len(masks)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate_fn)
    images, targets = next(iter(loader))
    assert len(images) == len(targets) == 2 and images[0].shape == (3, 64, 64)


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    for name, seed in [("a", 5), ("b", 5), ("c", 6)]:
        generate_shapes_dataset(tmp_path / name, train=3, val=2, size=48, seed=seed, progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 2 + 3 + 2
    for file in files:
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
    for file in files:
        assert (tmp_path / "a" / file).read_bytes() != (tmp_path / "c" / file).read_bytes(), file


def test_occluded_shape_keeps_its_visible_part_and_hidden_shapes_are_not_drawn():
    background = np.full((64, 64, 3), 30, dtype=np.uint8)
    square = Shape("square", 30.0, 30.0, 20.0, np.pi / 4, (200, 0, 0))  # axis-aligned, 16 to 44
    circle = Shape("circle", 44.0, 44.0, 10.0, 0.0, (0, 200, 0))  # covers the square's corner
    image, masks, labels = draw_shapes(background, [square, circle])
    square_full, circle_full = shape_mask(square, 64), shape_mask(circle, 64)
    assert labels.tolist() == [1, 2]
    assert np.array_equal(masks[0], square_full & ~circle_full)
    assert np.array_equal(masks[1], circle_full)
    assert 0 < (square_full & circle_full).sum() < 0.5 * square_full.sum()
    assert (image[masks[0]] == (200, 0, 0)).all() and (image[circle_full] == (0, 200, 0)).all()

    # A triangle with less than 20% of it left visible is not drawn and not annotated.
    triangle = Shape("triangle", 38.0, 30.0, 10.0, 0.0, (0, 0, 200))  # its tip sticks out
    visible = shape_mask(triangle, 64) & ~square_full
    assert 0 < visible.sum() < 0.2 * shape_mask(triangle, 64).sum()
    image, masks, labels = draw_shapes(background, [triangle, square])
    assert labels.tolist() == [1] and np.array_equal(masks[0], square_full)
    assert not (image == (0, 0, 200)).all(axis=-1).any()


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: alternating run lengths of 0s and 1s, column by column, starting with 0s."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [len(flat)]])).tolist()
    return {"size": list(mask.shape), "counts": [0] + runs if flat[0] else runs}


@pytest.fixture
def coco_dir(tmp_path):
    """A hand-written COCO file with gaps in its category ids (3 and 7), images in RGB, L and RGBA."""
    height, width = 20, 30
    for name, mode in [("a.png", "RGB"), ("b.png", "L"), ("c.png", "RGBA")]:
        Image.new(mode, (width, height), color=(90,) * len(mode)).save(tmp_path / name)
    rle_mask = np.zeros((height, width), dtype=np.uint8)
    rle_mask[10:15, 20:26] = 1
    compressed = mask_utils.encode(np.asfortranarray(rle_mask))
    compressed["counts"] = compressed["counts"].decode("utf-8")
    crowd_mask = np.zeros((height, width), dtype=np.uint8)
    crowd_mask[0:4, 0:30] = 1
    dataset = {
        "images": [
            {"id": 10, "file_name": "a.png", "height": height, "width": width},
            {"id": 11, "file_name": "b.png", "height": height, "width": width},  # no annotations
            {"id": 12, "file_name": "c.png", "height": height, "width": width},
        ],
        "annotations": [
            {"id": 100, "image_id": 10, "category_id": 7, "segmentation": [[2, 3, 12, 3, 12, 9, 2, 9]],
             "area": 60, "bbox": [2, 3, 10, 6], "iscrowd": 0},
            {"id": 101, "image_id": 10, "category_id": 3, "segmentation": compressed,
             "area": 30, "bbox": [20, 10, 6, 5], "iscrowd": 0},
            {"id": 102, "image_id": 10, "category_id": 3, "segmentation": uncompressed_rle(crowd_mask),
             "area": 120, "bbox": [0, 0, 30, 4], "iscrowd": 1},
            {"id": 103, "image_id": 12, "category_id": 7, "segmentation": uncompressed_rle(rle_mask),
             "area": 30, "bbox": [20, 10, 6, 5.5], "iscrowd": 0},  # box sticks out 0.5 px below the mask
        ],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }
    (tmp_path / "instances.json").write_text(json.dumps(dataset))
    return tmp_path, dataset, rle_mask


def test_hand_written_coco_file(coco_dir):
    folder, _, rle_mask = coco_dir
    dataset = CocoInstances(folder, folder / "instances.json")
    assert dataset.categories == {1: "cat", 2: "dog"}
    assert dataset.cat_id_to_label == {3: 1, 7: 2} and dataset.label_to_cat_id == {1: 3, 2: 7}
    assert len(dataset) == 3

    image, target = dataset[0]
    assert image.shape == (3, 20, 30) and torch.allclose(image, torch.full_like(image, 90 / 255))
    assert target["image_id"] == 10
    assert target["labels"].tolist() == [2, 1]  # the crowd annotation is left out
    assert target["boxes"].tolist() == [[2, 3, 12, 9], [20, 10, 26, 15]]
    assert target["area"].tolist() == [60, 30] and target["iscrowd"].tolist() == [0, 0]
    assert target["masks"][0].sum() == 60 and tight_box(target["masks"][0]) == [2, 3, 12, 9]
    assert np.array_equal(target["masks"][1].numpy(), rle_mask)

    image, target = dataset[1]
    assert image.shape == (3, 20, 30) and target["image_id"] == 11
    expected = {"boxes": (0, 4), "labels": (0,), "masks": (0, 20, 30), "area": (0,), "iscrowd": (0,)}
    assert {key: tuple(target[key].shape) for key in expected} == expected
    assert target["boxes"].dtype == torch.float32 and target["masks"].dtype == torch.uint8

    image, target = dataset[2]
    assert image.shape == (3, 20, 30)
    assert target["labels"].tolist() == [2] and np.array_equal(target["masks"][0].numpy(), rle_mask)
    assert target["boxes"].tolist() == [[20, 10, 26, 15.5]]


@pytest.mark.parametrize(
    "change, match",
    [
        ({"bbox": [25, 3, 10, 6]}, r"box \[25, 3, 10, 6\] .* outside the 30×20 image"),
        ({"bbox": [2, 3, "10", 6]}, r"bbox must be \[x, y, w, h\], four numbers"),
        ({"segmentation": [[2, 3, 12, 3]]}, r"at least 3 \(x, y\) points"),
        ({"category_id": 5}, r"unknown category id 5"),
    ],
)
def test_bad_annotation_names_image_and_annotation(coco_dir, change, match):
    folder, dataset, _ = coco_dir
    dataset["annotations"][0].update(change)
    (folder / "instances.json").write_text(json.dumps(dataset))
    with pytest.raises(ValueError, match=r"image 10 \(a\.png\), annotation 100: .*" + match):
        CocoInstances(folder, folder / "instances.json")[0]


def test_missing_image_file_is_named(coco_dir):
    folder, _, _ = coco_dir
    (folder / "b.png").unlink()
    dataset = CocoInstances(folder, folder / "instances.json")  # checked lazily, when loaded
    with pytest.raises(DataError, match=r"image 11 \(b\.png\): file not found"):
        dataset[1]


def test_horizontal_flip_moves_boxes_and_masks(shapes_dir):
    args = (shapes_dir / "train", shapes_dir / "annotations" / "instances_train.json")
    plain, flipped = CocoInstances(*args), CocoInstances(*args, transforms=train_transforms(flip_prob=1.0))
    for (image, target), (image_f, target_f) in zip(plain, flipped):
        assert type(image_f) is torch.Tensor and type(target_f["boxes"]) is torch.Tensor
        assert torch.equal(image_f, image.flip(-1)) and torch.equal(target_f["masks"], target["masks"].flip(-1))
        for box, mask in zip(target_f["boxes"], target_f["masks"]):
            assert box.tolist() == tight_box(mask)
        width = image.shape[-1]
        torch.testing.assert_close(target_f["boxes"][:, [2, 0]], width - target["boxes"][:, [0, 2]])
        assert torch.equal(target_f["labels"], target["labels"]) and target_f["image_id"] == target["image_id"]


def test_data_works_without_torchvision_and_cli_runs_cleanly(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        sys.modules["torchvision"] = None  # any `import torchvision` now raises ImportError
        from mrcnn_from_scratch.data import CocoInstances, collate_fn, generate_shapes_dataset
        generate_shapes_dataset(sys.argv[1], train=1, val=1, size=32, seed=0, progress=False)
        CocoInstances(sys.argv[1] + "/val", sys.argv[1] + "/annotations/instances_val.json")[0]
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "a")], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    # The documented command, with warnings as errors (runpy warns if the package imported the module).
    command = ["-W", "error", "-m", "mrcnn_from_scratch.data.shapes", "--out", str(tmp_path / "b")]
    result = subprocess.run([sys.executable, *command, "--train", "2", "--val", "1", "--size", "32"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "b" / "train").glob("*.png"))) == 2
