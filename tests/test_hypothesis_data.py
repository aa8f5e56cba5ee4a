"""Property tests of CocoInstances' parsing with Hypothesis: random polygons and run-length encodings must
give pycocotools' masks, and any annotation at all, however malformed, must either load or be refused with
a DataError naming it, never end in another exception.

Derandomized and few examples, as in test_hypothesis_ops.py, so that CI is deterministic and quick. Each
test counts in SEEN which branches its examples took, and test_examples_are_not_vacuous checks that every
branch was taken: a test whose examples all end in the same `except` passes whatever the loader does.
"""
import json
import tempfile
from collections import Counter
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
SEEN: Counter = Counter()  # what the examples exercised, summed over the run


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
    """Catches boxes not clipped to the image, empty boxes kept (or non-empty ones dropped), masks out of
    step with their boxes, and wrong labels, for polygons and both kinds of RLE."""
    ann_file = dataset_with(folder, annotations)
    _, target = CocoInstances(folder, ann_file)[0]
    coco = COCO(str(ann_file))
    # torchvision's reference (ConvertCocoPolysToMask): float32 boxes, x2 = x + w, clipped, empty ones dropped.
    anns = coco.loadAnns(coco.getAnnIds(imgIds=1))
    boxes = torch.tensor([ann["bbox"] for ann in anns], dtype=torch.float32)
    boxes[:, 2:] += boxes[:, :2]
    unclipped = boxes.clone()
    boxes[:, 0::2].clamp_(min=0, max=WIDTH)
    boxes[:, 1::2].clamp_(min=0, max=HEIGHT)
    keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
    assert torch.equal(target["boxes"], boxes[keep])
    masks = np.stack([coco.annToMask(ann) for ann, kept in zip(anns, keep) if kept] or [np.zeros((HEIGHT, WIDTH))])
    assert np.array_equal(target["masks"].numpy(), masks[: int(keep.sum())])
    assert target["labels"].tolist() == [1] * int(keep.sum())
    SEEN["masks: examples"] += 1
    SEEN["masks: boxes kept"] += int(keep.sum())
    SEEN["masks: empty boxes dropped"] += int((~keep).sum())
    SEEN["masks: boxes clipped"] += int((boxes != unclipped).any(1)[keep].sum())
    for ann in anns:
        segmentation = ann["segmentation"]
        SEEN["masks: " + ("polygons" if isinstance(segmentation, list) else
                          "compressed RLE" if isinstance(segmentation["counts"], str) else "uncompressed RLE")] += 1


PIXELS = HEIGHT * WIDTH


@st.composite
def run_lengths(draw, total: int):
    """Run lengths (background first) that add up to `total`: zero runs, at the start or anywhere, and long
    ones, which pycocotools stores in several characters, as differences from the run two before."""
    cuts = sorted(draw(st.lists(st.integers(0, total), max_size=12)))
    return [end - start for start, end in zip([0, *cuts], [*cuts, total])]


def compressed(runs: list[int]) -> str:
    """pycocotools' own compressed string for these runs (it encodes any runs, adding up or not)."""
    return mask_utils.frPyObjects({"size": [HEIGHT, WIDTH], "counts": runs}, HEIGHT, WIDTH)["counts"].decode("ascii")


def check_rle_string(folder: Path, kind: str, counts: str) -> None:
    """An annotation with these RLE counts must load as pycocotools decodes it, or be refused with our
    DataError; `kind` says which of the two it must be, where the string's origin decides it."""
    ann_file = dataset_with(folder, [{"segmentation": {"size": [HEIGHT, WIDTH], "counts": counts},
                                      "bbox": [0, 0, 4, 4], "area": 16}])
    try:
        _, target = CocoInstances(folder, ann_file)[0]
    except DataError as error:
        assert kind in ("runs not adding up", "any text"), f"{kind} {counts!r} refused: {error}"
        assert "annotation 1: RLE counts do not decode" in str(error)
        SEEN[f"RLE: {kind}, refused"] += 1
        return
    assert kind != "runs not adding up", f"{counts!r} adds up to another number of pixels, but loads"
    rle = {"size": [HEIGHT, WIDTH], "counts": counts.encode("ascii")}
    assert np.array_equal(target["masks"][0].numpy(), mask_utils.decode(rle))
    SEEN[f"RLE: {kind}, loaded"] += 1


