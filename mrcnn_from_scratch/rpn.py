"""The Region Proposal Network: score every anchor for "object or not", refine it, keep the best.

In training it also learns: anchors are matched to GT boxes (IoU >= 0.7 object, < 0.3 background),
256 per image are sampled, half of them objects at most, and the objectness and box losses are
computed on those.
"""
import torch
from torch import Tensor, nn

from .anchors import AnchorGenerator
from .losses import rpn_loss
from .matching import BETWEEN_THRESHOLDS, BalancedPositiveNegativeSampler, Matcher
from .ops import BoxCoder, box_iou, clip_boxes_to_image
from .ops.nms import greedy_keep, overlap_graph, shifts_categories_apart


class RPNHead(nn.Module):
    """A 3×3 convolution with ReLU shared by all levels, then two 1×1 "sibling" convolutions.

    Args:
        in_channels: channels of every feature level.
        num_anchors: A, anchors per cell.
    """

    def __init__(self, in_channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)  # one objectness logit per anchor
        self.bbox_pred = nn.Conv2d(in_channels, 4 * num_anchors, 1)  # (dx, dy, dw, dh) per anchor
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """features: Tensor[N, C, H_l, W_l] per level -> logits Tensor[N, A, H_l, W_l] and
        deltas Tensor[N, 4A, H_l, W_l] per level."""
        logits, deltas = [], []
        for x in features:
            x = torch.relu_(self.conv(x))
            logits.append(self.cls_logits(x))
            deltas.append(self.bbox_pred(x))
        return logits, deltas


