"""Box geometry in (x1, y1, x2, y2) pixel coordinates.

A box's width is x2 - x1, with no "+1": coordinates name the edges between pixels, not the pixels, so
a box from x1 = 0 to x2 = 10 covers 10 pixels exactly.
"""
import torch
from torch import Tensor


def _upcast(t: Tensor) -> Tensor:
    """Widen small dtypes (float16, uint8, ...) so that products of coordinates cannot overflow."""
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def box_area(boxes: Tensor) -> Tensor:
    """Area of each box: Tensor[..., 4] -> Tensor[...]."""
    boxes = _upcast(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair: Tensor[..., N, 4] and Tensor[..., M, 4] -> Tensor[..., N, M]."""
    # Work on [N, M] grids of single coordinates: faster than [N, M, 2] grids of corners.
    x1a, y1a, x2a, y2a = (c[..., :, None] for c in _upcast(boxes1).unbind(-1))
    x1b, y1b, x2b, y2b = (c[..., None, :] for c in _upcast(boxes2).unbind(-1))
    overlap_w = (torch.min(x2a, x2b) - torch.max(x1a, x1b)).clamp(min=0)
    overlap_h = (torch.min(y2a, y2b) - torch.max(y1a, y1b)).clamp(min=0)
    intersection = overlap_w * overlap_h
    union = box_area(boxes1)[..., :, None] + box_area(boxes2)[..., None, :] - intersection
    return intersection / union


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip Tensor[..., 4] boxes to an image of `size` = (height, width): 0 <= x <= width, 0 <= y <= height."""
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x, y), dim=-1).reshape(boxes.shape)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (int64) of the boxes of Tensor[N, 4] whose width and height are both >= min_size."""
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return torch.where((widths >= min_size) & (heights >= min_size))[0]
