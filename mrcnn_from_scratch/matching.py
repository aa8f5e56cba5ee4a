"""Who is responsible for which object: matching boxes to ground truth, then sampling a balanced batch.

Shared by the RPN (anchors vs GT, IoU 0.7 / 0.3) and the box head (proposals vs GT, IoU 0.5 / 0.5).
"""
import torch
from torch import Tensor

BELOW_LOW_THRESHOLD = -1  # background
BETWEEN_THRESHOLDS = -2  # ignored: neither clearly object nor clearly background


class Matcher:
    """Match every box (anchor or proposal) to the ground-truth box it overlaps most.

    Args:
        high_threshold: IoU at or above which a box is a positive (it keeps its GT index).
        low_threshold: IoU below which a box is background (BELOW_LOW_THRESHOLD). In between it is
            ignored (BETWEEN_THRESHOLDS), so training never sees the ambiguous cases.
        allow_low_quality_matches: also make a positive of, for each GT box, the box(es) that
            overlap it most, even below high_threshold, so that no object goes without an anchor.
    """

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold {low_threshold} > high_threshold {high_threshold}")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, iou: Tensor) -> Tensor:
        """iou: Tensor[G, B], IoU of G ground-truth boxes with B boxes.

        Returns:
            Tensor[B] (int64): the matched GT index in [0, G), or BELOW_LOW_THRESHOLD, or BETWEEN_THRESHOLDS.
        """
        if iou.numel() == 0:
            raise ValueError("matching needs at least one ground-truth box and one box; got IoU " f"{list(iou.shape)}")
        best_iou, best_gt = iou.max(dim=0)
        matches = torch.where(best_iou < self.low_threshold, BELOW_LOW_THRESHOLD,
                              torch.where(best_iou < self.high_threshold, BETWEEN_THRESHOLDS, best_gt))
        if self.allow_low_quality_matches:
            # For each GT, every box tied for its highest IoU becomes a positive again. It gets its
            # own best GT (best_gt), which is usually this GT. (As in Detectron and torchvision: a GT
            # that overlaps nothing has highest IoU 0 and would revive every box that misses it, so
            # the model rejects degenerate GT boxes before they get here.)
            highest_per_gt = iou.max(dim=1).values
            revived = (iou == highest_per_gt[:, None]).any(dim=0)
            matches = torch.where(revived, best_gt, matches)
        return matches


class BalancedPositiveNegativeSampler:
    """Pick a fixed-size training batch of boxes per image with at most a given fraction of positives.

    Almost every anchor is background. Sampling caps the positives at `positive_fraction` (filled up
    with negatives) so that the loss is not swamped by easy negatives.

    Args:
        batch_size_per_image: boxes sampled per image (256 in the RPN, 512 in the box head).
        positive_fraction: the largest share of positives (0.5 in the RPN, 0.25 in the box head).
        draws: "torchvision": two randperms per image over the positives and the negatives, exactly
            torchvision's draws (their sizes must be read on the host: two syncs per image);
            "ranks": one random key per box, the lowest keys win; the same distribution of samples
            and no host sync, but other draws than torchvision's.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float, draws: str = "torchvision"):
        if draws not in ("torchvision", "ranks"):
            raise ValueError(f"draws must be 'torchvision' or 'ranks', got {draws!r}")
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.draws = draws

    def __call__(self, labels: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """labels: per image, Tensor[B_i] with >= 1 for positives, 0 for negatives, -1 for ignored.

        Returns:
            Two lists of Tensor[B_i] bool masks per image: sampled positives, sampled negatives.
            Draws use the global torch RNG.
        """
        sample = self.sample_by_randperm if self.draws == "torchvision" else self.sample_by_ranks
        masks = [sample(labels_per_image) for labels_per_image in labels]
        return [positive for positive, _ in masks], [negative for _, negative in masks]

    def sample_by_randperm(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        positive = torch.where(labels >= 1)[0]
        negative = torch.where(labels == 0)[0]
        num_positive = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
        num_negative = min(negative.numel(), self.batch_size_per_image - num_positive)
        chosen_positive = positive[torch.randperm(positive.numel(), device=positive.device)[:num_positive]]
        chosen_negative = negative[torch.randperm(negative.numel(), device=negative.device)[:num_negative]]
        positive_mask = torch.zeros_like(labels, dtype=torch.bool)
        negative_mask = torch.zeros_like(labels, dtype=torch.bool)
        positive_mask[chosen_positive] = True
        negative_mask[chosen_negative] = True
        return positive_mask, negative_mask

    def sample_by_ranks(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        positive, negative = labels >= 1, labels == 0
        # Sort by (kind, random key): positives in random order, then negatives, then ignored boxes.
        # (Kinds 2 apart: a key in [0, 1) added to a kind can never round up to the next kind.)
        kind = torch.where(positive, 0.0, torch.where(negative, 2.0, 4.0))
        order = torch.argsort(kind + torch.rand(labels.shape, device=labels.device))
        rank = torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=order.device))
        total_positive = positive.sum()  # a tensor: the counts are never read on the host
        num_positive = total_positive.clamp(max=int(self.batch_size_per_image * self.positive_fraction))
        chosen_positive = positive & (rank < num_positive)
        chosen_negative = negative & (rank - total_positive < self.batch_size_per_image - num_positive)
        return chosen_positive, chosen_negative
