"""Chapter 00's checkers pass correct code (ours, torchvision's, pycocotools') and reject plausible mistakes."""
import json
import math
from collections import Counter

import pytest
import torch
import torchvision
from pycocotools.coco import COCO
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from mrcnn_from_scratch import MaskRCNN, small_config
from mrcnn_from_scratch.data import CocoInstances, generate_split
from mrcnn_from_scratch.exercises.ch00 import (
    check_coco_to_xyxy,
    check_count_anchors,
    check_objects_per_class,
    check_transformed_size,
    reference_count_anchors,
    reference_objects_per_class,
    reference_transformed_size,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# --------------------------------------------------------------------- correct implementations

def coco_to_xyxy(bboxes, minus=0.0, dtype=torch.float32):
    """x2 = x + w; minus=1 is the old inclusive convention."""
    boxes = torch.tensor(bboxes, dtype=dtype).reshape(-1, 4)
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:] - minus], dim=1)


def torchvision_coco_to_xyxy(bboxes):
    return torchvision.ops.box_convert(torch.tensor(bboxes, dtype=torch.float32).reshape(-1, 4), "xywh", "xyxy")


def objects_per_class(dataset, count_crowd=False):
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    counts = dict.fromkeys(names.values(), 0)
    for annotation in dataset["annotations"]:
        if count_crowd or not annotation.get("iscrowd", 0):
            counts[names[annotation["category_id"]]] += 1
    return counts


def pycocotools_objects_per_class(dataset):
    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return {c["name"]: len(coco.getAnnIds(catIds=[c["id"]], iscrowd=False)) for c in coco.loadCats(coco.getCatIds())}


def transformed_size(height, width, min_size=800, max_size=1333, rounding=math.floor, cap=True, pad=None):
    """The transform's sizes; the keyword arguments make the usual mistakes."""
    scale = min_size / min(height, width)
    if cap:
        scale = min(scale, max_size / max(height, width))
    resized = (int(rounding(height * scale)), int(rounding(width * scale)))
    pad = pad or (lambda side: math.ceil(side / 32) * 32)
    return resized, tuple(pad(side) for side in resized)


def torchvision_transformed_size(height, width, min_size, max_size):
    transform = GeneralizedRCNNTransform(min_size, max_size, list(MEAN), list(STD)).eval()
    images, _ = transform([torch.zeros(3, height, width)])
    return tuple(images.image_sizes[0]), tuple(images.tensors.shape[-2:])