class RegionProposalNetwork(nn.Module):
    """Anchors, head, decoding and filtering; and, in training, matching, sampling and the losses.

    Args:
        anchor_generator, head: as above.
        fg_iou_thresh, bg_iou_thresh: the matcher's thresholds (0.7, 0.3).
        batch_size_per_image, positive_fraction: the sampler's settings (256, 0.5).
        pre_nms_top_n, post_nms_top_n: {"training": n, "testing": n}: best anchors kept per level
            before NMS, and proposals kept per image after it (2000/1000 each for torchvision).
        nms_thresh: IoU for NMS, applied separately per level (0.7).
        score_thresh: minimum objectness probability (0.0).
        min_size: proposals narrower or shorter than this (pixels) are dropped (1e-3).
        sampler_draws: "torchvision" or "ranks", see BalancedPositiveNegativeSampler.
    """

    def __init__(self, anchor_generator: AnchorGenerator, head: RPNHead, fg_iou_thresh: float = 0.7,
                 bg_iou_thresh: float = 0.3, batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                 pre_nms_top_n: dict[str, int] | None = None, post_nms_top_n: dict[str, int] | None = None,
                 nms_thresh: float = 0.7, score_thresh: float = 0.0, min_size: float = 1e-3,
                 sampler_draws: str = "torchvision"):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction, sampler_draws)
        self.pre_nms_top_n = pre_nms_top_n or {"training": 2000, "testing": 1000}
        self.post_nms_top_n = post_nms_top_n or {"training": 2000, "testing": 1000}
        self.nms_thresh, self.score_thresh, self.min_size = nms_thresh, score_thresh, min_size

    def forward(self, images: Tensor, image_sizes: list[tuple[int, int]], features: dict[str, Tensor],
                targets: list[dict[str, Tensor]] | None = None) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Propose boxes for each image.

        Args:
            images: Tensor[N, 3, H, W], the padded batch (only its size is used, for the anchors).
            image_sizes: (h, w) of each image before padding: proposals are clipped to it.
            features: the pyramid levels the RPN looks at (P2–P6), Tensor[N, C, H_l, W_l] each.
            targets: in training, per image a dict with "boxes" Tensor[G, 4].

        Returns:
            proposals: per image Tensor[P_i, 4], best first, P_i <= post_nms_top_n.
            losses: {"loss_objectness", "loss_rpn_box_reg"} in training, else {}.
        """
        features = list(features.values())
        logits, deltas = self.head(features)
        anchors = self.anchor_generator(tuple(images.shape[-2:]), features)
        anchors_per_level = [x[0].numel() for x in logits]  # H_l·W_l·A per level
        objectness, deltas = flatten_predictions(logits, deltas)  # [N, total], [N, total, 4]
        boxes = self.box_coder.decode(deltas.detach().reshape(-1, 4), anchors.repeat(len(images), 1))
        proposals, _ = self.filter_proposals(boxes.view(len(images), -1, 4), objectness.detach(), image_sizes,
                                             anchors_per_level)
        losses = {}
        if self.training:
            if targets is None:
                raise ValueError("the RPN needs targets in training mode")
            labels, matched_gt_boxes = self.assign_targets(anchors, targets)
            regression_targets = self.box_coder.encode(torch.cat(matched_gt_boxes), anchors.repeat(len(images), 1))
            positive, negative = self.sampler(labels)
            loss_objectness, loss_box = rpn_loss(objectness.flatten(), deltas.reshape(-1, 4), torch.cat(labels),
                                                 regression_targets, torch.cat(positive), torch.cat(negative))
            losses = {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_box}
        return proposals, losses

    def filter_proposals(self, boxes: Tensor, objectness: Tensor, image_sizes: list[tuple[int, int]],
                         anchors_per_level: list[int]) -> tuple[list[Tensor], list[Tensor]]:
        """boxes: Tensor[N, total, 4] decoded anchors; objectness: Tensor[N, total] logits.

        Per level, keep the pre_nms_top_n highest-scoring boxes; then clip them to the image, mark tiny
        boxes and low scores as out, NMS each level of each image separately (all in one batch), and
        keep the post_nms_top_n best per image. Returns per image the proposals Tensor[P_i, 4], best
        first, and their probabilities Tensor[P_i] (as torchvision's does; the tests compare by them).
        """
        phase = "training" if self.training else "testing"
        top_index, level_sizes, start = [], [], 0
        for count in anchors_per_level:
            scores = objectness[:, start:start + count]
            level_sizes.append(min(self.pre_nms_top_n[phase], count))
            top_index.append(scores.topk(level_sizes[-1], dim=1).indices + start)  # best first
            start += count
        top_index = torch.cat(top_index, dim=1)
        image_index = torch.arange(len(boxes), device=boxes.device)[:, None]
        boxes, probabilities = boxes[image_index, top_index], torch.sigmoid(objectness[image_index, top_index])
        boxes = torch.stack([clip_boxes_to_image(b, size) for b, size in zip(boxes, image_sizes)])
        # Boxes that are filtered out stay in place, marked, so that every shape stays fixed.
        widths, heights = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        candidates = (widths >= self.min_size) & (heights >= self.min_size) & (probabilities >= self.score_thresh)
        # NMS per level: a box on P2 and one on P5 describe objects of different scale.
        kept, shifted = nms_per_level(boxes, candidates, level_sizes, self.nms_thresh)
        proposals, scores = [], []
        for boxes_i, probabilities_i, kept_i, shifted_i in zip(boxes, probabilities, kept, shifted):
            keep = torch.where(kept_i)[0]
            # The best first: torchvision's order, a stable sort if it shifted the levels apart.
            order = torch.sort(probabilities_i[keep], descending=True, stable=shifted_i).indices
            best = keep[order[: self.post_nms_top_n[phase]]]
            proposals.append(boxes_i[best])
            scores.append(probabilities_i[best])
        return proposals, scores

    def assign_targets(self, anchors: Tensor, targets: list[dict[str, Tensor]]) -> tuple[list[Tensor], list[Tensor]]:
        """Label each anchor of each image: 1 object, 0 background, -1 ignored; and its matched GT box.

        Returns per image: labels Tensor[total] (float), matched GT boxes Tensor[total, 4] (zeros where
        unmatched; only positives' boxes are used).
        """
        labels, matched_gt_boxes = [], []
        for target in targets:
            gt_boxes = target["boxes"]
            if len(gt_boxes) == 0:  # an image without objects: every anchor is background
                labels.append(torch.zeros(len(anchors), dtype=anchors.dtype, device=anchors.device))
                matched_gt_boxes.append(torch.zeros_like(anchors))
                continue
            matches = self.matcher(box_iou(gt_boxes, anchors))
            label = torch.where(matches == BETWEEN_THRESHOLDS, -1.0, (matches >= 0).to(anchors.dtype))
            labels.append(label)
            matched_gt_boxes.append(gt_boxes[matches.clamp(min=0)])
        return labels, matched_gt_boxes


def nms_per_level(boxes: Tensor, candidates: Tensor, level_sizes: list[int], iou_threshold: float
                  ) -> tuple[Tensor, list[bool]]:
    """NMS for every level of every image at once.

    Args:
        boxes: Tensor[N, T, 4], the levels one after the other, each best first (T = sum of level_sizes).
        candidates: Tensor[N, T] bool, the boxes that take part.
        level_sizes: how many boxes each level has.

    Returns:
        kept: Tensor[N, T] bool; and per image, whether its levels were shifted apart in the plane (as
        torchvision's batched_nms does for few boxes; the shift changes how coordinates round).
    """
    n = len(candidates)
    counts = candidates.sum(dim=1)
    shifted = [shifts_categories_apart(count, boxes.device) for count in counts.tolist()]
    level = torch.cat([torch.full((size,), float(index), device=boxes.device) for index, size in enumerate(level_sizes)])
    # The largest coordinate of each image's candidates (0 if it has none: coordinates are clipped to >= 0).
    largest = torch.where(candidates[..., None], boxes, 0.0).amax(dim=(1, 2))  # [N]
    shift = torch.where(shifts_categories_apart(counts, boxes.device), largest + 1, 0.0)
    boxes = boxes + (level.to(boxes) * shift[:, None].to(boxes))[..., None]
    # One padded group of the largest level's size per (image, level).
    group_size = max(level_sizes)
    overlaps = boxes.new_zeros(n, len(level_sizes), group_size, group_size, dtype=torch.bool)
    padded_candidates = boxes.new_zeros(n, len(level_sizes), group_size, dtype=torch.bool)
    start = 0
    for index, size in enumerate(level_sizes):
        overlaps[:, index, :size, :size] = overlap_graph(boxes[:, start:start + size], iou_threshold)
        padded_candidates[:, index, :size] = candidates[:, start:start + size]
        start += size
    # The edges between candidates, numbered across all groups: group g's box i is g · group_size + i.
    overlaps &= padded_candidates[..., :, None] & padded_candidates[..., None, :]
    group, first, second = overlaps.flatten(0, 1).nonzero(as_tuple=True)
    first, second = group * group_size + first, group * group_size + second
    kept = greedy_keep(first, second, padded_candidates.flatten()).view(n, len(level_sizes), group_size)
    return torch.cat([kept[:, index, :size] for index, size in enumerate(level_sizes)], dim=1), shifted


def flatten_predictions(logits: list[Tensor], deltas: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Lay the head's per-level maps out in anchor order (level, row, column, anchor).

    logits: Tensor[N, A, H_l, W_l] per level; deltas: Tensor[N, 4A, H_l, W_l] per level.
    Returns objectness Tensor[N, total] and deltas Tensor[N, total, 4].
    """
    flat_logits, flat_deltas = [], []
    for logit, delta in zip(logits, deltas):
        n, a, h, w = logit.shape
        flat_logits.append(logit.permute(0, 2, 3, 1).reshape(n, -1))
        flat_deltas.append(delta.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
    return torch.cat(flat_logits, dim=1), torch.cat(flat_deltas, dim=1)
