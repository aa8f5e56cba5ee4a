"""The training losses of Mask R-CNN: L = L_cls + L_box + L_mask, plus the RPN's two terms.

Each function takes predictions and targets for boxes that have already been matched and sampled,
so that it can be tested on its own.
"""
import torch
import torch.nn.functional as F
from torch import Tensor


def smooth_l1(prediction: Tensor, target: Tensor, beta: float) -> Tensor:
    """Sum over all elements of the smooth L1 (Huber-like) loss.

    Quadratic, 0.5·x²/beta, for |x| < beta; linear, |x| - 0.5·beta, beyond. Near 0 it behaves like L2
    (a gradient that fades as the error does); for large errors like L1 (a gradient of at most 1, so
    one bad box cannot blow up training). Detection uses beta = 1/9.
    """
    error = torch.abs(prediction - target)
    return torch.where(error < beta, 0.5 * error**2 / beta, error - 0.5 * beta).sum()


def rpn_loss(
    objectness: Tensor, deltas: Tensor, labels: Tensor, regression_targets: Tensor, positive: Tensor, negative: Tensor
) -> tuple[Tensor, Tensor]:
    """The RPN's objectness and box losses over the sampled anchors of the whole batch.

    Args:
        objectness: Tensor[A] logits; deltas: Tensor[A, 4] predicted deltas (all images' anchors concatenated).
        labels: Tensor[A], 1 object, 0 background (ignored anchors are never sampled).
        regression_targets: Tensor[A, 4], deltas from each anchor to its matched GT box.
        positive, negative: Tensor[A] bool, the sampled anchors.

    Returns:
        loss_objectness: binary cross-entropy, averaged over the sampled anchors.
        loss_rpn_box_reg: smooth L1 (beta 1/9) on the positives, summed and divided by the number
        of sampled anchors (not of positives), so that both terms are averages over the same set.

    Every anchor takes part and the unsampled ones are masked out, rather than gathering the sampled
    ones: the shapes stay fixed, and nothing needs to know on the host how many were sampled.
    """
    sampled = positive | negative
    num_sampled = sampled.sum()
    box_loss = _smooth_l1_where(positive[:, None], deltas, regression_targets) / num_sampled
    per_anchor = F.binary_cross_entropy_with_logits(objectness, labels.clamp(min=0), reduction="none")
    objectness_loss = torch.where(sampled, per_anchor, 0.0).sum() / num_sampled
    return objectness_loss, box_loss


def fastrcnn_loss(class_logits: Tensor, box_deltas: Tensor, labels: Tensor, regression_targets: Tensor
                  ) -> tuple[Tensor, Tensor]:
    """The box branch's losses over the sampled RoIs of the whole batch.

    Args:
        class_logits: Tensor[R, K]; box_deltas: Tensor[R, 4K], one set of deltas per class.
        labels: Tensor[R] (int64), 0 for background; regression_targets: Tensor[R, 4].

    Returns:
        loss_classifier: cross-entropy over all sampled RoIs.
        loss_box_reg: smooth L1 (beta 1/9) of the positives' deltas for their GT class only, summed
        and divided by the number of sampled RoIs.
    """
    classification_loss = F.cross_entropy(class_logits, labels)
    # Every RoI's deltas for its own label (background RoIs read class 0's and are masked out).
    deltas_of_label = box_deltas.reshape(len(box_deltas), -1, 4)[torch.arange(len(labels), device=labels.device), labels]
    box_loss = _smooth_l1_where((labels > 0)[:, None], deltas_of_label, regression_targets) / labels.numel()
    return classification_loss, box_loss


def _smooth_l1_where(mask: Tensor, prediction: Tensor, target: Tensor) -> Tensor:
    """smooth_l1 summed over the elements where `mask` is True.

    Both sides are zeroed elsewhere rather than the loss multiplied by the mask: an unused target can
    be infinite (the log of a zero-size box), and inf · 0 is NaN, in the loss and in its gradient.
    """
    return smooth_l1(torch.where(mask, prediction, 0.0), torch.where(mask, target, 0.0), beta=1 / 9)


def maskrcnn_loss(mask_logits: Tensor, mask_targets: Tensor, labels: Tensor) -> Tensor:
    """Per-pixel binary cross-entropy on the GT class's mask only.

    Args:
        mask_logits: Tensor[P, K, M, M] for the positive RoIs; mask_targets: Tensor[P, M, M] in [0, 1];
        labels: Tensor[P] (int64), the GT class of each RoI.

    Returns:
        The mean over P·M·M pixels. With no positive RoI, a zero that still depends on the head, so
        that the backward pass sees the same graph every step.
    """
    if mask_targets.numel() == 0:
        return mask_logits.sum() * 0
    logits_of_gt_class = mask_logits[torch.arange(len(labels), device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(logits_of_gt_class, mask_targets)


def maskrcnn_softmax_loss(mask_logits: Tensor, mask_targets: Tensor, labels: Tensor) -> Tensor:
    """The paper's multinomial variant: a softmax over the K channels at each pixel, so classes compete.

    Channel 0 is background. Each pixel's target is the GT class where the mask is and background
    elsewhere; the targets are soft at the edges (t in [0, 1]), so the target distribution is t on the GT
    class and 1 - t on background, which for t in {0, 1} is the usual cross-entropy with one label per
    pixel. With K = 2 (one class) this equals the sigmoid loss on the logit difference: the classes only
    compete when there are several.

    Args and returns as maskrcnn_loss: Tensor[P, K, M, M], Tensor[P, M, M], Tensor[P] -> the mean over
    P·M·M pixels.
    """
    if mask_targets.numel() == 0:
        return mask_logits.sum() * 0
    log_probabilities = F.log_softmax(mask_logits, dim=1)
    of_gt_class = log_probabilities[torch.arange(len(labels), device=labels.device), labels]
    return -(mask_targets * of_gt_class + (1 - mask_targets) * log_probabilities[:, 0]).mean()
