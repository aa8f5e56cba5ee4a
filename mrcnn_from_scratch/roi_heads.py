"""The RoI heads: the box branch and the mask branch on top of the proposals.

Training and prediction run the branches differently (the seed's section 5):
- training: proposals (plus the GT boxes) are matched to GT at IoU 0.5 and 512 per image sampled,
  25% positives at most; the box branch runs on all sampled RoIs and the mask branch, in parallel,
  on the positive ones, against their GT mask.
- prediction: the box branch runs first and its detections are decoded and NMS-ed; only then does the
  mask branch run, on the final (at most 100) boxes, so masks are predicted where objects are.
"""
import torch
from torch import Tensor, nn

from .box_head import FastRCNNPredictor, TwoMLPHead, postprocess_detections
from .losses import fastrcnn_loss, maskrcnn_loss, maskrcnn_softmax_loss
from .mask_head import MaskHead, MaskPredictor, mask_targets, masks_of_labels
from .matching import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, BalancedPositiveNegativeSampler, Matcher
from .ops import BoxCoder, box_iou
from .poolers import MultiScaleRoIAlign


class RoIHeads(nn.Module):
    """Box and mask branches with their pooling, matching, sampling, losses and post-processing.

    Args:
        box_roi_pool, box_head, box_predictor: the box branch (7×7 pooling, fc6/fc7, class + deltas).
        mask_roi_pool, mask_head, mask_predictor: the mask branch (14×14 pooling, FCN, 28×28 logits).
        fg_iou_thresh, bg_iou_thresh: matching thresholds (0.5, 0.5).
        batch_size_per_image, positive_fraction: RoI sampling (512, 0.25).
        bbox_reg_weights: the box coder's weights ((10, 10, 5, 5)).
        score_thresh, nms_thresh, detections_per_img: post-processing (0.05, 0.5, 100).
        sampler_draws: "torchvision" or "ranks", see BalancedPositiveNegativeSampler.
        mask_loss: "sigmoid" (per-class binary, Mask R-CNN's), "softmax" (classes compete per pixel) or
            "none" (no mask loss: the box branch of Faster R-CNN, trained alone); chapter 11.
        class_agnostic_mask: the mask predictor has one channel, used for every class.
    """

    def __init__(self, box_roi_pool: MultiScaleRoIAlign, box_head: TwoMLPHead, box_predictor: FastRCNNPredictor,
                 mask_roi_pool: MultiScaleRoIAlign, mask_head: MaskHead, mask_predictor: MaskPredictor,
                 fg_iou_thresh: float = 0.5, bg_iou_thresh: float = 0.5, batch_size_per_image: int = 512,
                 positive_fraction: float = 0.25, bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100,
                 sampler_draws: str = "torchvision", mask_loss: str = "sigmoid", class_agnostic_mask: bool = False):
        super().__init__()
        if mask_loss not in ("sigmoid", "softmax", "none"):
            raise ValueError(f"mask_loss={mask_loss!r} is not one of 'sigmoid', 'softmax', 'none'")
        self.mask_loss, self.class_agnostic_mask = mask_loss, class_agnostic_mask
        self.box_roi_pool, self.box_head, self.box_predictor = box_roi_pool, box_head, box_predictor
        self.mask_roi_pool, self.mask_head, self.mask_predictor = mask_roi_pool, mask_head, mask_predictor
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction, sampler_draws)
        self.box_coder = BoxCoder(bbox_reg_weights)
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor], image_sizes: list[tuple[int, int]],
                targets: list[dict[str, Tensor]] | None = None) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Run both branches.

        Args:
            features: the pyramid (the poolers pick P2–P5 from it).
            proposals: per image Tensor[P_i, 4] from the RPN.
            image_sizes: (h, w) per image before padding.
            targets: in training, per image {"boxes": [G, 4], "labels": [G] int64, "masks": [G, H, W]}.

        Returns:
            detections: in prediction, per image {"boxes": [D, 4], "labels": [D], "scores": [D],
                "masks": [D, 1, 28, 28] probabilities, not yet pasted into the image}; [] in training.
            losses: in training {"loss_classifier", "loss_box_reg", "loss_mask"}; {} in prediction.
        """
        # Both poolers read each level as a [pixels, channels] table: lay the levels out that way once
        # (channels-last memory) instead of once per pooler call.
        features = {name: features[name].contiguous(memory_format=torch.channels_last)
                    for name in self.box_roi_pool.featmap_names}
        if self.training:
            return [], self.training_losses(features, proposals, image_sizes, targets)
        return self.predict(features, proposals, image_sizes), {}

    def training_losses(self, features, proposals, image_sizes, targets) -> dict[str, Tensor]:
        if targets is None:
            raise ValueError("the RoI heads need targets in training mode")
        rois, labels, matched_gt = self.sample_rois(proposals, targets)
        matched_boxes = [_boxes_or_dummy(target["boxes"].to(rois_i))[matched_i]
                         for target, rois_i, matched_i in zip(targets, rois, matched_gt)]
        regression_targets = self.box_coder.encode(torch.cat(matched_boxes), torch.cat(rois))
        # Box branch on every sampled RoI.
        class_logits, box_deltas = self.box_predictor(self.box_head(self.box_roi_pool(features, rois, image_sizes)))
        loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_deltas, torch.cat(labels), regression_targets)
        loss_mask = self.mask_branch_loss(features, rois, labels, matched_gt, targets, image_sizes)
        return {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg, "loss_mask": loss_mask}

    def mask_branch_loss(self, features, rois, labels, matched_gt, targets, image_sizes) -> Tensor:
        """The mask branch, in parallel with the box branch, on the positive RoIs only, each against its own
        GT mask."""
        if self.mask_loss == "none":
            # No mask branch at all. The zero still touches every mask weight, because DistributedDataParallel
            # expects each trainable parameter to get a gradient at every step.
            return sum(p.sum() * 0.0 for p in (*self.mask_head.parameters(), *self.mask_predictor.parameters()))
        positive = [torch.where(labels_i > 0)[0] for labels_i in labels]
        positive_rois = [rois_i[positive_i] for rois_i, positive_i in zip(rois, positive)]
        mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, positive_rois, image_sizes)))
        targets_28 = [mask_targets(target["masks"], rois_i, matched_i[positive_i], mask_logits.shape[-1])
                      for target, rois_i, matched_i, positive_i in zip(targets, positive_rois, matched_gt, positive)]
        positive_labels = self._mask_channels([labels_i[positive_i] for labels_i, positive_i in zip(labels, positive)])
        loss = maskrcnn_softmax_loss if self.mask_loss == "softmax" else maskrcnn_loss
        return loss(mask_logits, torch.cat(targets_28), torch.cat(positive_labels))

    def _mask_channels(self, labels: list[Tensor]) -> list[Tensor]:
        """The mask channel of each RoI: its class, or channel 0 for every class in a class-agnostic head."""
        return [torch.zeros_like(l) for l in labels] if self.class_agnostic_mask else labels

    def predict(self, features, proposals, image_sizes) -> list[dict[str, Tensor]]:
        # Box branch first: classify, decode, NMS ...
        class_logits, box_deltas = self.box_predictor(self.box_head(self.box_roi_pool(features, proposals, image_sizes)))
        boxes, scores, labels = postprocess_detections(class_logits, box_deltas, proposals, image_sizes, self.box_coder,
                                                       self.score_thresh, self.nms_thresh, self.detections_per_img)
        # ... then the mask branch on the kept detections only.
        mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_sizes)))
        masks = masks_of_labels(mask_logits, self._mask_channels(labels), softmax=self.mask_loss == "softmax")
        return [{"boxes": b, "labels": l, "scores": s, "masks": m} for b, l, s, m in zip(boxes, labels, scores, masks)]

    def sample_rois(self, proposals: list[Tensor], targets: list[dict[str, Tensor]]
                    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Match proposals (with the GT boxes appended) to GT and sample the training RoIs.

        Returns per image: rois Tensor[S_i, 4], labels Tensor[S_i] (int64, 0 = background) and the
        matched GT index Tensor[S_i] (0 for background RoIs; only positives' indices are used).
        """
        # Appending the GT boxes guarantees positives from the first step, when proposals are random.
        proposals = [torch.cat([p, t["boxes"].to(p)]) for p, t in zip(proposals, targets)]
        all_labels, all_matched = [], []
        for boxes, target in zip(proposals, targets):
            if len(target["boxes"]) == 0:
                matched = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
                labels = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
            else:
                matches = self.matcher(box_iou(target["boxes"].to(boxes), boxes))
                matched = matches.clamp(min=0)
                labels = torch.where(matches == BELOW_LOW_THRESHOLD, 0, target["labels"][matched].to(torch.int64))
                labels = torch.where(matches == BETWEEN_THRESHOLDS, -1, labels)
            all_labels.append(labels)
            all_matched.append(matched)
        positive, negative = self.sampler(all_labels)
        sampled = [torch.where(positive_i | negative_i)[0] for positive_i, negative_i in zip(positive, negative)]
        return ([boxes[s] for boxes, s in zip(proposals, sampled)], [labels[s] for labels, s in zip(all_labels, sampled)],
                [matched[s] for matched, s in zip(all_matched, sampled)])


def _boxes_or_dummy(gt_boxes: Tensor) -> Tensor:
    """GT boxes, or one all-zero box for an image without objects (its RoIs are all background, and the
    regression targets of background RoIs are never used)."""
    return gt_boxes if len(gt_boxes) else gt_boxes.new_zeros(1, 4)
