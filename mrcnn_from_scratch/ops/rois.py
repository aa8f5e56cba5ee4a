"""The two ways of handing boxes to the RoI ops, and the checks shared by roi_align and roi_pool."""
import torch
from torch import Tensor


def to_roi_format(boxes: Tensor | list[Tensor]) -> Tensor:
    """Return boxes as one Tensor[K, 5] of (batch index, x1, y1, x2, y2).

    `boxes` is either that tensor already, or a list with one Tensor[L_i, 4] per image, in which case
    the batch index of each box is its position in the list.
    """
    if isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(f"boxes as a tensor must be [K, 5] (batch index, x1, y1, x2, y2), got {list(boxes.shape)}")
        return boxes
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(f"boxes must be a Tensor[K, 5] or a list of Tensor[L, 4], got {type(boxes).__name__}")
    for i, per_image in enumerate(boxes):
        if per_image.dim() != 2 or per_image.shape[1] != 4:
            raise ValueError(f"boxes[{i}] must be [L, 4] (x1, y1, x2, y2), got {list(per_image.shape)}")
    if len(boxes) == 0:
        raise ValueError("boxes is an empty list: give one Tensor[L, 4] per image (L may be 0)")
    batch_index = [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)]
    return torch.cat([torch.cat(batch_index), torch.cat(list(boxes))], dim=1)


def check_roi_inputs(input: Tensor, rois: Tensor, output_size: int | tuple[int, int]) -> tuple[int, int]:
    """Validate the feature map and RoIs; return output_size as (height, width)."""
    if input.dim() != 4:
        raise ValueError(f"input must be a feature map [N, C, H, W], got shape {list(input.shape)}")
    if rois.dtype != input.dtype:
        raise TypeError(f"boxes ({rois.dtype}) and input ({input.dtype}) must have the same dtype")
    if rois.device != input.device:
        raise ValueError(f"boxes are on {rois.device} but input is on {input.device}")
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    out_h, out_w = output_size
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"output_size must be positive, got {output_size}")
    return int(out_h), int(out_w)


def divide(x: Tensor, n: int) -> Tensor:
    """x / n rounded as IEEE division, like torchvision's kernels.

    On CUDA, x / n with a Python number (or a CPU scalar) n is computed as x · (1/n), which can differ
    in the last bit, and floor or ceil of the result would then move a bin edge by a whole cell. So n
    is made a 0-dim tensor on x's device: by a fill on the device, not a copy from the host.
    """
    return x / torch.full((), n, dtype=x.dtype, device=x.device)
