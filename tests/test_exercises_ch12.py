"""Chapter 12's checkers pass correct code (ours, pycocotools' and the package's) and reject plausible mistakes."""
import copy
import random

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from mrcnn_from_scratch.data.convert import mask_annotation
from mrcnn_from_scratch.exercises.ch12 import (check_class_specific_keys, check_instances_from_mask,
                                               check_level_histogram, check_split_images)
from mrcnn_from_scratch.poolers import box_levels
from mrcnn_from_scratch.pretrained import CLASS_SPECIFIC_PREFIXES

# ------------------------------------------------------------------ correct implementations


def instances_from_mask(ids, box="xywh", skip_background=True, contiguous=False, pixels_as_bool=True):
    """From the pixels; the keyword arguments switch on the plausible mistakes tested below."""
    values = range(1, int(ids.max()) + 1) if contiguous else np.unique(ids)
    objects = []
    for value in values:
        if value == 0 and skip_background:
            continue
        mask = ids == value
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        if len(rows) == 0:
            objects.append((mask, [0.0, 0.0, 0.0, 0.0], 0))
            continue
        x1, y1, x2, y2 = cols[0], rows[0], cols[-1], rows[-1]
        bbox = {"xywh": [x1, y1, x2 - x1 + 1, y2 - y1 + 1], "xyxy": [x1, y1, x2 + 1, y2 + 1],
                "no +1": [x1, y1, x2 - x1, y2 - y1]}[box]
        objects.append((mask if pixels_as_bool else mask.astype(np.uint8), [float(v) for v in bbox], int(mask.sum())))
    return objects


def instances_by_converter(ids):
    """The package's converter writes each object's fields with `mask_annotation`."""
    found = []
    for value in np.unique(ids[ids != 0]):
        fields = mask_annotation(ids == value)
        found.append((ids == value, fields["bbox"], fields["area"]))
    return found


def class_specific_keys(ours, theirs):
    return [key for key in ours if key in theirs and ours[key].shape != theirs[key].shape]


