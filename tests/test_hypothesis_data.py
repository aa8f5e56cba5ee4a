"""Property tests of CocoInstances' parsing with Hypothesis: random polygons and run-length encodings must
give pycocotools' masks, and any annotation at all, however malformed, must either load or be refused with
a DataError naming it, never end in another exception.

Derandomized and few examples, as in test_hypothesis_ops.py, so that CI is deterministic and quick.
"""
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mrcnn_from_scratch.data import CocoInstances
from mrcnn_from_scratch.data.check import check_split
from mrcnn_from_scratch.data.errors import DataError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")
EXAMPLES = settings(derandomize=True, database=None, deadline=None, max_examples=40,
                    suppress_health_check=[HealthCheck.too_slow])
HEIGHT, WIDTH = 12, 16


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as name:
        Image.new("RGB", (WIDTH, HEIGHT), (10, 20, 30)).save(Path(name) / "a.png")
        yield Path(name)


def dataset_with(folder: Path, annotations: list[dict]) -> Path:
    """A one-image COCO file (image 1, a.png) holding `annotations`, numbered from 1."""
    ann_file = folder / "instances.json"
    ann_file.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "height": HEIGHT, "width": WIDTH}],
        "categories": [{"id": 4, "name": "thing"}],
        "annotations": [{"id": i, "image_id": 1, "category_id": 4, "iscrowd": 0, **ann}
                        for i, ann in enumerate(annotations, 1)]}))
    return ann_file


points = st.tuples(st.floats(0, WIDTH), st.floats(0, HEIGHT))
polygons = st.lists(st.lists(points, min_size=3, max_size=8).map(lambda p: [v for xy in p for v in xy]),
                    min_size=1, max_size=3)
masks = st.lists(st.booleans(), min_size=HEIGHT * WIDTH, max_size=HEIGHT * WIDTH).map(
    lambda bits: np.asfortranarray(np.array(bits, dtype=np.uint8).reshape(HEIGHT, WIDTH)))


@st.composite
def segmentations(draw):
    """Polygons, a compressed RLE (a string) or an uncompressed one (a list of counts)."""
    kind = draw(st.sampled_from(["polygons", "compressed", "uncompressed"]))
    if kind == "polygons":
        return draw(polygons)
    rle = mask_utils.encode(draw(masks))
    if kind == "compressed":
        return {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode("ascii")}
    bits = mask_utils.decode(rle).flatten(order="F")  # column by column, as COCO counts
    changes = np.flatnonzero(np.diff(np.concatenate([[0], bits, [1 - bits[-1]]])))
    return {"size": [HEIGHT, WIDTH], "counts": np.diff(np.concatenate([[0], changes])).tolist()}


@st.composite
def boxes(draw):
    """[x, y, w, h]: inside the image, on its edge, or empty."""
    x, y = draw(st.floats(-1, WIDTH + 1)), draw(st.floats(-1, HEIGHT + 1))
    return [x, y, draw(st.floats(0, WIDTH + 1 - x)), draw(st.floats(0, HEIGHT + 1 - y))]


@EXAMPLES
@given(annotations=st.lists(st.fixed_dictionaries({"segmentation": segmentations(), "bbox": boxes(),
                                                    "area": st.floats(0, 200)}), min_size=1, max_size=4))
def test_masks_and_boxes_agree_with_pycocotools(folder, annotations):
    ann_file = dataset_with(folder, annotations)
    _, target = CocoInstances(folder, ann_file)[0]
    coco = COCO(str(ann_file))
    # torchvision's reference (ConvertCocoPolysToMask): float32 boxes, x2 = x + w, clipped, empty ones dropped.
    anns = coco.loadAnns(coco.getAnnIds(imgIds=1))
    boxes = torch.tensor([ann["bbox"] for ann in anns], dtype=torch.float32)
    boxes[:, 2:] += boxes[:, :2]
    boxes[:, 0::2].clamp_(min=0, max=WIDTH)
    boxes[:, 1::2].clamp_(min=0, max=HEIGHT)
    keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
    assert torch.equal(target["boxes"], boxes[keep])
    masks = np.stack([coco.annToMask(ann) for ann, kept in zip(anns, keep) if kept] or [np.zeros((HEIGHT, WIDTH))])
    assert np.array_equal(target["masks"].numpy(), masks[: int(keep.sum())])
    assert target["labels"].tolist() == [1] * int(keep.sum())


@EXAMPLES
@given(counts=st.one_of(masks.map(lambda mask: mask_utils.encode(mask)["counts"].decode("ascii")),  # valid
                        st.text(st.characters(min_codepoint=40, max_codepoint=120), max_size=12)))  # mostly not
def test_any_rle_string_gives_pycocotools_mask_or_our_error(folder, counts):
    ann_file = dataset_with(folder, [{"segmentation": {"size": [HEIGHT, WIDTH], "counts": counts},
                                      "bbox": [0, 0, 4, 4], "area": 16}])
    try:
        _, target = CocoInstances(folder, ann_file)[0]
    except DataError as error:
        assert "annotation 1: RLE counts do not decode" in str(error)
        return
    rle = {"size": [HEIGHT, WIDTH], "counts": counts.encode("ascii")}
    assert np.array_equal(target["masks"][0].numpy(), mask_utils.decode(rle))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 40) | st.integers() | st.floats(allow_nan=False) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12)


@EXAMPLES
@given(changes=st.dictionaries(st.sampled_from(["bbox", "area", "segmentation", "category_id", "iscrowd"]),
                               json_values, max_size=3))
def test_any_malformed_annotation_loads_or_is_named(folder, changes):
    ann = {"segmentation": [[1, 1, 8, 1, 8, 8]], "bbox": [1, 1, 7, 7], "area": 24.5, **changes}
    ann_file = dataset_with(folder, [ann])
    try:
        report = check_split(folder, ann_file, training=True)
    except DataError as error:  # a key pycocotools indexes by is wrong: the whole file is refused
        assert str(error).startswith(f"{ann_file}: annotations[0] must be an object")
        with pytest.raises(DataError, match="annotations\\[0\\]"):
            CocoInstances(folder, ann_file)
        return
    try:
        image, target = CocoInstances(folder, ann_file)[0]
    except DataError as error:
        assert str(error).startswith("image 1 (a.png), annotation 1: ")
        assert report.errors  # what the dataset refuses, the check reports
        return
    assert image.shape == (3, HEIGHT, WIDTH) and len(target["masks"]) == len(target["boxes"]) <= 1
