"""Checkers for chapter 12's exercises: objects from an instance-id mask, the tensors that fine-tuning must
re-make, the FPN level histogram of a set of boxes, and a train/val split of a COCO dataset.

Each checker runs your function on fixed cases, compares it with a reference (pycocotools for the masks,
the package's `poolers.box_levels` for the levels, the rule of `pretrained.load_pretrained` for the
weights), and raises AssertionError on the first case it gets wrong, showing that input. The functions
it expects:

    instances_from_mask(ids: np.ndarray int [H, W]) -> list of (mask, bbox, area)
        one entry per object, in increasing order of id: 0 is the background, every other value is one
        object (ids need not be 1, 2, 3, ...). mask: bool np.ndarray [H, W]; bbox: COCO's [x, y, w, h]
        of the mask's pixels, as pycocotools' toBbox gives it; area: the number of pixels, an int.
    class_specific_keys(our_state_dict: dict, file_state_dict: dict) -> list of str
        the keys present in both state dicts whose tensors have different shapes: the layers that
        loading the file must leave at their fresh initialization (in any order).
    level_histogram(boxes: Tensor[N, 4] float (x1, y1, x2, y2), canonical_scale: int) -> Tensor[4] int64
        how many boxes the FPN rule k = floor(4 + log2(sqrt(w·h) / canonical_scale) + 1e-6), clamped to
        [2, 5], puts on each of P2, P3, P4, P5.
    split_images(dataset: dict, val_count: int, seed: int) -> (train: dict, val: dict)
        a COCO instances dict split by image: `val_count` images chosen at random (the same ones for the
        same seed) go to val, the rest to train; each annotation goes with its image; both keep every
        category; the input is left unchanged.
"""
import copy
import functools
import random
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ..config import small_config
from ..data.convert import mask_annotation
from ..model import MaskRCNN, maskrcnn_resnet50_fpn
from ..poolers import box_levels
from ._checking import Case, run_cases, tensor_problem

# ------------------------------------------------------------------------------- objects of a mask


class _Objects(list):
    """A list of (mask, bbox, area), shown with each mask summarized, not printed pixel by pixel."""

    def __repr__(self) -> str:
        return "[" + ",\n ".join(_show_object(item) for item in self) + "]" if self else "[]"


def _show_object(item: Any) -> str:
    if not isinstance(item, (tuple, list)) or len(item) != 3:
        return repr(item)
    mask, bbox, area = item
    if isinstance(mask, (np.ndarray, Tensor)):
        shape = "×".join(str(side) for side in mask.shape)
        pixels = int((mask != 0).sum())
        mask = f"<mask {shape} {str(mask.dtype).replace('torch.', '')}, {pixels} pixels>"
    if isinstance(bbox, (np.ndarray, Tensor, list, tuple)) and all(isinstance(v, (int, float, np.number))
                                                                    for v in bbox):
        bbox = "[" + ", ".join(f"{float(v):g}" for v in bbox) + "]"
    return f"({mask}, {bbox}, {area!r})"


def reference_instances_from_mask(ids: np.ndarray) -> list:
    """The converter's own box and area of each object's mask (pycocotools' encoding of it)."""
    objects = _Objects()
    for object_id in np.unique(ids[ids != 0]):
        annotation = mask_annotation(ids == object_id)
        objects.append((ids == object_id, annotation["bbox"], annotation["area"]))
    return objects


def _pedestrian_ids() -> np.ndarray:
    """A 16 × 20 mask in the style of Penn-Fudan's PedMasks: three people, one partly behind another."""
    ids = np.zeros((16, 20), dtype=np.uint8)
    for object_id, (x, y, width, height) in enumerate([(1, 2, 4, 12), (8, 1, 5, 14), (11, 3, 6, 12)], start=1):
        ids[y:y + height, x:x + width] = object_id  # later people are in front
        ids[y:y + 2, x:x + 1] = 0  # the corners of the head are background
        ids[y:y + 2, x + width - 1:x + width] = 0
    return ids


