"""The RoI heads against torchvision's: pooling, detections, masks, sampling and losses."""
import copy

import pytest
import torch
import torchvision
from torchvision.models.detection import roi_heads as tv_roi_heads
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor as TVFastRCNNPredictor
from torchvision.models.detection.faster_rcnn import TwoMLPHead as TVTwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from mrcnn_from_scratch.box_head import FastRCNNPredictor, TwoMLPHead
from mrcnn_from_scratch.losses import fastrcnn_loss, maskrcnn_loss
from mrcnn_from_scratch.mask_head import MaskHead, MaskPredictor, mask_targets, paste_masks_in_image
from mrcnn_from_scratch.poolers import MultiScaleRoIAlign
from mrcnn_from_scratch.roi_heads import RoIHeads
from mrcnn_from_scratch.torchvision_weights import rename_torchvision_key

from conftest import assert_as_accurate_as, random_boxes
from near_ties import assert_detections_as_accurate_as

IMAGE_SIZES = [(300, 451), (317, 333)]
BATCH = (2, 3, 320, 480)
CHANNELS, NUM_CLASSES = 8, 5


def pyramid(seed=0, channels=CHANNELS):
    gen = torch.Generator().manual_seed(seed)
    n, _, h, w = BATCH
    return {name: torch.randn(n, channels, -(-h // s), -(-w // s), generator=gen)
            for name, s in zip(["0", "1", "2", "3", "pool"], (4, 8, 16, 32, 64))}


def boxes_of_every_size(gen, count, height, width):
    """Boxes from 4 to 600 pixels on a side, so that every level P2–P5 gets some."""
    centre = torch.rand(count, 2, generator=gen) * torch.tensor([width, height])
    size = 4 * 150 ** torch.rand(count, 2, generator=gen)
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


@pytest.mark.parametrize("output_size", [7, 14])
def test_multiscale_roi_align_matches_torchvision(output_size):
    gen = torch.Generator().manual_seed(1)
    features = pyramid()
    boxes = [boxes_of_every_size(gen, 80, h, w) for h, w in IMAGE_SIZES]
    boxes[1] = boxes[1][:0]  # one image without boxes
    ours = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size, 2)(features, boxes, IMAGE_SIZES)
    their_pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], output_size, 2)
    theirs = their_pooler(features, boxes, IMAGE_SIZES)
    truth = their_pooler({k: v.double() for k, v in features.items()}, [b.double() for b in boxes], IMAGE_SIZES)
    assert_as_accurate_as(ours, theirs, truth)
    levels = torch.floor(4 + torch.log2(torch.sqrt((boxes[0][:, 2:] - boxes[0][:, :2]).prod(1)) / 224) + 1e-6)
    assert set(levels.clamp(2, 5).tolist()) == {2.0, 3.0, 4.0, 5.0}


def test_multiscale_roi_align_with_no_boxes():
    empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
    pooled = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(pyramid(), empty, IMAGE_SIZES)
    assert pooled.shape == (0, CHANNELS, 7, 7)


def make_heads(seed=0, **settings):
    """torchvision's RoIHeads with weights re-drawn so that detections are plentiful, and ours with the same."""
    torch.manual_seed(seed)
    theirs = tv_roi_heads.RoIHeads(
        torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2), TVTwoMLPHead(CHANNELS * 49, 32),
        TVFastRCNNPredictor(32, NUM_CLASSES), 0.5, 0.5, 64, 0.25, None, settings.get("score_thresh", 0.05), 0.5,
        settings.get("detections_per_img", 100), torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2),
        MaskRCNNHeads(CHANNELS, [16, 16, 16, 16], 1), MaskRCNNPredictor(16, 16, NUM_CLASSES))
    with torch.no_grad():
        for p in theirs.box_predictor.parameters():
            p.normal_(std=0.3)
    ours = RoIHeads(MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2), TwoMLPHead(CHANNELS * 49, 32),
                    FastRCNNPredictor(32, NUM_CLASSES), MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2),
                    MaskHead(CHANNELS, 16), MaskPredictor(16, 16, NUM_CLASSES), batch_size_per_image=64, **settings)
    state = {rename_torchvision_key("roi_heads." + k)[len("roi_heads."):]: v for k, v in theirs.state_dict().items()}
    ours.load_state_dict(state)
    return ours, theirs