@EXAMPLES
@given(counts=st.one_of(st.tuples(st.just("a mask's own encoding"),
                                  masks.map(lambda mask: mask_utils.encode(mask)["counts"].decode("ascii"))),
                        st.tuples(st.just("any text"),  # mostly not RLE
                                  st.text(st.characters(min_codepoint=40, max_codepoint=120), max_size=12))))
def test_any_rle_string_gives_pycocotools_mask_or_our_error(folder, counts):
    """Catches any exception other than our DataError on a string that is not RLE, and a valid mask's
    own encoding refused (an error message alone would pass a loader that refuses every string)."""
    check_rle_string(folder, *counts)


@settings(EXAMPLES, max_examples=80)
@given(total=st.sampled_from([PIXELS, PIXELS, PIXELS - 1, PIXELS + 1]) | st.integers(0, 3 * PIXELS), data=st.data())
def test_rle_runs_load_if_and_only_if_they_cover_the_image(folder, total, data):
    """Catches an RLE decoder that refuses valid strings (zero runs, long runs stored in several characters,
    runs stored as negative differences from the run two before), or accepts runs that do not cover the
    image exactly, which pycocotools would decode into a garbage mask."""
    counts = compressed(data.draw(run_lengths(total)))
    check_rle_string(folder, "runs adding up" if total == PIXELS else "runs not adding up", counts)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 40) | st.integers() | st.floats(allow_nan=False) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12)


@EXAMPLES
@given(changes=st.dictionaries(st.sampled_from(["bbox", "area", "segmentation", "category_id", "iscrowd"]),
                               json_values, max_size=3))
def test_any_malformed_annotation_loads_or_is_named(folder, changes):
    """Catches an exception other than our DataError on a malformed annotation, an error that does not
    name the annotation, one the check (check_split) does not report, and a valid annotation refused."""
    ann = {"segmentation": [[1, 1, 8, 1, 8, 8]], "bbox": [1, 1, 7, 7], "area": 24.5, **changes}
    ann_file = dataset_with(folder, [ann])
    try:
        report = check_split(folder, ann_file, training=True)
    except DataError as error:  # a key pycocotools indexes by is wrong: the whole file is refused
        assert changes, f"the unchanged annotation is refused: {error}"
        assert str(error).startswith(f"{ann_file}: annotations[0] must be an object")
        with pytest.raises(DataError, match="annotations\\[0\\]"):
            CocoInstances(folder, ann_file)
        SEEN["malformed: the file refused"] += 1
        return
    try:
        image, target = CocoInstances(folder, ann_file)[0]
    except DataError as error:
        assert changes, f"the unchanged annotation is refused: {error}"
        assert str(error).startswith("image 1 (a.png), annotation 1: ")
        assert report.errors  # what the dataset refuses, the check reports
        SEEN["malformed: the annotation refused"] += 1
        return
    assert image.shape == (3, HEIGHT, WIDTH) and len(target["masks"]) == len(target["boxes"]) <= 1
    if not changes:
        assert target["boxes"].tolist() == [[1.0, 1.0, 8.0, 8.0]] and target["masks"].sum() > 0
    SEEN["malformed: loaded"] += 1


def test_examples_are_not_vacuous():
    """Catches property tests that pass whatever the loader does, because every example took the same
    branch: all RLE strings refused, none of the changed annotations loaded, no box clipped or dropped."""
    runs = {test_masks_and_boxes_agree_with_pycocotools: "masks: examples",
            test_any_rle_string_gives_pycocotools_mask_or_our_error: "RLE: a mask's",
            test_rle_runs_load_if_and_only_if_they_cover_the_image: "RLE: runs",
            test_any_malformed_annotation_loads_or_is_named: "malformed: "}
    for test, prefix in runs.items():
        if not any(key.startswith(prefix) for key in SEEN):  # it did not run here (-k, xdist): run it now
            with tempfile.TemporaryDirectory() as name:
                Image.new("RGB", (WIDTH, HEIGHT), (10, 20, 30)).save(Path(name) / "a.png")
                test(folder=Path(name))
    seen = dict(SEEN)
    for key in ["masks: boxes kept", "masks: empty boxes dropped", "masks: boxes clipped", "masks: polygons",
                "masks: compressed RLE", "masks: uncompressed RLE",
                "RLE: a mask's own encoding, loaded", "RLE: runs adding up, loaded",
                "RLE: runs not adding up, refused", "RLE: any text, refused",
                "malformed: the file refused", "malformed: the annotation refused", "malformed: loaded"]:
        assert seen.get(key, 0) >= 5, (key, seen)
