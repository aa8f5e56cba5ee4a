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
    """
    positive_index = torch.where(positive)[0]
    sampled = torch.cat([positive_index, torch.where(negative)[0]])
    box_loss = smooth_l1(deltas[positive_index], regression_targets[positive_index], beta=1 / 9) / sampled.numel()
    objectness_loss = F.binary_cross_entropy_with_logits(objectness[sampled], labels[sampled])
    return objectness_loss, box_loss
