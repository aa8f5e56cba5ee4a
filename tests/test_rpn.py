"""Anchors, matching, sampling and the RPN against torchvision's detection modules."""
import copy

import pytest
import torch
import torchvision
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork as TorchvisionRPN
from torchvision.models.detection.rpn import RPNHead as TorchvisionRPNHead

from mrcnn_from_scratch.anchors import AnchorGenerator
from mrcnn_from_scratch.matching import BalancedPositiveNegativeSampler, Matcher
from mrcnn_from_scratch.rpn import RegionProposalNetwork, RPNHead

from conftest import assert_as_accurate_as, random_boxes
from near_ties import assert_detections_as_accurate_as, recorded_proposals

SIZES = ((32,), (64,), (128,), (256,), (512,))
RATIOS = ((0.5, 1.0, 2.0),) * 5


def pyramid(batch_shape, channels=16, seed=0):
    """Random P2–P6 for a padded batch of shape (N, 3, H, W), sized as the FPN would make them."""
    gen = torch.Generator().manual_seed(seed)
    n, _, h, w = batch_shape
    sizes = [(-(-h // s), -(-w // s)) for s in (4, 8, 16, 32, 64)]
    return {name: torch.randn(n, channels, *size, generator=gen) for name, size in zip(["0", "1", "2", "3", "pool"], sizes)}


def test_anchors_match_torchvision():
    batch = torch.zeros(2, 3, 320, 448)
    features = list(pyramid(batch.shape).values())
    ours = AnchorGenerator(SIZES, RATIOS)(tuple(batch.shape[-2:]), features)
    theirs = TorchvisionAnchorGenerator(SIZES, RATIOS)(ImageList(batch, [(300, 448), (320, 401)]), features)
    assert torch.equal(ours, theirs[0]) and torch.equal(ours, theirs[1])


def test_anchors_with_several_sizes_and_odd_ratios():
    sizes, ratios = ((16, 40), (100,)), ((0.3, 1.0, 2.7), (0.5, 2.0))
    batch = torch.zeros(1, 3, 96, 160)
    features = [torch.zeros(1, 4, 24, 40), torch.zeros(1, 4, 6, 10)]
    ours = AnchorGenerator(sizes, ratios)(tuple(batch.shape[-2:]), features)
    theirs = TorchvisionAnchorGenerator(sizes, ratios)(ImageList(batch, [(96, 160)]), features)[0]
    assert torch.equal(ours, theirs)


def test_anchor_centred_cell_by_hand():
    # Size 32, ratio 1 at cell (0, 0) of a stride-4 map: a 32×32 box centred on pixel (0, 0).
    anchors = AnchorGenerator(((32,),), ((1.0,),))((8, 8), [torch.zeros(1, 1, 2, 2)])
    assert anchors.tolist() == [[-16, -16, 16, 16], [-12, -16, 20, 16], [-16, -12, 16, 20], [-12, -12, 20, 20]]


def iou_matrices():
    gen = torch.Generator().manual_seed(0)
    for g, b in [(1, 50), (5, 300), (12, 1000)]:
        gt, boxes = random_boxes(gen, g, 100.0, 100.0), random_boxes(gen, b, 100.0, 100.0)
        yield torchvision.ops.box_iou(gt, boxes)
    # Ties: two GT boxes equally good for one box, one GT with several equally best boxes.
    yield torch.tensor([[0.8, 0.5, 0.5, 0.1], [0.8, 0.2, 0.5, 0.5]])
    yield torch.tensor([[0.2, 0.2, 0.1, 0.0], [0.0, 0.6, 0.6, 0.3]])


@pytest.mark.parametrize("thresholds", [(0.7, 0.3), (0.5, 0.5)])
@pytest.mark.parametrize("low_quality", [True, False])
def test_matcher_matches_torchvision(thresholds, low_quality):
    ours, theirs = Matcher(*thresholds, low_quality), tv_utils.Matcher(*thresholds, low_quality)
    for iou in iou_matrices():
        assert torch.equal(ours(iou), theirs(iou))


def test_matcher_low_quality_matches_by_hand():
    iou = torch.tensor([[0.9, 0.4, 0.1], [0.1, 0.2, 0.25]])
    assert Matcher(0.7, 0.3, False)(iou).tolist() == [0, -2, -1]
    # GT 1's best box is box 2 (0.25): it becomes a positive for GT 1.
    assert Matcher(0.7, 0.3, True)(iou).tolist() == [0, -2, 1]
    with pytest.raises(ValueError, match="at least one ground-truth box"):
        Matcher(0.7, 0.3)(torch.zeros(0, 5))


def test_sampler_counts_and_same_draws_as_torchvision():
    gen = torch.Generator().manual_seed(1)
    labels = [torch.randint(-1, 2, (n,), generator=gen).float() for n in (1000, 40, 300)]
    labels[2][:] = 0.0  # an image without positives fills its batch with negatives
    torch.manual_seed(7)
    ours = BalancedPositiveNegativeSampler(256, 0.25)(labels)
    torch.manual_seed(7)
    theirs = tv_utils.BalancedPositiveNegativeSampler(256, 0.25)(labels)
    for mine, reference in zip(ours[0] + ours[1], theirs[0] + theirs[1]):
        assert torch.equal(mine, reference.bool())
    for labels_i, positive, negative in zip(labels, *ours):
        assert positive.sum() <= 64 and positive.sum() + negative.sum() == min(256, (labels_i >= 0).sum())
        assert (labels_i[positive] == 1).all() and (labels_i[negative] == 0).all()


def make_pair(seed=0, channels=16, weight_std=0.1, **settings):
    torch.manual_seed(seed)
    theirs = TorchvisionRPN(TorchvisionAnchorGenerator(SIZES, RATIOS), TorchvisionRPNHead(channels, 3), 0.7, 0.3, 256,
                            0.5, dict(training=2000, testing=1000), dict(training=2000, testing=1000), 0.7, **settings)
    for p in theirs.head.parameters():
        torch.nn.init.normal_(p, std=weight_std)  # larger than the init's 0.01, so scores spread out
    ours = RegionProposalNetwork(AnchorGenerator(SIZES, RATIOS), RPNHead(channels, 3), **settings)
    state = {k.replace("conv.0.0.", "conv."): v for k, v in theirs.head.state_dict().items()}
    ours.head.load_state_dict(state)
    return ours, theirs


def proposals_with_scores(rpn, k, *inputs):
    """rpn(*inputs) in its current mode, keeping what `recorded_proposals` records with pre_nms_top_n k (the
    forward pass returns neither the proposals' probabilities nor its cuts). Returns per image {"boxes",
    "scores", "cuts"}, and the losses."""
    with recorded_proposals(rpn, k) as record:
        _, losses = rpn(*inputs)
    return record, losses


@pytest.mark.parametrize("score_thresh", [0.0, 0.5])
def test_eval_proposals_match_torchvision(score_thresh, jitter):
    """Catches a proposal off, lost or added. Which proposals survive the top-k per level, NMS and the best
    1000 is compared up to scores that tie within float32 rounding (tests/near_ties.py)."""
    ours, theirs = make_pair(score_thresh=score_thresh)
    batch = torch.zeros(2, 3, 320, 448)
    image_sizes = [(300, 448), (320, 401)]
    features = {k: jitter(v) for k, v in pyramid(batch.shape, seed=3).items()}
    ours.eval(), theirs.eval()
    k = theirs.pre_nms_top_n()
    with torch.no_grad():
        got, _ = proposals_with_scores(ours, k, batch, image_sizes, features)
        expected, _ = proposals_with_scores(theirs, k, ImageList(batch, image_sizes), features)
        truth, _ = proposals_with_scores(copy.deepcopy(theirs).double(), k, ImageList(batch.double(), image_sizes),
                                         {k: v.double() for k, v in features.items()})
    assert all(len(t["boxes"]) > 100 for t in truth)
    assert_detections_as_accurate_as(got, expected, truth, score_thresh, theirs.post_nms_top_n(),
                                     keys=("boxes", "scores"), min_compared=100,
                                     extra_cuts=[t["cuts"] for t in truth])


def targets_for(image_sizes, seed=5):
    gen = torch.Generator().manual_seed(seed)
    targets = []
    for h, w in image_sizes:
        boxes = random_boxes(gen, 4, float(h), float(w), torch.float32).clamp(min=0) + torch.tensor([0, 0, 8, 8])
        targets.append({"boxes": boxes})
    targets.append({"boxes": torch.zeros(0, 4)})  # an image without objects
    return targets


def test_training_losses_match_torchvision_with_the_same_seed(jitter):
    """Catches a wrong anchor label, regression target, sampled anchor or loss, and a wrong training
    proposal (compared up to near-tied scores, as in eval)."""
    ours, theirs = make_pair(weight_std=0.05)
    batch = torch.zeros(3, 3, 256, 320)
    image_sizes = [(256, 300), (240, 320), (256, 320)]
    features = {k: jitter(v) for k, v in pyramid(batch.shape, seed=4).items()}
    targets = targets_for(image_sizes[:2])
    ours.train(), theirs.train()
    k = theirs.pre_nms_top_n()
    torch.manual_seed(11)
    proposals, losses = proposals_with_scores(ours, k, batch, image_sizes, features, targets)
    torch.manual_seed(11)
    expected_proposals, expected = proposals_with_scores(theirs, k, ImageList(batch, image_sizes), features, targets)
    # The float64 truth samples the same anchors: sampling takes random permutations, not float values.
    torch.manual_seed(11)
    truth_proposals, truth = proposals_with_scores(
        copy.deepcopy(theirs).double(), k, ImageList(batch.double(), image_sizes),
        {k: v.double() for k, v in features.items()}, [{"boxes": t["boxes"].double()} for t in targets])
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"}
    for name in losses:
        assert_as_accurate_as(losses[name].detach(), expected[name].detach(), truth[name], name)
    assert_detections_as_accurate_as(proposals, expected_proposals, truth_proposals, 0.0,
                                     theirs.post_nms_top_n(), keys=("boxes", "scores"), min_compared=100,
                                     extra_cuts=[t["cuts"] for t in truth_proposals])
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in ours.head.parameters())


def test_an_image_without_objects_has_no_box_loss():
    ours, _ = make_pair()
    batch = torch.zeros(1, 3, 128, 128)
    ours.train()
    _, losses = ours(batch, [(128, 128)], pyramid(batch.shape), [{"boxes": torch.zeros(0, 4)}])
    assert losses["loss_rpn_box_reg"].item() == 0.0 and losses["loss_objectness"].item() > 0
