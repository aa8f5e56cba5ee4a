"""Chapter 00's checkers pass correct code (ours and torchvision's) and reject plausible mistakes."""
import math

import pytest
import torch
import torchvision
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from mrcnn_from_scratch import MaskRCNN, small_config
from mrcnn_from_scratch.exercises.ch00 import (
    check_coco_to_xyxy,
    check_transformed_size,
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


def test_checkers_pass_correct_code(capsys):
    assert check_coco_to_xyxy(coco_to_xyxy)
    assert check_coco_to_xyxy(torchvision_coco_to_xyxy)
    assert check_transformed_size(transformed_size)
    assert check_transformed_size(torchvision_transformed_size)
    out = capsys.readouterr().out
    assert out.count("✓") == 4 and "✓ check_transformed_size passed" in out


def test_unfilled_stub_raises_not_implemented():
    def stub(height, width, min_size, max_size):
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        check_transformed_size(stub)


def test_checkers_keep_the_random_state():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    check_transformed_size(transformed_size)
    assert torch.equal(torch.rand(3), expected)


def test_reference_agrees_with_the_model():
    # Sizes equal what the small model's transform produces on a real image.
    model = MaskRCNN(small_config(4)).eval()
    recorded = {}

    def record_sizes(module, inputs, output):  # the transform: (batch, image sizes, targets)
        recorded["sizes"] = (tuple(output[1][0]), tuple(output[0].shape[-2:]))

    model.transform.register_forward_hook(record_sizes)
    with torch.no_grad():
        model([torch.rand(3, 100, 200)])
    assert reference_transformed_size(100, 200, 128, 128) == recorded["sizes"]


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
