"""Chapter 06's checkers pass correct code (the package's, torchvision's, plain versions) and reject plausible mistakes."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import roi_heads as tv_roi_heads
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder
from torchvision.models.detection.faster_rcnn import TwoMLPHead as TorchvisionTwoMLPHead

from mrcnn_from_scratch.box_head import TwoMLPHead
from mrcnn_from_scratch.exercises import check_boxes_for_labels, check_candidates, check_fastrcnn_loss, check_two_mlp_head

CLIP = math.log(1000 / 16)


# ---------------------------------------------------------------------------------- Fast R-CNN loss

def fastrcnn_loss(class_logits, box_deltas, labels, regression_targets, beta=1 / 9, divide_by="all", which="gt",
                  reduce_cls="mean"):
    """The Fast R-CNN loss written plainly; the keyword arguments make the usual mistakes."""
    classification = F.cross_entropy(class_logits, labels, reduction=reduce_cls)
    positive = torch.where(labels > 0)[0]
    deltas = box_deltas.reshape(len(box_deltas), -1, 4)
    if which == "gt":
        chosen = deltas[positive, labels[positive]]
    elif which == "first":  # the mistake: class-agnostic, always the first class's deltas
        chosen = deltas[positive, 1]
    targets = regression_targets[positive]
    if which == "all_rois":  # the mistake: regress background RoIs too
        chosen, targets = deltas[torch.arange(len(labels)), labels], regression_targets
    error = (chosen - targets).abs()
    loss = torch.where(error < beta, 0.5 * error**2 / beta, error - 0.5 * beta).sum()
    count = {"all": labels.numel(), "positives": max(len(positive), 1)}[divide_by]
    return classification, loss / count


def torchvision_fastrcnn_loss(class_logits, box_deltas, labels, regression_targets):
    return tv_roi_heads.fastrcnn_loss(class_logits, box_deltas, [labels], [regression_targets])


def test_check_fastrcnn_loss_passes_a_plain_version_and_torchvision(capsys):
    assert check_fastrcnn_loss(fastrcnn_loss)
    assert check_fastrcnn_loss(torchvision_fastrcnn_loss)
    assert capsys.readouterr().out.count("✓ check_fastrcnn_loss passed") == 2


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda *a: fastrcnn_loss(*a, divide_by="positives"), "loss_box_reg has wrong values"),
        (lambda *a: fastrcnn_loss(*a, which="first"), "64 RoIs, 4 classes"),
        (lambda *a: fastrcnn_loss(*a, which="all_rois"), "64 RoIs, 4 classes"),
        (lambda *a: fastrcnn_loss(*a, beta=1.0), "targets near zero|64 RoIs"),
        (lambda *a: fastrcnn_loss(*a, reduce_cls="sum"), "loss_classifier has wrong values"),
        (lambda l, d, y, t: (F.cross_entropy(l, y), F.smooth_l1_loss(d.reshape(len(d), -1, 4)[y > 0, y[y > 0]],
                                                                    t[y > 0], beta=1 / 9)), "loss_box_reg"),
        (lambda *a: fastrcnn_loss(*a)[0], "return two scalar tensors"),
    ],
    ids=["divided by positives", "one class's deltas", "background regressed", "beta 1", "summed cross-entropy",
         "mean smooth L1", "one loss"],
)
def test_check_fastrcnn_loss_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_fastrcnn_loss(wrong)


# ------------------------------------------------------------------------------ boxes of the labels

def boxes_for_labels(box_deltas, proposals, labels, weights=(10.0, 10.0, 5.0, 5.0), clamp=True, layout="class_major"):
    """Decode each proposal's deltas of its label; the keyword arguments make the usual mistakes."""
    r, k = len(box_deltas), box_deltas.shape[1] // 4
    if layout == "class_major":
        deltas = box_deltas.reshape(r, k, 4)[torch.arange(r), labels]
    else:  # the mistake: read the deltas as [4, K] (coordinate-major)
        deltas = box_deltas.reshape(r, 4, k)[torch.arange(r), :, labels]
    wx, wy, ww, wh = weights
    widths, heights = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    cx, cy = proposals[:, 0] + widths / 2, proposals[:, 1] + heights / 2
    dw, dh = deltas[:, 2] / ww, deltas[:, 3] / wh
    if clamp:
        dw, dh = dw.clamp(max=CLIP), dh.clamp(max=CLIP)
    x, y = cx + deltas[:, 0] / wx * widths, cy + deltas[:, 1] / wy * heights
    w, h = widths * torch.exp(dw), heights * torch.exp(dh)
    return torch.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], dim=1)


