"""The box branch (Fast R-CNN): classify each pooled RoI and refine its box, one box per class.

Pooled 256×7×7 features go through two fully connected layers of 1024 (fc6, fc7), then two sibling
linear layers: K class scores (class 0 is background) and 4·K box deltas, one set per class
("class-specific regression"), coded against the proposal with weights (10, 10, 5, 5).
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ops import BoxCoder, batched_nms, clip_boxes_to_image, remove_small_boxes


class TwoMLPHead(nn.Module):
    """Flatten, fc6 + ReLU, fc7 + ReLU: Tensor[R, C, 7, 7] -> Tensor[R, representation_size]."""

    def __init__(self, in_channels: int, representation_size: int = 1024):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.fc7(torch.relu(self.fc6(x.flatten(start_dim=1)))))


class FastRCNNPredictor(nn.Module):
    """Class logits Tensor[R, K] and per-class box deltas Tensor[R, 4K] from Tensor[R, in_channels]."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


def postprocess_detections(class_logits: Tensor, box_deltas: Tensor, proposals: list[Tensor],
                           image_sizes: list[tuple[int, int]], box_coder: BoxCoder, score_thresh: float = 0.05,
                           nms_thresh: float = 0.5, detections_per_img: int = 100, min_size: float = 1e-2
                           ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Turn the box branch's outputs into final detections, per image.

    Every (proposal, class) pair is a candidate: softmax scores, the class's own decoded box clipped
    to the image; then drop background, scores <= score_thresh and boxes under min_size, run NMS per
    class, and keep the best detections_per_img.

    Args:
        class_logits: Tensor[R, K]; box_deltas: Tensor[R, 4K]; proposals: per image Tensor[R_i, 4].
        image_sizes: (h, w) per image.

    Returns:
        boxes Tensor[D_i, 4], scores Tensor[D_i], labels Tensor[D_i] (int64, in 1..K-1) per image,
        best first.
    """
    num_classes = class_logits.shape[-1]
    boxes = box_coder.decode(box_deltas, torch.cat(proposals)).view(len(class_logits), num_classes, 4)
    scores = F.softmax(class_logits, dim=-1)
    per_image = [len(p) for p in proposals]
    all_boxes, all_scores, all_labels = [], [], []
    for boxes_i, scores_i, image_size in zip(boxes.split(per_image), scores.split(per_image), image_sizes):
        boxes_i = clip_boxes_to_image(boxes_i, image_size)
        labels_i = torch.arange(num_classes, device=scores_i.device).expand_as(scores_i)
        # One candidate per (proposal, foreground class), in (proposal, class) order.
        boxes_i, scores_i, labels_i = boxes_i[:, 1:].reshape(-1, 4), scores_i[:, 1:].flatten(), labels_i[:, 1:].flatten()
        keep = torch.where(scores_i > score_thresh)[0]
        keep = keep[remove_small_boxes(boxes_i[keep], min_size)]
        keep = keep[batched_nms(boxes_i[keep], scores_i[keep], labels_i[keep], nms_thresh)][:detections_per_img]
        all_boxes.append(boxes_i[keep])
        all_scores.append(scores_i[keep])
        all_labels.append(labels_i[keep])
    return all_boxes, all_scores, all_labels