def level_histogram(boxes, canonical_scale, eps=1e-6, rounding=torch.floor, clamp=True, size="sqrt", level=4):
    """The FPN rule by hand; the keyword arguments switch on the plausible mistakes tested below."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = {"sqrt": torch.sqrt(w * h), "mean": (w + h) / 2, "width": w}[size]
    k = rounding(level + torch.log2(side / canonical_scale) + eps)
    if clamp:
        k = k.clamp(2, 5)
    else:
        k = k[(k >= 2) & (k <= 5)]
    return torch.bincount((k - 2).long(), minlength=4)


def split_images(dataset, val_count, seed, mistake=None):
    """A correct split; `mistake` switches on the plausible mistakes tested below."""
    images = list(dataset["images"])
    pool = dataset["images"]
    if mistake == "in place":
        images = dataset["images"]
    if mistake == "images with annotations":
        with_objects = {a["image_id"] for a in dataset["annotations"]}
        images = pool = [image for image in images if image["id"] in with_objects]
    if mistake != "first images":
        random.Random(seed).shuffle(images)
    if mistake == "unseeded":
        random.shuffle(images)
    val_ids = {image["id"] for image in images[:val_count]}
    if mistake == "fraction":
        val_ids = {image["id"] for image in images if random.Random(seed + image["id"]).random() < 0.25}
    categories = list(dataset["categories"])

    def part(in_val):
        chosen = [image for image in pool if (image["id"] in val_ids) == in_val]
        ids = {image["id"] for image in chosen}
        annotations = [a for a in dataset["annotations"] if a["image_id"] in ids]
        if mistake == "annotations at random":
            annotations = [a for a in dataset["annotations"] if (random.Random(a["id"]).random() < 0.3) == in_val]
        kept = categories
        if mistake == "categories present":
            present = {a["category_id"] for a in annotations}
            kept = [c for c in categories if c["id"] in present]
        if mistake == "renumbered categories":
            kept = [{**c, "id": i} for i, c in enumerate(categories, 1)]
        return {"images": chosen, "annotations": annotations, "categories": kept}

    return part(False), part(True)


def split_with_numpy(dataset, val_count, seed):
    order = np.random.default_rng(seed).permutation(len(dataset["images"]))
    val = {dataset["images"][i]["id"] for i in order[:val_count]}
    train_part, val_part = copy.deepcopy(dataset), copy.deepcopy(dataset)
    train_part["images"] = [i for i in dataset["images"] if i["id"] not in val]
    val_part["images"] = [i for i in dataset["images"] if i["id"] in val]
    train_part["annotations"] = [a for a in dataset["annotations"] if a["image_id"] not in val]
    val_part["annotations"] = [a for a in dataset["annotations"] if a["image_id"] in val]
    return train_part, val_part


# ------------------------------------------------------------------ correct implementations pass

def test_checkers_pass_correct_implementations(capsys):
    assert check_instances_from_mask(instances_from_mask)
    assert check_instances_from_mask(instances_by_converter)
    assert check_instances_from_mask(lambda ids: [(torch.from_numpy(m), torch.tensor(b), torch.tensor(a))
                                                  for m, b, a in instances_from_mask(ids)])
    assert check_class_specific_keys(class_specific_keys)
    assert check_class_specific_keys(lambda ours, theirs: set(class_specific_keys(ours, theirs)))
    assert check_level_histogram(level_histogram)
    assert check_level_histogram(lambda boxes, scale: torch.bincount(box_levels(boxes, 2, 5, scale), minlength=4))
    assert check_split_images(split_images)
    assert check_split_images(split_with_numpy)
    assert capsys.readouterr().out.count("✓") == 9


def test_unfilled_stub_raises_not_implemented():
    def stub(*args):
        raise NotImplementedError

    for check in (check_instances_from_mask, check_class_specific_keys, check_level_histogram, check_split_images):
        with pytest.raises(NotImplementedError):
            check(stub)


def test_failure_messages_stay_short():
    # The inputs are state dicts, masks and COCO dicts: the report summarizes them instead of printing them.
    with pytest.raises(AssertionError) as failure:
        check_class_specific_keys(lambda ours, theirs: [])
    assert len(str(failure.value)) < 2000 and "state dict of" in str(failure.value)
    with pytest.raises(AssertionError) as failure:
        check_split_images(lambda d, n, s: (d, d))
    assert len(str(failure.value)) < 2000 and "COCO dict" in str(failure.value)
    with pytest.raises(AssertionError) as failure:
        check_instances_from_mask(lambda ids: instances_from_mask(ids, box="xyxy"))
    assert len(str(failure.value)) < 4000 and "pixels>" in str(failure.value)


# ------------------------------------------------------------------------- wrong instances

@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda ids: instances_from_mask(ids, skip_background=False), "there are 3 objects, your function gave 4"),
        (lambda ids: instances_from_mask(ids, box="xyxy"), "the bbox of object"),
        (lambda ids: instances_from_mask(ids, box="no +1"), "the bbox of object"),
        (lambda ids: instances_from_mask(ids, contiguous=True), '"ids with gaps'),
        (lambda ids: instances_from_mask(ids, pixels_as_bool=False), "should be a bool np.ndarray"),
        (lambda ids: instances_from_mask(ids)[::-1], "increasing order of id"),
        (lambda ids: [(m, b, a) for m, b, a in instances_from_mask(ids) if a > 1], '"a one-pixel object"'),
        (lambda ids: [(m, b, float(mask_utils.area(mask_utils.encode(np.asfortranarray(m.astype(np.uint8))))) + 0.5)
                      for m, b, _ in instances_from_mask(ids)], "the area of object"),
        (lambda ids: [(ids == v, b) for (m, b, a), v in zip(instances_from_mask(ids), np.unique(ids[ids != 0]))],
         "should be a tuple"),
    ],
    ids=["background as an object", "(x1, y1, x2, y2)", "width without + 1", "ids assumed 1..N", "uint8 masks",
         "decreasing ids", "drops tiny objects", "area off", "no area"],
)
def test_check_instances_from_mask_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_instances_from_mask(wrong)


def connected_parts(mask):
    """Label the 4-connected parts of a bool mask 1, 2, ... (a flood fill)."""
    parts, count = np.zeros(mask.shape, dtype=np.int64), 0
    for start in zip(*np.nonzero(mask)):
        if parts[start]:
            continue
        count += 1
        stack = [start]
        while stack:
            y, x = stack.pop()
            if 0 <= y < mask.shape[0] and 0 <= x < mask.shape[1] and mask[y, x] and not parts[y, x]:
                parts[y, x] = count
                stack += [(y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)]
    return parts, count


def test_check_instances_from_mask_rejects_split_objects_as_two():
    def by_connected_parts(ids):
        objects = []
        for value in np.unique(ids[ids != 0]):
            parts, count = connected_parts(ids == value)
            for part in range(1, count + 1):
                objects += instances_from_mask((parts == part).astype(np.int64))
        return objects

    with pytest.raises(AssertionError, match='"one object in two parts"'):
        check_instances_from_mask(by_connected_parts)


# ------------------------------------------------------------------------- wrong keys

@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda ours, theirs: [k for k in ours if k.startswith(CLASS_SPECIFIC_PREFIXES)], '"the same classes"'),
        (lambda ours, theirs: [k for k in ours if "predictor" in k and ours[k].shape != theirs[k].shape]
         + ["roi_heads.mask_predictor.upsample.weight"], "should not hold roi_heads.mask_predictor.upsample"),
        (lambda ours, theirs: [k for k in ours if k.endswith("weight") and k in theirs
                               and ours[k].shape != theirs[k].shape], "missing .*bias"),
        (lambda ours, theirs: [k for k in ours if "cls_score" in k and ours[k].shape != theirs[k].shape],
         "missing .*bbox_pred"),
        (lambda ours, theirs: [k for k in theirs if theirs[k].shape != ours[k].shape],
         '"a file with a tensor the model does not have".*KeyError'),
        (lambda ours, theirs: [k for k in set(ours) ^ set(theirs)] + class_specific_keys(ours, theirs),
         "should not hold backbone.body.fc"),
        (lambda ours, theirs: ",".join(class_specific_keys(ours, theirs)), "return a list of keys"),
    ],
    ids=["by name", "whole predictors", "weights only", "cls_score only", "keys of the file", "keys in one only",
         "a string"],
)
def test_check_class_specific_keys_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_class_specific_keys(wrong)


# ---------------------------------------------------------------------- wrong level histogram

@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda b, s: level_histogram(b, s, rounding=torch.round), "the counts has wrong values"),
        (lambda b, s: level_histogram(b, s, rounding=torch.ceil), "the counts has wrong values"),
        (lambda b, s: level_histogram(b, s, eps=0.0), '"sides whose log2 rounds down in float32"'),
        (lambda b, s: level_histogram(b, s, clamp=False), "the counts has wrong values"),
        (lambda b, s: level_histogram(b, s, size="mean"), "the counts has wrong values"),
        (lambda b, s: level_histogram(b, s, size="width"), "the counts has wrong values"),
        (lambda b, s: level_histogram(b, s, level=5), "the counts has wrong values"),
        (lambda b, s: level_histogram(b, 224), '"100 boxes in 128-pixel images, canonical scale 36"'),
        (lambda b, s: torch.bincount(level_histogram(b, s).repeat_interleave(1), minlength=5)[:5]
         if len(b) else torch.zeros(5, dtype=torch.int64), "should have shape \\[4\\]"),
        (lambda b, s: level_histogram(b, s).float(), "should have dtype torch.int64"),
        (lambda b, s: level_histogram(b, s).tolist(), "should be a torch.Tensor"),
    ],
    ids=["round", "ceil", "no epsilon", "no clamp", "mean of the sides", "width", "canonical level 5",
         "scale fixed at 224", "five levels", "float counts", "a list"],
)
def test_check_level_histogram_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_level_histogram(wrong)


def test_log2_case_needs_the_epsilon():
    # The case about float32 rounding only means something if, without the 1e-6, its boxes change level.
    boxes = torch.tensor([[59.50343704223633, 62.39761734008789, 77.50343322753906, 80.39761352539062],
                          [8.762031555175781, 99.80860137939453, 44.76203155517578, 135.80859375]])
    assert torch.equal(level_histogram(boxes, 36), torch.tensor([0, 1, 1, 0]))
    assert torch.equal(level_histogram(boxes, 36, eps=0.0), torch.tensor([1, 1, 0, 0]))


# --------------------------------------------------------------------------------- wrong split

@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda d, n, s: split_images(d, n, s, "first images"), "seeds 0 and 1 gave the same val images"),
        (lambda d, n, s: split_images(d, n, s, "unseeded"), "the same seed should give the same split"),
        (lambda d, n, s: split_images(d, n, s, "in place"), "changed its input `dataset`"),
        (lambda d, n, s: split_images(d, n, s, "images with annotations"), '"two categories, images without objects"'),
        (lambda d, n, s: split_images(d, n, s, "fraction"), "val should have 5 images"),
        (lambda d, n, s: split_images(d, n, s, "annotations at random"), "annotations should be exactly those"),
        (lambda d, n, s: split_images(d, n, s, "categories present"), '"a rare category"'),
        (lambda d, n, s: split_images(d, n, s, "renumbered categories"), "categories should be the dataset's"),
        (lambda d, n, s: split_images(d, n, s)[::-1], "val should have 5 images"),
        (lambda d, n, s: {"train": split_images(d, n, s)[0], "val": split_images(d, n, s)[1]}, "return two dicts"),
    ],
    ids=["the first images", "unseeded", "shuffles the input", "drops images without objects",
         "a fraction, not a count", "annotations split on their own", "only the categories present",
         "categories renumbered", "(val, train)", "a dict"],
)
def test_check_split_images_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_split_images(wrong)