def check_instances_from_mask(fn: Callable) -> bool:
    """Check fn(ids np.ndarray [H, W]) -> [(mask bool [H, W], [x, y, w, h], area int)] in increasing id order."""
    how = ("for each nonzero value of `ids` in increasing order, the mask is ids == value, the area its number of "
           "pixels, the box [x, y, w, h] with x, y the first column and row of the mask and w, h the number of "
           "columns and rows it spans")
    gaps = np.zeros((10, 12), dtype=np.int64)
    gaps[1:4, 2:7], gaps[5:9, 1:3], gaps[6:10, 8:12] = 7, 3, 12
    split = np.zeros((9, 14), dtype=np.int32)
    split[1:3, 1:4], split[5:8, 9:13] = 5, 5  # one object in two parts, as an occluded person can be
    split[4:6, 5:8] = 2
    edges = np.zeros((8, 10), dtype=np.uint16)
    edges[0:3, 0:4], edges[5:8, 6:10] = 1000, 2000  # touching the image's borders, with 16-bit ids
    single = np.zeros((5, 6), dtype=np.uint8)
    single[2, 3] = 1
    cases = [
        Case("three pedestrians, ids 1 to 3", {"ids": _pedestrian_ids()}, how),
        Case("ids with gaps: 3, 7 and 12", {"ids": gaps},
             "the ids need not run 1, 2, 3: take the values that occur (np.unique), not range(1, ids.max() + 1), "
             "and skip 0, the background"),
        Case("a one-pixel object", {"ids": single},
             "COCO's width is the number of columns the mask spans: a one-pixel object has w = h = 1, "
             "so w = last column - first column + 1"),
        Case("objects touching the image's borders, 16-bit ids", {"ids": edges},
             "the box is [x, y, w, h] (COCO's order), not (x1, y1, x2, y2)"),
        Case("one object in two parts", {"ids": split},
             "all pixels with the same id are one object, even when they do not touch: its box spans both parts"),
        Case("only background", {"ids": np.zeros((6, 7), dtype=np.uint8)}, "with no object, return an empty list"),
    ]

    def compare(received, expected, case):
        if not isinstance(received, (list, tuple)):
            return f"return a list of (mask, bbox, area), got {type(received).__name__}"
        if len(received) != len(expected):
            return f"there are {len(expected)} objects, your function gave {len(received)}"
        for number, (item, (mask, bbox, area)) in enumerate(zip(received, expected)):
            what = f"object {number} (id {int(np.unique(case.args['ids'][mask])[0])})"
            if not isinstance(item, (tuple, list)) or len(item) != 3:
                return f"{what} should be a tuple (mask, bbox, area), got {_show_object(item)}"
            got_mask, got_bbox, got_area = item
            if isinstance(got_mask, Tensor):
                got_mask = got_mask.numpy()
            if not isinstance(got_mask, np.ndarray) or got_mask.dtype != np.bool_:
                return f"the mask of {what} should be a bool np.ndarray (ids == value gives one)"
            if got_mask.shape != mask.shape or not np.array_equal(got_mask, mask):
                return f"the mask of {what} is not the pixels of that id (the objects go in increasing order of id)"
            try:
                got_bbox = [float(v) for v in got_bbox]
            except (TypeError, ValueError):
                return f"the bbox of {what} should be 4 numbers [x, y, w, h], got {got_bbox!r}"
            if len(got_bbox) != 4 or not np.allclose(got_bbox, bbox, rtol=0, atol=1e-6):
                return f"the bbox of {what} should be {bbox}, got {got_bbox}"
            if isinstance(got_area, Tensor) and got_area.numel() == 1:
                got_area = got_area.item()
            is_number = isinstance(got_area, (int, np.integer, float, np.floating))
            if isinstance(got_area, (bool, np.bool_)) or not is_number:
                return f"the area of {what} should be a number of pixels, got {type(got_area).__name__}"
            if got_area != area:
                return f"the area of {what} should be {area} pixels, got {got_area}"
        return None

    def shown(ids):
        result = fn(ids)
        return _Objects(result) if isinstance(result, list) else result

    return run_cases("check_instances_from_mask", shown, reference_instances_from_mask, cases, compare)


