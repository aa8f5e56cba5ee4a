"""RoIPool (Fast R-CNN): max-pool each region into a fixed grid after snapping it to whole cells.

This is the operator whose two roundings Mask R-CNN removed: the box corners are rounded to the
feature grid, and each bin's edges are rounded outwards to whole cells (floor the start, ceil the end).

How it is computed: each output bin is a window of whole pixels, so it is a "bag" of pixel indices and
`embedding_bag(mode="max")` over the feature map laid out as a [pixels, channels] table takes all the
maxima at once, keeping the arg-max for the backward pass. Bins have different sizes, so the bags are
given as one flat index list plus the offset where each bin starts.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from .rois import check_roi_inputs, divide, to_roi_format


def roi_pool(
    input: Tensor, boxes: Tensor | list[Tensor], output_size: int | tuple[int, int], spatial_scale: float = 1.0
) -> Tensor:
    """Max-pool each box of `boxes` from `input` to a fixed `output_size` grid.

    Args:
        input: feature maps, Tensor[N, C, H, W].
        boxes: Tensor[K, 5] of (batch index, x1, y1, x2, y2), or a list of N Tensor[L_i, 4],
            in image coordinates.
        output_size: (out_h, out_w), or one int for both.
        spatial_scale: feature-map size / image size, e.g. 1/32 for a stride-32 map.

    Returns:
        Tensor[K, C, out_h, out_w]. Bins that fall wholly outside the map are 0. Differentiable with
        respect to `input`: each output's gradient goes to the pixel that was its maximum (the first
        one in row-major order on ties).
    """
    rois = to_roi_format(boxes)
    out_h, out_w = check_roi_inputs(input, rois, output_size)
    n, channels, height, width = input.shape
    rois = rois.detach()

    # First rounding: box corners to whole cells, half away from zero (C's round, not torch.round).
    scaled = rois[:, 1:].double() * spatial_scale
    x1, y1, x2, y2 = (torch.sign(scaled) * torch.floor(scaled.abs() + 0.5)).long().unbind(1)
    row_start, row_end = _bin_edges(y1, (y2 - y1 + 1).clamp(min=1), out_h, height, input.dtype)
    col_start, col_end = _bin_edges(x1, (x2 - x1 + 1).clamp(min=1), out_w, width, input.dtype)

    # Every bin (k, i, j) as a window: first pixel, height, width. Shapes [K, out_h, out_w].
    bin_rows = (row_end - row_start).clamp(min=0)[:, :, None]
    bin_cols = (col_end - col_start).clamp(min=0)[:, None, :]
    first_pixel = rois[:, 0].long()[:, None, None] * (height * width) + (
        row_start[:, :, None] * width + col_start[:, None, :]
    )
    bin_rows, bin_cols, first_pixel = torch.broadcast_tensors(bin_rows, bin_cols, first_pixel)
    bin_rows, bin_cols, first_pixel = bin_rows.flatten(), bin_cols.flatten(), first_pixel.flatten()

    # One flat list of pixel indices, bin after bin, each bin's window in row-major order.
    sizes = bin_rows * bin_cols
    offsets = torch.cumsum(sizes, 0) - sizes
    bin_of_entry = torch.repeat_interleave(torch.arange(len(sizes), device=sizes.device), sizes)
    position = torch.arange(len(bin_of_entry), device=sizes.device) - offsets[bin_of_entry]
    row, col = position // bin_cols[bin_of_entry], position % bin_cols[bin_of_entry]
    pixel = first_pixel[bin_of_entry] + row * width + col

    pixel_table = input.permute(0, 2, 3, 1).reshape(n * height * width, channels)
    # An empty bag (a bin outside the map) gives 0, as torchvision's kernel does.
    pooled = F.embedding_bag(pixel, pixel_table, offsets, mode="max")
    return pooled.view(len(rois), out_h, out_w, channels).permute(0, 3, 1, 2).contiguous()


def _bin_edges(start: Tensor, length: Tensor, bins: int, size: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Second rounding: split `length` cells into `bins` bins, floor each start and ceil each end.

    Args:
        start, length: Tensor[K] (long), the rounded box start and its length in cells.
        bins: output bins along this axis; size: feature-map length, to clip the edges to.
        dtype: the input's dtype, in which torchvision computes the bin size.

    Returns:
        first, end: Tensor[K, bins] (long), each bin's half-open cell range, clipped to [0, size].
    """
    bin_size = divide(length.to(dtype)[:, None], bins)
    index = torch.arange(bins, device=start.device, dtype=dtype)[None, :]
    first = torch.floor(index * bin_size).long() + start[:, None]
    end = torch.ceil((index + 1) * bin_size).long() + start[:, None]
    return first.clamp(0, size), end.clamp(0, size)