def proposals_for(seed=2, count=150):
    gen = torch.Generator().manual_seed(seed)
    return [torchvision.ops.clip_boxes_to_image(boxes_of_every_size(gen, count, h, w), (h, w)) for h, w in IMAGE_SIZES]


def detect(heads, features, proposals, dtype):
    """Eval-mode detections of `heads` (a copy, converted to dtype) on the inputs converted to dtype."""
    heads = copy.deepcopy(heads).to(dtype).eval()
    with torch.no_grad():
        detections, _ = heads({k: v.to(dtype) for k, v in features.items()}, [p.to(dtype) for p in proposals],
                              IMAGE_SIZES)
    return detections


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("settings", [{}, {"score_thresh": 0.3, "detections_per_img": 20}])
def test_eval_detections_match_torchvision(settings, memory_format, jitter):
    """Catches a box, score or mask off, or a detection lost or added. channels_last features change which
    kernels run, and so the rounding, not the meaning."""
    ours, theirs = make_heads(**settings)
    features = {k: jitter(v).contiguous(memory_format=memory_format) for k, v in pyramid().items()}
    proposals = [jitter(p) for p in proposals_for()]
    got, expected = detect(ours, features, proposals, torch.float32), detect(theirs, features, proposals, torch.float32)
    got64, truth = detect(ours, features, proposals, torch.float64), detect(theirs, features, proposals, torch.float64)
    for a64, t in zip(got64, truth):
        assert len(t["boxes"]) >= (20 if not settings else 3)
        # float64 against float64: both sides round 2^29 times more finely than float32, so their difference
        # is about 1e-13 of the values (float32's errors, about 1e-4 of a coordinate, scaled by 2^-29): no
        # near-tie can reorder them. 1e-9 px and 1e-10 on probabilities leave a margin of 1,000 and still
        # catch any real bug.
        assert torch.equal(a64["labels"], t["labels"])
        torch.testing.assert_close(a64["boxes"], t["boxes"], atol=1e-9, rtol=0)
        torch.testing.assert_close(a64["scores"], t["scores"], atol=1e-10, rtol=0)
        torch.testing.assert_close(a64["masks"], t["masks"], atol=1e-10, rtol=0)
    # float32: which RoIs survive (score threshold, NMS, top-k) is compared up to near-tied scores, then each
    # detection's values and its mask at p > 0.5 (a pasted mask one pixel off would change whole rows).
    assert_detections_as_accurate_as(got, expected, truth, theirs.score_thresh, theirs.detections_per_img)


def targets_for(seed=3):
    gen = torch.Generator().manual_seed(seed)
    targets = []
    for (h, w), count in zip(IMAGE_SIZES, [5, 0]):  # the second image has no objects
        boxes = random_boxes(gen, count, float(h), float(w), torch.float32)
        boxes = torchvision.ops.clip_boxes_to_image(boxes, (h - 6, w - 6)) + torch.tensor([0, 0, 6, 6])
        masks = torch.zeros(count, h, w, dtype=torch.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
            m[y1:y2, x1:x2] = (torch.rand(y2 - y1, x2 - x1, generator=gen) > 0.3).to(torch.uint8)
        targets.append({"boxes": boxes, "labels": torch.randint(1, NUM_CLASSES, (count,), generator=gen),
                        "masks": masks})
    return targets


def test_training_losses_match_torchvision_with_the_same_seed(jitter):
    """Catches a wrong RoI label, regression target, mask target, sampled RoI or loss."""
    ours, theirs = make_heads()
    ours.train(), theirs.train()
    features, proposals, targets = {k: jitter(v) for k, v in pyramid().items()}, proposals_for(), targets_for()
    torch.manual_seed(5)
    _, losses = ours(features, proposals, IMAGE_SIZES, targets)
    torch.manual_seed(5)
    _, expected = theirs(features, [p.clone() for p in proposals], IMAGE_SIZES, targets)
    # The float64 truth draws the same RoIs: sampling takes random permutations, not float values.
    torch.manual_seed(5)
    _, truth = copy.deepcopy(theirs).double()({k: v.double() for k, v in features.items()},
                                              [p.double() for p in proposals], IMAGE_SIZES,
                                              [{**t, "boxes": t["boxes"].double()} for t in targets])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask"}
    for name in losses:
        assert_as_accurate_as(losses[name].detach(), expected[name].detach(), truth[name], name)
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in ours.parameters())