def torchvision_boxes_for_labels(box_deltas, proposals, labels):
    if len(box_deltas) == 0:  # torchvision's decode returns Tensor[0] for no boxes
        return proposals.new_zeros(0, 4)
    boxes = TorchvisionBoxCoder((10.0, 10.0, 5.0, 5.0)).decode(box_deltas, [proposals])  # [R, K, 4]
    return boxes[torch.arange(len(boxes)), labels]


def test_check_boxes_for_labels_passes_a_plain_version_and_torchvision():
    assert check_boxes_for_labels(boxes_for_labels)
    assert check_boxes_for_labels(torchvision_boxes_for_labels)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda d, p, l: boxes_for_labels(d, p, l, layout="coordinate_major"), "8 RoIs, 4 classes"),
        (lambda d, p, l: boxes_for_labels(d, p, l, weights=(1.0, 1.0, 1.0, 1.0)), "8 RoIs, 4 classes"),
        (lambda d, p, l: boxes_for_labels(d, p, l, clamp=False), '"huge dw, dh"'),
        (lambda d, p, l: boxes_for_labels(d, p, torch.zeros_like(l)), "8 RoIs, 4 classes"),
        (lambda d, p, l: boxes_for_labels(d, p, l) if len(d) else d.reshape(0, -1, 4), '"no RoIs"'),
    ],
    ids=["coordinate-major layout", "RPN weights", "no clamp", "always class 0", "reshape(R, -1, 4)"],
)
def test_check_boxes_for_labels_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_boxes_for_labels(wrong)


# ---------------------------------------------------------------------------------------- candidates

def candidates(class_logits, boxes, score_thresh, order="proposal", keep_background=False, at_least=False,
               use_softmax=True):
    """Post-processing's candidates; the keyword arguments make the usual mistakes."""
    scores = F.softmax(class_logits, dim=-1) if use_softmax else torch.sigmoid(class_logits)
    labels = torch.arange(class_logits.shape[1]).expand_as(scores)
    first = 0 if keep_background else 1
    scores, labels, boxes = scores[:, first:], labels[:, first:], boxes[:, first:]
    if order == "class":  # the mistake: class-major order
        scores, labels, boxes = scores.T, labels.T, boxes.transpose(0, 1)
    scores, labels, boxes = scores.flatten(), labels.flatten(), boxes.reshape(-1, 4)
    keep = scores >= score_thresh if at_least else scores > score_thresh
    return boxes[keep], scores[keep], labels[keep]


def test_check_candidates_passes_a_plain_version():
    assert check_candidates(candidates)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda *a: candidates(*a, order="class"), r"\(proposal, class\) order"),
        (lambda *a: candidates(*a, keep_background=True), '"10 RoIs, 4 classes"'),
        (lambda *a: candidates(*a, at_least=True), '"scores exactly at the threshold"'),
        (lambda *a: candidates(*a, use_softmax=False), '"10 RoIs, 4 classes"'),
        (lambda *a: candidates(*a)[:2], "return three tensors"),
    ],
    ids=["class-major", "background kept", ">= threshold", "sigmoid", "no labels"],
)
def test_check_candidates_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_candidates(wrong)


# ------------------------------------------------------------------------------------- TwoMLPHead

class PlainTwoMLPHead(nn.Module):
    def __init__(self, in_channels, representation_size, last_relu=True, channels_last=False):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)
        self.last_relu, self.channels_last = last_relu, channels_last

    def forward(self, x):
        x = x.permute(0, 2, 3, 1).flatten(1) if self.channels_last else x.flatten(1)
        x = self.fc7(F.relu(self.fc6(x)))
        return F.relu(x) if self.last_relu else x


def test_check_two_mlp_head_passes_the_package_torchvision_and_a_plain_version():
    assert check_two_mlp_head(TwoMLPHead)
    assert check_two_mlp_head(TorchvisionTwoMLPHead)
    assert check_two_mlp_head(PlainTwoMLPHead)


def test_check_two_mlp_head_keeps_the_global_random_state():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    check_two_mlp_head(TwoMLPHead)
    assert torch.equal(torch.rand(3), expected)


class Renamed(nn.Module):
    def __init__(self, in_channels, representation_size):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(in_channels, representation_size), nn.ReLU(),
                                    nn.Linear(representation_size, representation_size), nn.ReLU())

    def forward(self, x):
        return self.layers(x)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda c, r: PlainTwoMLPHead(c, r, last_relu=False), "fc7 is followed by a ReLU too"),
        (lambda c, r: PlainTwoMLPHead(c, r, channels_last=True), "wrong values"),
        (Renamed, "should be named"),
        (lambda c, r: PlainTwoMLPHead(c, 2 * r), "wrong shape"),
    ],
    ids=["no last ReLU", "channels-last flatten", "other names", "wrong size"],
)
def test_check_two_mlp_head_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_two_mlp_head(wrong)