def count_anchors(height, width, min_size=800, max_size=1333, p6=math.ceil, per_cell=3, padded=True, levels=5):
    """Anchors on P2..P6; the keyword arguments make the usual mistakes."""
    resized, padded_size = transformed_size(height, width, min_size, max_size)
    h, w = padded_size if padded else resized
    sizes = [(h // s, w // s) for s in (4, 8, 16, 32)]
    sizes.append((int(p6(sizes[-1][0] / 2)), int(p6(sizes[-1][1] / 2))))
    return per_cell * sum(a * b for a, b in sizes[:levels])


def torchvision_count_anchors(height, width, min_size, max_size):
    """torchvision's transform and AnchorGenerator over feature maps of a torchvision ResNet-18-FPN (meta device)."""
    transform = GeneralizedRCNNTransform(min_size, max_size, list(MEAN), list(STD)).eval()
    images, _ = transform([torch.zeros(3, height, width)])
    with torch.device("meta"):
        backbone = torchvision.models.detection.backbone_utils.resnet_fpn_backbone(
            backbone_name="resnet18", weights=None, trainable_layers=5)
        features = list(backbone(images.tensors.to("meta")).values())
    generator = TorchvisionAnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    empty_maps = [torch.zeros(f.shape[0], 1, *f.shape[-2:]) for f in features]  # the generator reads only shapes
    return len(generator(ImageList(images.tensors, images.image_sizes), empty_maps)[0])


def test_checkers_pass_correct_code(capsys):
    assert check_coco_to_xyxy(coco_to_xyxy)
    assert check_coco_to_xyxy(torchvision_coco_to_xyxy)
    assert check_objects_per_class(objects_per_class)
    assert check_objects_per_class(pycocotools_objects_per_class)
    assert check_objects_per_class(lambda d: Counter(objects_per_class(d)))  # a dict subclass is a dict
    assert check_transformed_size(transformed_size)
    assert check_transformed_size(torchvision_transformed_size)
    assert check_count_anchors(count_anchors)
    assert check_count_anchors(torchvision_count_anchors)
    out = capsys.readouterr().out
    assert out.count("✓") == 9 and "✓ check_count_anchors passed" in out


def test_unfilled_stub_raises_not_implemented():
    def stub(height, width, min_size, max_size):
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        check_count_anchors(stub)


def test_checkers_keep_the_random_state():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    check_transformed_size(transformed_size)
    check_count_anchors(count_anchors)
    assert torch.equal(torch.rand(3), expected)


def test_references_agree_with_the_dataset_and_the_model(tmp_path):
    # Objects per class on a generated file equal the labels that CocoInstances gives.
    ann_file = generate_split(tmp_path, "train", 12, size=64, seed=3, progress=False)
    dataset = CocoInstances(tmp_path / "train", ann_file)
    labels = Counter(dataset.categories[int(label)] for _, target in dataset for label in target["labels"])
    assert reference_objects_per_class(json.loads(ann_file.read_text())) == {
        name: labels[name] for name in dataset.categories.values()}
    # Sizes and anchor counts equal what the small model's transform and RPN produce on a real image.
    model = MaskRCNN(small_config(4)).eval()
    recorded = {}

    def record_anchors(module, inputs, output):  # the RPN head's objectness: one [1, A, H, W] map per level
        recorded["anchors"] = sum(level[0].numel() for level in output[0])

    def record_sizes(module, inputs, output):  # the transform: (batch, image sizes, targets)
        recorded["sizes"] = (tuple(output[1][0]), tuple(output[0].shape[-2:]))

    model.rpn.head.register_forward_hook(record_anchors)
    model.transform.register_forward_hook(record_sizes)
    with torch.no_grad():
        model([torch.rand(3, 100, 200)])
    assert reference_transformed_size(100, 200, 128, 128) == recorded["sizes"]
    assert reference_count_anchors(100, 200, 128, 128) == recorded["anchors"]


# ------------------------------------------------------------------------------- wrong answers

@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda b: torch.tensor(b, dtype=torch.float32).reshape(-1, 4), "wrong values"),
        (lambda b: coco_to_xyxy(b, minus=1.0), "wrong values"),
        (lambda b: torchvision.ops.box_convert(torch.tensor(b, dtype=torch.float32).reshape(-1, 4), "cxcywh", "xyxy"),
         "wrong values"),
        (lambda b: coco_to_xyxy(b, dtype=torch.float64), "dtype torch.float32"),
        (lambda b: coco_to_xyxy(b).round(), '"fractional coordinates'),
        (lambda b: coco_to_xyxy(b).reshape(-1) if not b else coco_to_xyxy(b),
         '"no boxes": the box tensor should have shape'),
        (lambda b: coco_to_xyxy(b).tolist(), "should be a torch.Tensor, got list"),
    ],
    ids=["unchanged", "minus one", "centre and size", "float64", "rounded", "empty of shape [0]", "list"],
)
def test_check_coco_to_xyxy_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_coco_to_xyxy(wrong)