# --------------------------------------------------------------------- the layers to re-make


class _StateDict(dict):
    """A state dict shown by its size and origin in a failure message, not tensor by tensor."""

    def __init__(self, tensors: dict, description: str):
        super().__init__(tensors)
        self.description = description

    def __repr__(self) -> str:
        return f"<state dict of {len(self)} tensors: {self.description}>"


class _Keys(list):
    def __repr__(self) -> str:
        return "[" + ", ".join(repr(key) for key in sorted(self, key=str)) + "]"


@functools.lru_cache(maxsize=None)
def _state_dicts() -> dict[str, dict]:
    """Real models' state dicts: the small config for 4, 5 and 3 classes, ResNet-50-FPN for 91 and 2 (the
    large ones on the meta device: only their shapes are real)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        small = {k: MaskRCNN(small_config(k)).state_dict() for k in (3, 4, 5)}
        with torch.device("meta"):
            large = {k: maskrcnn_resnet50_fpn(num_classes=k).state_dict() for k in (2, 91)}
    return {"small 3": small[3], "small 4": small[4], "small 5": small[5], "r50 2": large[2], "r50 91": large[91]}


def reference_class_specific_keys(our_state_dict: dict, file_state_dict: dict) -> list[str]:
    return _Keys(key for key in our_state_dict
                 if key in file_state_dict and our_state_dict[key].shape != file_state_dict[key].shape)


def check_class_specific_keys(fn: Callable) -> bool:
    """Check fn(our_state_dict, file_state_dict) -> the keys in both whose tensors' shapes differ."""
    tensors = _state_dicts()

    def case(name, ours, theirs, hint="", extra=None):
        file = dict(tensors[theirs[0]])
        if extra:
            file.update(extra)
        return Case(name, {"our_state_dict": _StateDict(tensors[ours[0]], ours[1]),
                           "file_state_dict": _StateDict(file, theirs[1])}, hint)

    cases = [
        case("the shapes model (3 classes + background) into a polygons model (4 + background)",
             ("small 5", "small_config(5), the polygons' model"), ("small 4", "small_config(4), the shapes model"),
             "compare the shapes of the tensors stored under the same key: the class-specific layers have one row "
             "(or 4 rows) per class, their weights and their biases"),
        case("COCO's 91 labels into a model for pedestrians (2)",
             ("r50 2", "ResNet-50-FPN, 2 classes"), ("r50 91", "ResNet-50-FPN, 91 classes, as torchvision's COCO file"),
             "the mask head's upsampling (mask_predictor.upsample) has 256 channels whatever the classes: it is "
             "loaded, only the per-class logits are re-made"),
        case("the same classes", ("small 4", "small_config(4)"), ("small 4", "small_config(4)"),
             "when the classes match, every tensor fits and nothing is re-made: decide by the shapes, "
             "not by the names"),
        case("a file with a tensor the model does not have",
             ("small 4", "small_config(4)"), ("small 3", "small_config(3) plus an ImageNet classifier's fc"),
             "keys that are only in one of the two dicts are not re-made: look only at the keys in both",
             extra={"backbone.body.fc.weight": torch.zeros(1000, 256), "backbone.body.fc.bias": torch.zeros(1000)}),
    ]

    def compare(received, expected, case):
        if isinstance(received, str) or not isinstance(received, (list, tuple, set, frozenset)):
            return f"return a list of keys (str), got {type(received).__name__}"
        if len(set(received)) != len(received):
            return "the list holds a key twice"
        missing, extra = sorted(set(expected) - set(received)), sorted(set(received) - set(expected))
        if missing or extra:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"should not hold {', '.join(extra)}"] if extra else [])
            return "the keys are wrong: " + "; ".join(parts)
        return None

    def shown(ours, theirs):
        result = fn(ours, theirs)
        return _Keys(result) if isinstance(result, (list, tuple, set, frozenset)) and not isinstance(result, str) \
            else result

    return run_cases("check_class_specific_keys", shown, reference_class_specific_keys, cases, compare)


