"""Checkers for the notebooks' exercises: call one on your function to find the input it gets wrong.

    from mrcnn_from_scratch.exercises import check_nms
    check_nms(my_nms)   # prints "✓ check_nms passed ..." or raises AssertionError showing the failing case
"""
from . import mask_lab, rpn_lab
from .ch00 import check_coco_to_xyxy, check_transformed_size
from .ch01 import check_batched_nms, check_box_coder, check_box_iou, check_decode, check_encode, check_nms
from .ch02 import check_basic_block, check_bottleneck, check_feature_sizes, check_frozen_batch_norm, check_receptive_field
from .ch03 import check_output_conv_experiment, check_roi_levels, check_top_down
from .ch04 import (check_anchor_size_experiment, check_cell_anchors, check_grid_anchors, check_low_quality_experiment,
                   check_matcher, check_rpn_loss)
from .ch05 import (check_bilinear, check_multiscale_roi_align, check_roi_align_box, check_roi_pool_bins,
                   check_roi_pool_experiment)
from .ch06 import check_boxes_for_labels, check_candidates, check_fastrcnn_loss, check_two_mlp_head
from .ch07 import check_class_masks, check_mask_targets, check_paste_mask, check_roundtrip_iou
from .ch08 import check_mask_loss_grad, check_maskrcnn_loss, check_smooth_l1, check_total_loss
from .ch09 import check_boxes_to_original, check_iterations_for, check_scaled_lr, check_training_step, check_warmup_cosine
from .ch10 import check_interpolated_ap, check_mask_iou, check_match_detections, check_precision_recall_at
from .ch11 import check_gap, check_rounding_shift, check_softmax_pixel_gradient
from .ch12 import check_class_specific_keys, check_instances_from_mask, check_level_histogram, check_split_images
from .ch13 import check_chain_rounds, check_greedy_keep, check_loop_syncs

__all__ = ["mask_lab", "rpn_lab", "check_coco_to_xyxy", "check_transformed_size"]
__all__ += ["check_batched_nms", "check_box_coder", "check_box_iou", "check_decode", "check_encode", "check_nms"]
__all__ += ["check_output_conv_experiment", "check_roi_levels", "check_top_down"]
__all__ += ["check_basic_block", "check_bottleneck", "check_feature_sizes", "check_frozen_batch_norm", "check_receptive_field"]
__all__ += ["check_anchor_size_experiment", "check_cell_anchors", "check_grid_anchors", "check_low_quality_experiment"]
__all__ += ["check_matcher", "check_rpn_loss"]
__all__ += ["check_bilinear", "check_multiscale_roi_align", "check_roi_align_box", "check_roi_pool_bins"]
__all__ += ["check_roi_pool_experiment"]
__all__ += ["check_boxes_for_labels", "check_candidates", "check_fastrcnn_loss", "check_two_mlp_head"]
__all__ += ["check_class_masks", "check_mask_targets", "check_paste_mask", "check_roundtrip_iou"]
__all__ += ["check_mask_loss_grad", "check_maskrcnn_loss", "check_smooth_l1", "check_total_loss"]
__all__ += ["check_boxes_to_original", "check_iterations_for", "check_scaled_lr", "check_training_step"]
__all__ += ["check_warmup_cosine"]
__all__ += ["check_interpolated_ap", "check_mask_iou", "check_match_detections", "check_precision_recall_at"]
__all__ += ["check_gap", "check_rounding_shift", "check_softmax_pixel_gradient"]
__all__ += ["check_class_specific_keys", "check_instances_from_mask", "check_level_histogram", "check_split_images"]
__all__ += ["check_chain_rounds", "check_greedy_keep", "check_loop_syncs"]