def by_position(dataset):
    """Assumes category id k is the k-th category of the list: wrong for ids with gaps or out of order."""
    names = [c["name"] for c in dataset["categories"]]
    counts = dict.fromkeys(names, 0)
    for annotation in dataset["annotations"]:
        if not annotation.get("iscrowd", 0):
            counts[names[annotation["category_id"] - 1]] += 1
    return counts


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda d: Counter(c["name"] for a in d["annotations"] for c in d["categories"] if c["id"] == a["category_id"]
                           and not a.get("iscrowd", 0)), '"a category without objects": .*missing keys'),
        (lambda d: {c["id"]: n for c, n in zip(d["categories"], objects_per_class(d).values())}, "unexpected keys"),
        (lambda d: objects_per_class(d, count_crowd=True),
         '"crowd annotations": wrong counts: person: expected 2, got 3'),
        (by_position, '"category ids with gaps, as COCO\'s 1..90": your function raised IndexError'),
        (lambda d: {k: torch.tensor(v) for k, v in objects_per_class(d).items()}, "should be Python ints"),
        (lambda d: list(objects_per_class(d).items()), "return a dict"),
    ],
    ids=["zeros missing", "keyed by id", "counts crowds", "id as position", "tensor counts", "list"],
)
def test_check_objects_per_class_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_objects_per_class(wrong)


def test_by_position_fails_on_reordered_categories_too():
    dataset = {"categories": [{"id": 2, "name": "b"}, {"id": 1, "name": "a"}], "annotations": [{"category_id": 1}]}
    assert by_position(dataset) != reference_objects_per_class(dataset)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda h, w, mn, mx: transformed_size(h, w, mn, mx, cap=False), '"a panorama, 1000×3000"'),
        (lambda h, w, mn, mx: transformed_size(h, w, mn, mx, rounding=round),
         r"resized size should be \(800, 1066\), got \(800, 1067\)"),
        (lambda h, w, mn, mx: transformed_size(h, w, mn, mx, pad=lambda s: s // 32 * 32), "padded size should be"),
        (lambda h, w, mn, mx: transformed_size(h, w, mn, mx, pad=lambda s: (s // 32 + 1) * 32),
         r"padded size should be \(800, 1088\), got \(832, 1088\)"),
        (lambda h, w, mn, mx: tuple(size[::-1] for size in transformed_size(h, w, mn, mx)), "resized size should be"),
        (lambda h, w, mn, mx: transformed_size(h, w, mn, mx)[1], "resized size should be|return"),
        (lambda h, w, mn, mx: 42, r"return \(\(h, w\), \(H, W\)\)"),
        (lambda h, w, mn, mx: tuple(tuple(map(float, pair)) for pair in transformed_size(h, w, mn, mx)),
         "the sizes should be ints"),
    ],
    ids=["no max_size", "round", "pad down", "pad always", "width first", "padded only", "not pairs", "floats"],
)
def test_check_transformed_size_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_transformed_size(wrong)


def test_setting_the_short_side_is_wrong_once():
    """Setting the short side to min_size instead of computing floor(side · scale) fails only on the 799 case."""
    def sets_short_side(height, width, min_size, max_size):
        (h, w), _ = transformed_size(height, width, min_size, max_size)
        scale = min_size / min(height, width)
        if scale <= max_size / max(height, width):  # the short side was not capped: "it is min_size"
            h, w = (min_size, w) if height <= width else (h, min_size)
        return (h, w), (math.ceil(h / 32) * 32, math.ceil(w / 32) * 32)

    with pytest.raises(AssertionError, match='"a 193×257 image".*the resized size should be'):
        check_transformed_size(sets_short_side)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda h, w, mn, mx: count_anchors(h, w, mn, mx, p6=math.floor), "expected 217413 anchors, got"),
        (lambda h, w, mn, mx: count_anchors(h, w, mn, mx, levels=4), "expected 217413 anchors, got"),
        (lambda h, w, mn, mx: count_anchors(h, w, mn, mx, per_cell=9), "3 times too many"),
        (lambda h, w, mn, mx: count_anchors(h, w, mn, mx, padded=False), "expected 217413 anchors, got"),
        (lambda h, w, mn, mx: count_anchors(h, w, min(h, w), max(h, w)), "expected"),  # scale 1: not resized
        (lambda h, w, mn, mx: torch.tensor(count_anchors(h, w, mn, mx)), "as an int"),
        (lambda h, w, mn, mx: float(count_anchors(h, w, mn, mx)), "as an int"),
    ],
    ids=["P6 floor", "no P6", "9 per cell", "unpadded", "not resized", "tensor", "float"],
)
def test_check_count_anchors_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_count_anchors(wrong)