# ----------------------------------------------------------------------- the FPN level histogram

def reference_level_histogram(boxes: Tensor, canonical_scale: int) -> Tensor:
    return torch.bincount(box_levels(boxes, 2, 5, canonical_scale), minlength=4)


def _squares(sides: list[float], dtype: torch.dtype = torch.float32) -> Tensor:
    """Square boxes with the given sides, at (10, 10)."""
    side = torch.tensor(sides, dtype=dtype)[:, None]
    return torch.cat([torch.full_like(side, 10.0).expand(-1, 2), 10 + side.expand(-1, 2)], dim=1)


def _random_boxes(seed: int, count: int, image_size: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    side = torch.exp(torch.empty(count).uniform_(np.log(4.0), np.log(image_size), generator=g))
    aspect = torch.exp(torch.empty(count).uniform_(np.log(1 / 3), np.log(3), generator=g))
    w, h = side * aspect.sqrt(), side / aspect.sqrt()
    x, y = torch.rand(count, generator=g) * image_size, torch.rand(count, generator=g) * image_size
    return torch.stack([x, y, x + w, y + h], dim=1)


def check_level_histogram(fn: Callable) -> bool:
    """Check fn(boxes Tensor[N, 4], canonical_scale) -> Tensor[4] int64, the boxes on P2, P3, P4, P5."""
    rule = ("level k = floor(4 + log2(sqrt(w * h) / canonical_scale) + 1e-6), clamped to [2, 5]; then count the "
            "boxes on each of the 4 levels (torch.bincount(k - 2, minlength=4))")
    cases = [
        Case("200 boxes of 4 to 800 pixels, canonical scale 224", {"boxes": _random_boxes(0, 200, 800),
                                                                   "canonical_scale": 224}, rule),
        Case("squares of 100, 112, 120, 223, 224, 447 and 448 pixels",
             {"boxes": _squares([100.0, 112.0, 120.0, 223.0, 224.0, 447.0, 448.0]), "canonical_scale": 224},
             "a box of exactly 112 pixels is on P3 (floor(4 + log2(1/2)) = 3), 224 on P4: floor, not round or ceil"),
        Case("tiny and huge boxes", {"boxes": _squares([1.0, 8.0, 30.0, 1000.0, 2000.0]), "canonical_scale": 224},
             "levels below 2 count on P2 and above 5 on P5 (clamp), so the counts add up to the number of boxes"),
        Case("a non-square box: 56 × 224", {"boxes": torch.tensor([[0.0, 0.0, 56.0, 224.0], [0.0, 0.0, 224.0, 56.0]]),
                                             "canonical_scale": 224},
             "the size is sqrt(w * h) (here 112: P3), not the width, the height or their mean"),
        Case("100 boxes in 128-pixel images, canonical scale 36",
             {"boxes": _random_boxes(1, 100, 128), "canonical_scale": 36}, "use the canonical_scale you are given"),
        Case("squares of 18, 36, 72 and 144 pixels at scale 36, in float64",
             {"boxes": _squares([17.9, 18.0, 36.0, 72.0, 144.0], torch.float64), "canonical_scale": 36},
             "a box of exactly half the canonical scale is one level down, P3; the result is int64 counts"),
        Case("sides whose log2 rounds down in float32",
             {"boxes": torch.tensor([[59.50343704223633, 62.39761734008789, 77.50343322753906, 80.39761352539062],
                                     [8.762031555175781, 99.80860137939453, 44.76203155517578, 135.80859375],
                                     [0.0, 0.0, 18.0, 18.0]]), "canonical_scale": 36},
             "boxes of 18 and 36 pixels whose corners are not whole numbers: float32 makes their side a hair "
             "short, so log2 falls just below a whole number; the + 1e-6 keeps them on the level the rule names"),
        Case("no boxes", {"boxes": torch.zeros(0, 4), "canonical_scale": 224},
             "with no boxes every count is 0: a Tensor[4] of zeros"),
    ]

    def compare(received, expected, case):
        return tensor_problem(received, expected, "the counts")

    return run_cases("check_level_histogram", fn, reference_level_histogram, cases, compare)


# ------------------------------------------------------------------------------- train/val split


class _Dataset(dict):
    """A COCO dict shown by its counts in a failure message."""

    def __repr__(self) -> str:
        try:
            ids = [image["id"] for image in self.get("images", [])]
            return (f"<COCO dict: {len(ids)} images (ids {ids}), {len(self.get('annotations', []))} annotations, "
                    f"categories {[c.get('id') for c in self.get('categories', [])]}>")
        except (TypeError, KeyError, AttributeError):
            return dict.__repr__(self)


def reference_split_images(dataset: dict, val_count: int, seed: int) -> tuple[dict, dict]:
    ids = sorted(image["id"] for image in dataset["images"])
    random.Random(seed).shuffle(ids)
    val_ids = set(ids[:val_count])

    def part(keep: Callable[[int], bool]) -> dict:
        return _Dataset(images=[image for image in dataset["images"] if keep(image["id"])],
                        annotations=[a for a in dataset["annotations"] if keep(a["image_id"])],
                        categories=list(dataset["categories"]))

    return part(lambda image_id: image_id not in val_ids), part(lambda image_id: image_id in val_ids)


def _coco_dict(seed: int, images: int, categories: list[tuple[int, str]], empty: int = 0) -> dict:
    """`images` images with 1 to 4 objects each (the last `empty` with none), ids from 101."""
    rng = random.Random(seed)
    dataset = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for i, n in categories]}
    for index in range(images):
        image_id = 101 + index
        dataset["images"].append({"id": image_id, "file_name": f"FudanPed{index + 1:05d}.png", "height": 60,
                                  "width": 80})
        for _ in range(0 if index >= images - empty else rng.randint(1, 4)):
            x, y = rng.randint(0, 60), rng.randint(0, 40)
            dataset["annotations"].append({"id": len(dataset["annotations"]) + 1, "image_id": image_id,
                                           "category_id": rng.choice(categories)[0], "bbox": [x, y, 10, 15],
                                           "area": 150, "iscrowd": 0})
    return _Dataset(dataset)


