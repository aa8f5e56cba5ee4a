"""Box deltas: how a detector says "move this anchor (or proposal) onto that object".

A box is coded relative to a reference box of width w, height h and centre (x, y):

    dx = wx · (x_gt - x) / w        dw = ww · log(w_gt / w)
    dy = wy · (y_gt - y) / h        dh = wh · log(h_gt / h)

Shifts are relative to the reference size and scales are logarithmic, so the same delta means the
same thing for a small and a large box. The weights (wx, wy, ww, wh) only rescale the targets so that
the regression loss has a convenient size: (1, 1, 1, 1) in the RPN, (10, 10, 5, 5) in the box head.
"""
import math

import torch
from torch import Tensor


class BoxCoder:
    """Encode boxes as deltas against reference boxes, and decode deltas back into boxes.

    Args:
        weights: (wx, wy, ww, wh), the factors the deltas are multiplied by.
        bbox_xform_clip: the largest dw and dh that `decode` exponentiates, so that a wild prediction
            cannot make a box more than 1000/16 times larger than its reference box.
    """

    def __init__(self, weights: tuple[float, float, float, float], bbox_xform_clip: float = math.log(1000.0 / 16)):
        self.weights = weights
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, gt_boxes: Tensor, reference_boxes: Tensor) -> Tensor:
        """Deltas that move each reference box onto its gt box: Tensor[N, 4] and Tensor[N, 4] -> Tensor[N, 4]."""
        wx, wy, ww, wh = self.weights
        ref_w, ref_h, ref_x, ref_y = _size_and_centre(reference_boxes)
        gt_w, gt_h, gt_x, gt_y = _size_and_centre(gt_boxes)
        dx = wx * (gt_x - ref_x) / ref_w
        dy = wy * (gt_y - ref_y) / ref_h
        dw = ww * torch.log(gt_w / ref_w)
        dh = wh * torch.log(gt_h / ref_h)
        return torch.stack((dx, dy, dw, dh), dim=1)

    def decode(self, deltas: Tensor, reference_boxes: Tensor) -> Tensor:
        """Apply deltas to reference boxes.

        Args:
            deltas: Tensor[N, 4·K], one (dx, dy, dw, dh) per class (K = 1 for class-agnostic deltas).
            reference_boxes: Tensor[N, 4].

        Returns:
            Tensor[N, 4·K] boxes in (x1, y1, x2, y2), in the layout of `deltas`.
        """
        reference_boxes = reference_boxes.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        ref_w, ref_h, ref_x, ref_y = (t[:, None] for t in _size_and_centre(reference_boxes))
        dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
        # Clamp before exp: an untrained head can output dw = 50, and exp(50) overflows float16/32.
        dw = (deltas[:, 2::4] / ww).clamp(max=self.bbox_xform_clip)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.bbox_xform_clip)
        centre_x, centre_y = dx * ref_w + ref_x, dy * ref_h + ref_y
        half_w, half_h = 0.5 * (torch.exp(dw) * ref_w), 0.5 * (torch.exp(dh) * ref_h)
        boxes = torch.stack((centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h), dim=2)
        return boxes.flatten(1)


def _size_and_centre(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Width, height, centre x and centre y of Tensor[N, 4] boxes, each Tensor[N]."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return widths, heights, boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights
