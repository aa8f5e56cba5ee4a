"""Mask R-CNN, assembled: backbone + FPN -> RPN -> RoI heads (box branch, then mask branch).

    images ─ transform ─ ResNet ─ FPN ─┬─ RPN (P2–P6) ─ proposals ─┐
                                       └────────── P2–P5 ──────────┴─ RoI heads ─ boxes, labels, scores, masks
"""
from torch import Tensor, nn

from .anchors import AnchorGenerator
from .backbone import ResNet
from .box_head import FastRCNNPredictor, TwoMLPHead
from .checks import check_inputs
from .config import MaskRCNNConfig
from .fpn import BackboneWithFPN
from .mask_head import MaskHead, MaskPredictor
from .mask_mlp_head import MaskMLPPredictor
from .poolers import MultiScaleRoIAlign
from .roi_heads import RoIHeads
from .rpn import RegionProposalNetwork, RPNHead
from .transform import ImageTransform


class MaskRCNN(nn.Module):
    """The whole model. Call conventions are torchvision's:

    - `model.eval(); model(images)` -> per image {"boxes": [D, 4], "labels": [D], "scores": [D],
      "masks": [D, 1, H, W] probabilities}, in the image's own pixels.
    - `model.train(); model(images, targets)` -> {"loss_classifier", "loss_box_reg", "loss_mask",
      "loss_objectness", "loss_rpn_box_reg"}; targets per image {"boxes": [G, 4] float (x1, y1, x2, y2),
      "labels": [G] int64 in 1..num_classes-1, "masks": [G, H, W] uint8}.

    images: a list of float Tensor[3, H, W] with values in [0, 1], of any sizes.
    """

    def __init__(self, config: MaskRCNNConfig):
        super().__init__()
        c = self.config = config
        self.transform = ImageTransform(c.min_size, c.max_size, c.image_mean, c.image_std)
        body = ResNet(c.depth, c.norm, c.width, c.frozen_bn_eps, c.trainable_stages)
        self.backbone = BackboneWithFPN(body, c.fpn_channels)
        anchors = AnchorGenerator(tuple((s,) for s in c.anchor_sizes), (tuple(c.aspect_ratios),) * len(c.anchor_sizes))
        self.rpn = RegionProposalNetwork(
            anchors, RPNHead(c.fpn_channels, anchors.num_anchors_per_location()[0]),
            c.rpn_fg_iou_thresh, c.rpn_bg_iou_thresh, c.rpn_batch_size_per_image, c.rpn_positive_fraction,
            {"training": c.rpn_pre_nms_top_n_train, "testing": c.rpn_pre_nms_top_n_test},
            {"training": c.rpn_post_nms_top_n_train, "testing": c.rpn_post_nms_top_n_test}, c.rpn_nms_thresh,
            sampler_draws=c.sampler_draws)
        levels = ["0", "1", "2", "3"]  # P2–P5: the heads never pool from P6
        fixed_level = None if c.roi_level == "fpn" else int(c.roi_level[1:])  # "P5" -> 5
        mask_classes = 1 if c.class_agnostic_mask else c.num_classes
        if c.mask_head == "mlp":
            mask_head = TwoMLPHead(c.fpn_channels * 14 * 14, c.box_representation_size)
            mask_predictor = MaskMLPPredictor(c.box_representation_size, mask_classes)
        else:
            mask_head = MaskHead(c.fpn_channels, c.mask_channels)
            mask_predictor = MaskPredictor(c.mask_channels, c.mask_channels, mask_classes)
        self.roi_heads = RoIHeads(
            MultiScaleRoIAlign(levels, 7, sampling_ratio=2, canonical_scale=c.roi_canonical_scale, roi_op=c.roi_op,
                               fixed_level=fixed_level),
            TwoMLPHead(c.fpn_channels * 7 * 7, c.box_representation_size),
            FastRCNNPredictor(c.box_representation_size, c.num_classes),
            MultiScaleRoIAlign(levels, 14, sampling_ratio=2, canonical_scale=c.roi_canonical_scale, roi_op=c.roi_op,
                               fixed_level=fixed_level),
            mask_head, mask_predictor,
            c.box_fg_iou_thresh, c.box_bg_iou_thresh, c.box_batch_size_per_image, c.box_positive_fraction,
            score_thresh=c.box_score_thresh, nms_thresh=c.box_nms_thresh, detections_per_img=c.box_detections_per_img,
            sampler_draws=c.sampler_draws, mask_loss=c.mask_loss, class_agnostic_mask=c.class_agnostic_mask)

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("in training mode the model needs targets; call model.eval() to predict")
        check_inputs(images, targets if self.training else None, self.config, next(self.parameters()).dtype)
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        batch, image_sizes, targets = self.transform(images, targets)
        features = self.backbone(batch)  # P2–P6
        proposals, rpn_losses = self.rpn(batch, image_sizes, features, targets)
        detections, head_losses = self.roi_heads(features, proposals, image_sizes, targets)
        if self.training:
            return {**head_losses, **rpn_losses}
        return self.transform.postprocess(detections, image_sizes, original_sizes)

    def compile_dense_parts(self, **compile_options) -> None:
        """torch.compile, in place, the parts that are convolutions and matrix products: the backbone and
        FPN, the RPN head, the box head and the mask head. Their shapes change only with the image size
        and the number of RoIs. The parts in between (proposal filtering, NMS, sampling, matching) stay
        eager: their shapes depend on the data, and a compiled graph would break at each of them.
        In place (`Module.compile`), so the state dict keeps its names. `compile_options` go to
        torch.compile, e.g. backend="eager" to check the wiring without a compiler."""
        for part in (self.backbone, self.rpn.head, self.roi_heads.box_head, self.roi_heads.box_predictor,
                     self.roi_heads.mask_head, self.roi_heads.mask_predictor):
            part.compile(**compile_options)


def maskrcnn_resnet50_fpn(num_classes: int = 91, **overrides) -> MaskRCNN:
    """Mask R-CNN with a ResNet-50-FPN and torchvision's defaults (those of its COCO-trained model:
    frozen BatchNorm, the top three stages trainable). `overrides` are MaskRCNNConfig fields."""
    return MaskRCNN(MaskRCNNConfig(num_classes=num_classes).replace(**overrides))