def _split_problem(received: Any, dataset: dict, val_count: int) -> str | None:
    if not isinstance(received, (tuple, list)) or len(received) != 2:
        return f"return two dicts, (train, val), got {type(received).__name__}"
    for name, part in zip(("train", "val"), received):
        if not isinstance(part, dict) or not all(isinstance(part.get(k), list)
                                                 for k in ("images", "annotations", "categories")):
            return f"{name} should be a dict with the lists images, annotations and categories"
        if part["categories"] != dataset["categories"]:
            return (f"{name}'s categories should be the dataset's, all of them with their ids, even those with no "
                    "object in the split: else the labels of train and val disagree")
    train, val = received
    all_ids = [image["id"] for image in dataset["images"]]
    train_ids, val_ids = [image["id"] for image in train["images"]], [image["id"] for image in val["images"]]
    if len(val_ids) != val_count:
        return f"val should have {val_count} images, got {len(val_ids)}"
    if set(train_ids) & set(val_ids):
        return f"the images {sorted(set(train_ids) & set(val_ids))} are in both splits"
    if sorted(train_ids + val_ids) != sorted(all_ids):
        lost = sorted(set(all_ids) - set(train_ids) - set(val_ids))
        return f"every image must be in one split; missing {lost}" if lost else "an image is in a split twice"
    by_id = {image["id"]: image for image in dataset["images"]}
    if any(image != by_id[image["id"]] for image in train["images"] + val["images"]):
        return "the images' entries should be copied unchanged"
    for name, part, ids in (("train", train, set(train_ids)), ("val", val, set(val_ids))):
        wanted = [a for a in dataset["annotations"] if a["image_id"] in ids]
        if sorted(a["id"] for a in part["annotations"]) != sorted(a["id"] for a in wanted):
            return (f"{name}'s annotations should be exactly those of its images: split the images, and let each "
                    "annotation go with its image")
        if sorted(part["annotations"], key=lambda a: a["id"]) != wanted:
            return f"{name}'s annotations should be copied unchanged"
    return None