def test_loss_functions_match_torchvision_on_the_same_rois():
    gen = torch.Generator().manual_seed(6)
    logits, deltas = torch.randn(40, NUM_CLASSES, generator=gen), torch.randn(40, 4 * NUM_CLASSES, generator=gen)
    labels, targets = torch.randint(0, NUM_CLASSES, (40,), generator=gen), torch.randn(40, 4, generator=gen)
    expected = tv_roi_heads.fastrcnn_loss(logits, deltas, [labels[:25], labels[25:]], [targets[:25], targets[25:]])
    for a, b in zip(fastrcnn_loss(logits, deltas, labels, targets), expected):
        torch.testing.assert_close(a, b)

    gt_masks = (torch.rand(3, 60, 80, generator=gen) > 0.5).to(torch.uint8)
    boxes = random_boxes(gen, 12, 60.0, 80.0, torch.float32)
    matched = torch.randint(0, 3, (12,), generator=gen)
    gt_labels = torch.tensor([1, 4, 2])
    mask_logits = torch.randn(12, NUM_CLASSES, 28, 28, generator=gen)
    ours = maskrcnn_loss(mask_logits, mask_targets(gt_masks, boxes, matched, 28), gt_labels[matched])
    theirs = tv_roi_heads.maskrcnn_loss(mask_logits, [boxes], [gt_masks], [gt_labels], [matched])
    torch.testing.assert_close(ours, theirs)


def test_mask_loss_reaches_only_the_gt_class_channel():
    mask_logits = torch.zeros(3, NUM_CLASSES, 28, 28, requires_grad=True)
    labels = torch.tensor([1, 3, 3])
    maskrcnn_loss(mask_logits, torch.rand(3, 28, 28), labels).backward()
    touched = mask_logits.grad.abs().sum(dim=(2, 3)) > 0
    assert touched.tolist() == [[c == l for c in range(NUM_CLASSES)] for l in labels.tolist()]


def test_paste_masks_matches_torchvision():
    gen = torch.Generator().manual_seed(7)
    masks = torch.rand(30, 1, 28, 28, generator=gen)
    boxes = boxes_of_every_size(gen, 30, 90, 120)  # many stick out of the image
    boxes = torch.cat([boxes, torch.tensor([[10.0, 10.0, 10.4, 10.3]])])  # and a sub-pixel box
    masks = torch.cat([masks, torch.rand(1, 1, 28, 28, generator=gen)])
    ours = paste_masks_in_image(masks, boxes, (90, 120))
    theirs = tv_roi_heads.paste_masks_in_image(masks, boxes, (90, 120))
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert paste_masks_in_image(masks[:0], boxes[:0], (90, 120)).shape == (0, 1, 90, 120)
    # A box wholly above-left of the image pastes nothing (torchvision's slicing fails on it; the
    # model never asks, since detections are clipped to the image first).
    outside = paste_masks_in_image(masks[:1], torch.tensor([[-50.0, -50.0, -20.0, -10.0]]), (90, 120))
    assert not outside.any()
