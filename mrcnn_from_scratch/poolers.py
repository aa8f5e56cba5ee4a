"""Multi-scale RoIAlign: pool each box from the one FPN level that suits its size.

A box of 224×224 pixels (ImageNet's canonical size) is pooled from P4; each halving of its side moves
it one level finer, each doubling one level coarser (FPN paper, eq. 1):

    k = floor(4 + log2(sqrt(w·h) / 224)), clamped to [2, 5]

so a small box reads the detailed stride-4 map and a large one the semantic stride-32 map, and every
box covers a similar number of cells on its level.

For the paper's ablations (chapter 11) the pooler can also send every box to one fixed level, and pool
with RoIPool's rounded bins instead of RoIAlign's bilinear samples.
"""
import math

import torch
from torch import Tensor, nn

from .ops import box_area, roi_align, roi_pool
from .ops.rois import to_roi_format


def box_levels(boxes: Tensor, k_min: int, k_max: int, canonical_scale: int = 224, canonical_level: int = 4) -> Tensor:
    """FPN level index of each box, counted from k_min: Tensor[K, 4] -> Tensor[K] (int64) in [0, k_max - k_min]."""
    size = torch.sqrt(box_area(boxes))
    # The 1e-6 keeps a box of exactly 112 (or 448, ...) pixels on the level the formula names,
    # where float rounding of log2 could land it just below.
    level = torch.floor(canonical_level + torch.log2(size / canonical_scale) + 1e-6)
    return (level.clamp(k_min, k_max) - k_min).to(torch.int64)


def infer_scale(feature: Tensor, image_size: tuple[int, int]) -> float:
    """The feature map's scale relative to the image, 1 / stride, rounded to a power of two."""
    return 2.0 ** round(math.log2(feature.shape[-2] / image_size[0]))


class MultiScaleRoIAlign(nn.Module):
    """RoIAlign over several FPN levels, each box from its own level.

    Args:
        featmap_names: the pyramid levels to pool from, finest first ("0".."3" for P2–P5).
        output_size: (out_h, out_w) or one int (7 for the box head, 14 for the mask head).
        sampling_ratio: samples per bin along each axis (2 in Mask R-CNN).
        canonical_scale, canonical_level: the box size that maps to which level (224 -> P4).
        roi_op: "align" (RoIAlign) or "pool" (RoIPool, which ignores sampling_ratio).
        fixed_level: None for the FPN rule, or k to pool every box from P_k (2 <= k <= 5 for P2–P5).
    """

    def __init__(self, featmap_names: list[str], output_size: int | tuple[int, int], sampling_ratio: int,
                 canonical_scale: int = 224, canonical_level: int = 4, roi_op: str = "align",
                 fixed_level: int | None = None):
        super().__init__()
        if roi_op not in ("align", "pool"):
            raise ValueError(f"roi_op={roi_op!r} is not one of 'align', 'pool'")
        self.featmap_names = featmap_names
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.sampling_ratio = sampling_ratio
        self.canonical_scale, self.canonical_level = canonical_scale, canonical_level
        self.roi_op, self.fixed_level = roi_op, fixed_level

    def forward(self, features: dict[str, Tensor], boxes: list[Tensor], image_sizes: list[tuple[int, int]]) -> Tensor:
        """Pool every box.

        Args:
            features: the pyramid, Tensor[N, C, H_l, W_l] per name.
            boxes: per image Tensor[K_i, 4] in image pixels.
            image_sizes: (h, w) per image before padding; the largest fixes each level's scale.

        Returns:
            Tensor[sum K_i, C, out_h, out_w], in the order of the boxes.
        """
        levels = [features[name] for name in self.featmap_names]
        largest = (max(h for h, _ in image_sizes), max(w for _, w in image_sizes))
        scales = [infer_scale(f, largest) for f in levels]
        k_min, k_max = round(-math.log2(scales[0])), round(-math.log2(scales[-1]))
        rois = to_roi_format(boxes)
        if self.fixed_level is None:
            level_of_box = box_levels(rois[:, 1:], k_min, k_max, self.canonical_scale, self.canonical_level)
        elif k_min <= self.fixed_level <= k_max:
            level_of_box = torch.full((len(rois),), self.fixed_level - k_min, dtype=torch.int64, device=rois.device)
        else:
            raise ValueError(f"fixed_level={self.fixed_level}: the pyramid has P{k_min} to P{k_max}")
        pooled = levels[0].new_zeros(len(rois), levels[0].shape[1], *self.output_size)
        # The boxes grouped by level: one sort, and one read of how many boxes each level has.
        order = torch.argsort(level_of_box, stable=True)
        counts = (level_of_box[None, :] == torch.arange(len(levels), device=rois.device)[:, None]).sum(dim=1)
        for feature, scale, index in zip(levels, scales, order.split(counts.tolist())):
            if len(index) == 0:  # nothing to pool here: skip the level's channels-last copy
                continue
            # Under autocast the features are float16: pool in the boxes' float32, as torchvision does.
            pooled[index] = self._pool(feature.to(rois.dtype), rois[index], scale).to(pooled.dtype)
        return pooled

    def _pool(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        if self.roi_op == "pool":
            return roi_pool(feature, rois, self.output_size, scale)
        return roi_align(feature, rois, self.output_size, scale, self.sampling_ratio)