def check_split_images(fn: Callable) -> bool:
    """Check fn(dataset, val_count, seed) -> (train, val), a split of a COCO dict by image."""
    how = ("shuffle the image ids with a generator seeded by `seed` (random.Random(seed)), put the first val_count in "
           "val and the rest in train; each split keeps the annotations of its images and all the categories")
    cases = [
        Case("20 images, 5 to val", {"dataset": _coco_dict(0, 20, [(1, "person")]), "val_count": 5, "seed": 0}, how),
        Case("two categories, images without objects",
             {"dataset": _coco_dict(1, 12, [(3, "star"), (11, "plus")], empty=3), "val_count": 4, "seed": 1},
             "an image with no annotation is still an image of the dataset (the model learns that it holds only "
             "background): choose among dataset['images'], not among the images that have annotations"),
        Case("a rare category",
             {"dataset": _Dataset({**_coco_dict(2, 10, [(1, "person")]),
                                   "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}]}),
              "val_count": 3, "seed": 2},
             "keep every category in both splits, even one with no object: the labels are numbered from the "
             "categories, so train and val must list the same ones"),
        Case("no val images", {"dataset": _coco_dict(3, 6, [(1, "person")]), "val_count": 0, "seed": 0}),
    ]
    ordered = _coco_dict(4, 30, [(1, "person")])

    def compare(received, expected, case):
        problem = _split_problem(received, case.args["dataset"], case.args["val_count"])
        if problem or case.args is not cases[0].args:
            return problem
        # The first case also checks that the split is random, and the same for the same seed.
        again = fn(copy.deepcopy(ordered), 8, 0)
        other = fn(copy.deepcopy(ordered), 8, 1)
        problem = _split_problem(again, ordered, 8) or _split_problem(other, ordered, 8)
        if problem:
            return f"on 30 images with 8 to val: {problem}"
        first = {image["id"] for image in again[1]["images"]}
        if first != {image["id"] for image in fn(copy.deepcopy(ordered), 8, 0)[1]["images"]}:
            return "the same seed should give the same split (seed your own generator: random.Random(seed))"
        if first == {image["id"] for image in other[1]["images"]}:
            return ("seeds 0 and 1 gave the same val images on 30 images: choose them at random, since the files of a "
                    "folder are often ordered (Penn-Fudan's are 74 Fudan photos, then 96 from Penn)")
        return None

    def shown(dataset, val_count, seed):
        # The learner's function gets a copy: changing it (such as shuffling dataset["images"]) is reported.
        given = copy.deepcopy(dataset)
        result = fn(given, val_count, seed)
        if given != dataset:
            raise AssertionError("check_split_images: your function changed its input `dataset` (shuffling "
                                 "dataset['images'] in place, for instance); shuffle a copy of the ids instead")
        if isinstance(result, (tuple, list)) and len(result) == 2:
            return tuple(_Dataset(part) if isinstance(part, dict) else part for part in result)
        return result

    return run_cases("check_split_images", shown, reference_split_images, cases, compare)
