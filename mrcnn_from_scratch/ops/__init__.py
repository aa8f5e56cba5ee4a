"""The from-scratch operators of chapter 01 and 05, with torchvision.ops' signatures and results."""
from .box_coder import BoxCoder
from .boxes import box_area, box_iou, clip_boxes_to_image, remove_small_boxes
from .nms import batched_nms, nms
from .roi_align import roi_align
from .roi_pool import roi_pool

__all__ = [
    "BoxCoder",
    "batched_nms",
    "box_area",
    "box_iou",
    "clip_boxes_to_image",
    "nms",
    "remove_small_boxes",
    "roi_align",
    "roi_pool",
]
