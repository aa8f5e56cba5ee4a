"""RoIAlign: average bilinearly interpolated samples inside each output bin of each region.

How it is computed: every output value is a weighted sum of feature-map pixels. A bin holds
grid_h × grid_w sample points, each sample reads its 4 neighbouring pixels with bilinear weights, and
the bin averages its samples. So a bin is a "bag" of 4·grid_h·grid_w (pixel index, weight) pairs, and
`torch.nn.functional.embedding_bag(mode="sum")` over the feature map laid out as a table of
[pixels, channels] computes all bins at once, forward and backward, without ever materializing the
gathered pixels. The rules for where samples fall follow torchvision's kernel exactly (see
`_axis_samples`), so the results match it to float rounding.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from .rois import check_roi_inputs, divide, to_roi_format


def roi_align(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """Pool each box of `boxes` from `input` to a fixed `output_size` grid by bilinear sampling.

    Args:
        input: feature maps, Tensor[N, C, H, W].
        boxes: Tensor[K, 5] of (batch index, x1, y1, x2, y2), or a list of N Tensor[L_i, 4],
            in image coordinates.
        output_size: (out_h, out_w), or one int for both.
        spatial_scale: feature-map size / image size, e.g. 1/4 for a stride-4 map.
        sampling_ratio: samples per bin along each axis; <= 0 picks ceil(box size / bins) per box.
        aligned: if True, shift the box by -0.5 pixel so that pixel centres line up (Detectron2);
            False is the original Mask R-CNN behaviour that torchvision's detection models use.

    Returns:
        Tensor[K, C, out_h, out_w]. Differentiable with respect to `input` (not to `boxes`).
    """
    rois = to_roi_format(boxes)
    out_h, out_w = check_roi_inputs(input, rois, output_size)
    n, channels, height, width = input.shape
    rois = rois.detach()
    offset = 0.5 if aligned else 0.0
    # torchvision scales the coordinates in double precision before rounding to the input's dtype.
    corners = (rois[:, 1:].double() * spatial_scale - offset).to(input.dtype)
    x1, y1, x2, y2 = corners.unbind(1)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:  # the legacy version forces every box to be at least 1×1 cell
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = divide(roi_h, out_h), divide(roi_w, out_w)

    # The feature map as a table: row b·H·W + y·W + x holds the C channels of pixel (y, x) of image b.
    pixel_table = input.permute(0, 2, 3, 1).reshape(n * height * width, channels)
    batch_offset = rois[:, 0].long() * (height * width)

    if sampling_ratio > 0:
        grid_h = grid_w = torch.full_like(batch_offset, sampling_ratio)
    else:  # adaptive: about one sample per cell, ceil(bin size) along each axis, for each box
        grid_h, grid_w = torch.ceil(bin_h).long(), torch.ceil(bin_w).long()

    groups = _groups_of_similar_grids(grid_h, grid_w, sampling_ratio)
    # One group fills the whole output by itself; several are copied into place.
    output = input.new_zeros(len(rois), out_h, out_w, channels) if len(groups) > 1 else None
    for index, samples_h, samples_w in groups:
        rows, row_weights = _axis_samples(y1[index], bin_h[index], out_h, grid_h[index], samples_h, height)
        cols, col_weights = _axis_samples(x1[index], bin_w[index], out_w, grid_w[index], samples_w, width)
        # Combine the axes: [k, out_h, samples_h, 2, 1, 1, 1] with [k, 1, 1, 1, out_w, samples_w, 2].
        pixel = batch_offset[index, None, None, None, None, None, None] + (
            rows[:, :, :, :, None, None, None] * width + cols[:, None, None, None, :, :, :]
        )
        weight = row_weights[:, :, :, :, None, None, None] * col_weights[:, None, None, None, :, :, :]
        # The average over the box's own grid (a zero-size aligned box has none: its output stays 0).
        weight = weight / (grid_h[index] * grid_w[index]).clamp(min=1).to(weight.dtype)[:, None, None, None, None, None, None]
        # Reorder to one bag per output bin: [k, out_h, out_w, samples_h·2·samples_w·2].
        bags, bag_size = len(index) * out_h * out_w, samples_h * 2 * samples_w * 2
        pixel = pixel.permute(0, 1, 4, 2, 3, 5, 6).reshape(bags, bag_size)
        weight = weight.permute(0, 1, 4, 2, 3, 5, 6).reshape(bags, bag_size)
        pooled = F.embedding_bag(pixel, pixel_table, per_sample_weights=weight, mode="sum")
        pooled = pooled.view(len(index), out_h, out_w, channels)
        output = pooled if len(groups) == 1 else output.index_copy(0, index, pooled)
    return output.permute(0, 3, 1, 2).contiguous()


def _axis_samples(start: Tensor, bin_size: Tensor, bins: int, grid: Tensor, samples: int, size: int
                  ) -> tuple[Tensor, Tensor]:
    """Sample positions along one axis and their two interpolation neighbours.

    Args:
        start, bin_size: Tensor[k], the box's first coordinate and bin length in feature cells.
        bins: output bins along this axis; size: feature-map length.
        grid: Tensor[k] (long), each box's samples per bin; samples: how many are laid out (>= grid),
            those past a box's own grid get weight 0.

    Returns:
        neighbours: Tensor[k, bins, samples, 2] (long), the lower and upper pixel index of each sample.
        weights: Tensor[k, bins, samples, 2], their linear interpolation weights; both are 0 for a sample
        more than one pixel outside the map, or past the box's grid.
    """
    bin_index = torch.arange(bins, device=start.device, dtype=start.dtype)[None, :, None]
    sample_index = torch.arange(samples, device=start.device, dtype=start.dtype)[None, None, :]
    start, bin_size, grid = start[:, None, None], bin_size[:, None, None], grid[:, None, None]
    # Same operation order as torchvision's kernel, so that float rounding agrees too; the division by
    # a tensor rounds as IEEE division (see rois.divide).
    pos = start + bin_index * bin_size + (sample_index + 0.5) * bin_size / grid.clamp(min=1).to(start.dtype)
    inside = (pos >= -1.0) & (pos <= size) & (sample_index < grid)
    pos = pos.clamp(min=0)
    low = pos.long()  # truncation equals floor here, since pos >= 0
    at_edge = low >= size - 1  # past the last pixel centre: read the last pixel alone
    low = torch.where(at_edge, size - 1, low)
    high = torch.where(at_edge, size - 1, low + 1)
    pos = torch.where(at_edge, low.to(pos.dtype), pos)
    frac = pos - low
    weights = torch.stack([1.0 - frac, frac], dim=-1) * inside[..., None]
    return torch.stack([low, high], dim=-1), weights


def _groups_of_similar_grids(grid_h: Tensor, grid_w: Tensor, sampling_ratio: int) -> list[tuple[Tensor, int, int]]:
    """Batches of boxes that can share one layout of samples: (box indices, samples_h, samples_w).

    With a fixed sampling_ratio, one batch. With adaptive sampling each box has its own grid, so boxes
    are grouped by their larger grid side rounded up to a power of two (1, 2, 4, 8, ...), and each
    group lays out that many samples along both axes, the extra ones weighted 0: a handful of groups,
    however varied the boxes, at the price of computing up to 4 times the samples. The group sizes
    decide tensor shapes, so they are read on the host: one `unique` and one read.
    """
    if sampling_ratio > 0 or len(grid_h) == 0:
        return [(torch.arange(len(grid_h), device=grid_h.device), max(sampling_ratio, 1), max(sampling_ratio, 1))]
    power = torch.maximum(grid_h, grid_w).clamp(min=1).float().log2().ceil().long()
    powers, group_of_roi, counts = torch.unique(power, return_inverse=True, return_counts=True)
    groups = torch.stack([powers, counts], dim=1).tolist()  # [power, count] per group
    members = torch.argsort(group_of_roi, stable=True).split([count for _, count in groups])
    return [(index, 2**power, 2**power) for index, (power, _) in zip(members, groups)]
