"""The whole model against torchvision's maskrcnn_resnet50_fpn with the same weights."""
import copy

import pytest
import torch
import torchvision
from torch import nn

from mrcnn_from_scratch import load_torchvision_weights, maskrcnn_resnet50_fpn

from conftest import assert_as_accurate_as
from near_ties import assert_detections_as_accurate_as, recorded_proposals

NUM_CLASSES = 7
PRE_NMS_TOP_N = 1000  # torchvision's default in eval mode, per level
FLOATS = (torch.float32, torch.float64)


def redraw_weights(model: nn.Module, seed: int = 0) -> None:
    """Make a randomly initialized torchvision model detect plenty: spread out BN statistics and
    enlarge the RPN and box predictor weights, so that scores are far from uniform."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.backbone.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.25)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
        for p in model.rpn.head.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        for p in model.roi_heads.box_predictor.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def make_models(**sizes):
    torch.manual_seed(0)
    theirs = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                                num_classes=NUM_CLASSES, **sizes)
    redraw_weights(theirs)
    # torchvision without pretrained weights uses plain BatchNorm and trains every stage.
    ours_sizes = {"min_size": (sizes["min_size"],), "max_size": sizes["max_size"]} if sizes else {}
    ours = maskrcnn_resnet50_fpn(num_classes=NUM_CLASSES, norm="bn", trainable_stages=5, sampler_draws="torchvision",
                                 **ours_sizes)
    load_torchvision_weights(ours, theirs.state_dict())
    return ours, theirs


@pytest.fixture(scope="module")
def models():
    """At torchvision's default input size (800 / 1333)."""
    return make_models()


@pytest.fixture(scope="module")
def small_models():
    """Images resized to a short side of 320: the same code paths at a sixth of the cost, for the
    float64 and training comparisons."""
    return make_models(min_size=320, max_size=533)


def odd_images(dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    return [torch.rand(3, 300, 451, generator=gen, dtype=dtype), torch.rand(3, 517, 333, generator=gen, dtype=dtype)]


def detect(model, images, dtype):
    """Eval-mode detections of a copy of `model` converted to dtype."""
    model = copy.deepcopy(model).eval().to(dtype)
    with torch.no_grad():
        return model([image.to(dtype) for image in images])


def assert_same_detections(got, expected):
    """Row by row: the same number of detections and the same labels. For float64 against float64, where
    scores are exact to about 1e-13 and no near-tie can reorder them."""
    for a, b in zip(got, expected):
        assert len(b["boxes"]) >= 20
        assert len(a["boxes"]) == len(b["boxes"]), "different numbers of detections"
        assert torch.equal(a["labels"], b["labels"]), "different labels"
        assert a["masks"].shape == b["masks"].shape


def detect_from(model, images, dtype, proposals=None):
    """Like `detect`, and also what its RPN proposed (see `recorded_proposals`); with `proposals`, the RoI
    heads start from those instead of the RPN's own."""
    model = copy.deepcopy(model).eval().to(dtype)
    with torch.no_grad(), recorded_proposals(model.rpn, PRE_NMS_TOP_N, proposals) as proposed:
        detections = model([image.to(dtype) for image in images])
    return detections, proposed


def test_float32_detections_are_as_accurate_as_torchvision(models, jitter):
    """Catches any real difference in proposals or detections (a box, score or mask pixel off, an item lost or
    added), while two items whose scores tie within float32 rounding may come in either order: the RPN's
    best k, NMS, the score threshold and the top 100 cut by float scores, which round differently on each CPU.

    Stage by stage: a near-tie at one of the RPN's cuts hands the RoI heads another proposal, whose detection
    can have any score. So the proposals are compared first, and then every run detects from the truth's."""
    ours, theirs = models
    images = [jitter(image).clamp(0, 1) for image in odd_images()]  # the model takes [0, 1]: 1 - ulp may round up
    truth, truth_proposals = detect_from(theirs, images, torch.float64)
    boxes = [p["boxes"] for p in truth_proposals]
    (expected, their_proposals), (got, our_proposals) = (detect_from(m, images, torch.float32, boxes)
                                                         for m in (theirs, ours))
    assert_detections_as_accurate_as(our_proposals, their_proposals, truth_proposals, theirs.rpn.score_thresh,
                                     theirs.rpn.post_nms_top_n(), keys=("boxes", "scores"), min_compared=500,
                                     extra_cuts=[p["cuts"] for p in truth_proposals])
    assert all(len(t["boxes"]) >= 20 for t in truth)
    settings = theirs.roi_heads
    assert_detections_as_accurate_as(got, expected, truth, settings.score_thresh, settings.detections_per_img,
                                     min_compared=20)


def test_float64_detections_match_torchvision(small_models):
    ours, theirs = small_models
    images = odd_images(torch.float64)
    got, expected = detect(ours, images, torch.float64), detect(theirs, images, torch.float64)
    assert_same_detections(got, expected)
    for a, b in zip(got, expected):
        # float64 rounds 2^29 times more finely than float32: the float32 errors of the test above (about
        # 1e-4 px on a box, 1e-5 on a probability) become about 1e-13 here. 1e-8 leaves a margin of 10^5 and
        # still catches any real bug.
        for key in ["boxes", "scores", "masks"]:
            torch.testing.assert_close(a[key], b[key], atol=1e-8, rtol=0, msg=key)


def training_targets(images):
    """Per image {"boxes", "labels", "masks"}: three 40 × 50 boxes in the first image, none in the second."""
    targets = []
    gen = torch.Generator().manual_seed(2)
    for image, count in zip(images, [3, 0]):  # the second image has no objects
        h, w = image.shape[-2:]
        x1 = torch.rand(count, generator=gen) * (w - 60)
        y1 = torch.rand(count, generator=gen) * (h - 60)
        boxes = torch.stack([x1, y1, x1 + 40, y1 + 50], dim=1)
        masks = torch.zeros(count, h, w, dtype=torch.uint8)
        for m, (bx1, by1, bx2, by2) in zip(masks, boxes.int().tolist()):
            m[by1:by2, bx1:bx2] = 1
        targets.append({"boxes": boxes, "labels": torch.randint(1, NUM_CLASSES, (count,), generator=gen), "masks": masks})
    return targets


def test_training_losses_match_torchvision_with_the_same_seed(small_models):
    ours, theirs = (m.train() for m in small_models)
    images = odd_images()
    targets = training_targets(images)
    torch.manual_seed(3)
    losses = ours(images, targets)
    torch.manual_seed(3)
    expected = theirs(images, targets)
    # The float64 truth samples the same anchors and RoIs: sampling takes random permutations, not floats.
    torch.manual_seed(3)
    truth = copy.deepcopy(theirs).double()([image.double() for image in images],
                                           [{**t, "boxes": t["boxes"].double()} for t in targets])
    assert set(losses) == set(expected)
    for name in expected:
        assert_as_accurate_as(losses[name].detach(), expected[name].detach(), truth[name], name)
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in ours.parameters() if p.requires_grad)
    for m in small_models:
        m.eval()
