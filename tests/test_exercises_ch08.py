"""Chapter 08's checkers pass correct code (ours and PyTorch's) and reject plausible mistakes."""
import pytest
import torch
import torch.nn.functional as F

from mrcnn_from_scratch import losses
from mrcnn_from_scratch.exercises import check_mask_loss_grad, check_maskrcnn_loss, check_smooth_l1, check_total_loss


def hand_grad(mask_logits, mask_targets, labels):
    grad = torch.zeros_like(mask_logits)
    rows = torch.arange(len(labels))
    grad[rows, labels] = (mask_logits[rows, labels].sigmoid() - mask_targets) / max(mask_targets.numel(), 1)
    return grad


# ------------------------------------------------------------------ correct implementations pass

def test_checkers_pass_the_package_and_pytorch(capsys):
    assert check_smooth_l1(losses.smooth_l1)
    assert check_smooth_l1(lambda p, t, beta: F.smooth_l1_loss(p, t, reduction="sum", beta=beta))
    assert check_maskrcnn_loss(losses.maskrcnn_loss)
    assert check_mask_loss_grad(hand_grad)
    assert check_total_loss(lambda d, w: sum(w.get(k, 1.0) * v for k, v in d.items()))
    assert capsys.readouterr().out.count("✓") == 5


def test_unfilled_stub_raises_not_implemented():
    def stub(prediction, target, beta):
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        check_smooth_l1(stub)


# ------------------------------------------------------------------------------ wrong smooth L1

@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda p, t, b: F.smooth_l1_loss(p, t, beta=b), "wrong values"),
        (lambda p, t, b: F.smooth_l1_loss(p, t, reduction="sum"), "wrong values|beta = 1/9"),
        (lambda p, t, b: torch.where((p - t).abs() < b, 0.5 * (p - t) ** 2 * b, (p - t).abs() - 0.5 * b).sum(),
         "wrong values"),
        (lambda p, t, b: torch.where((p - t).abs() < b, 0.5 * (p - t) ** 2 / b, (p - t).abs() - b).sum(), "wrong values"),
        (lambda p, t, b: torch.where((p - t).abs() < b, 0.5 * (p - t) ** 2 / b, (p - t).abs() - 0.5 * b),
         "scalar tensor"),
        (lambda p, t, b: F.smooth_l1_loss(p, t, reduction="sum", beta=b).item(), "a float cannot be backpropagated"),
        (lambda p, t, b: (0.5 * (p - t) ** 2).sum(), "wrong values"),
    ],
    ids=["mean", "PyTorch's default beta", "times beta", "linear part |x| - beta", "not summed", "float", "L2"],
)
def test_check_smooth_l1_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_smooth_l1(wrong)


# ---------------------------------------------------------------------------- wrong mask losses

def gt_channel(mask_logits, labels):
    return mask_logits[torch.arange(len(labels)), labels]


def one_hot_targets(mask_logits, mask_targets, labels):
    return F.one_hot(labels, mask_logits.shape[1]).float()[:, :, None, None] * mask_targets[:, None]


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda lg, t, l: F.binary_cross_entropy_with_logits(lg, one_hot_targets(lg, t, l)), '"6 RoIs, 4 classes"'),
        (lambda lg, t, l: F.binary_cross_entropy(gt_channel(lg, l).sigmoid(), t), '"confident logits'),
        (lambda lg, t, l: F.binary_cross_entropy_with_logits(gt_channel(lg, l), t), '"no positive RoIs"'),
        (lambda lg, t, l: F.binary_cross_entropy_with_logits(gt_channel(lg, l), t, reduction="sum"), "wrong values"),
        (lambda lg, t, l: F.binary_cross_entropy_with_logits(lg[torch.arange(len(l)), l - 1], t), "wrong values"),
        (lambda lg, t, l: F.cross_entropy(lg, torch.where(t >= 0.5, l[:, None, None], 0)) if len(l) else lg.sum() * 0,
         "wrong values"),
    ],
    ids=["BCE on every channel", "sigmoid then BCE", "nan without RoIs", "summed over pixels", "channel c - 1",
         "per-pixel softmax"],
)
def test_check_maskrcnn_loss_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_maskrcnn_loss(wrong)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda lg, t, l: hand_grad(lg, t, l) * max(t.numel(), 1), "wrong values"),
        (lambda lg, t, l: -hand_grad(lg, t, l), "wrong values"),
        (lambda lg, t, l: hand_grad(lg, t, l) * max(t[0].numel(), 1) if len(l) else hand_grad(lg, t, l), "wrong values"),
        (lambda lg, t, l: (lg.sigmoid() - one_hot_targets(lg, t, l)) / max(t.numel(), 1), "only the GT class's channel"),
        (lambda lg, t, l: hand_grad(lg, t, l)[torch.arange(len(l)), l], "should have shape"),
    ],
    ids=["not averaged", "sign", "averaged over RoIs only", "every channel", "GT channel only returned"],
)
def test_check_mask_loss_grad_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_mask_loss_grad(wrong)


# ---------------------------------------------------------------------------- wrong total loss

@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda d, w: sum(d.values()), '"the mask loss weighted 2"'),
        (lambda d, w: sum(w.get(k, 1.0) * v.item() for k, v in d.items()), "a float cannot be backpropagated"),
        (lambda d, w: torch.tensor(sum(w.get(k, 1.0) * v.item() for k, v in d.items())), "does not backpropagate"),
        (lambda d, w: sum(w[k] * d[k] for k in w) if w else sum(d.values()), '"the mask loss weighted 2"'),
        (lambda d, w: sum(w.get(k, 1.0) * d[k] for k in ("loss_objectness", "loss_rpn_box_reg", "loss_classifier",
                                                           "loss_box_reg", "loss_mask")), "KeyError|an extra term"),
        (lambda d, w: torch.stack([w.get(k, 1.0) * v for k, v in d.items()]), "scalar tensor"),
    ],
    ids=["ignores weights", "floats", "re-made tensor", "weighted terms only", "fixed names", "not summed"],
)
def test_check_total_loss_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_total_loss(wrong)
