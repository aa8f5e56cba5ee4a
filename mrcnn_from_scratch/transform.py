"""From a list of images of any size to one padded batch, and from detections back to each image.

1. Normalize each image with the ImageNet mean and std the backbone expects.
2. Resize so that the short side is `min_size` (800), unless that makes the long side exceed
   `max_size` (1333): scale = min(800 / short, 1333 / long). Boxes are scaled with it; masks are
   resized by nearest neighbour so that they stay 0/1.
3. Pad at the bottom and right to a common size that is a multiple of 32, so that every FPN level's
   size is a whole number of cells and the five levels line up.
After prediction, boxes are scaled back and the 28×28 masks are pasted at each image's original size.
"""
import math

import numpy
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mask_head import paste_masks_in_image


class ImageTransform(nn.Module):
    """Normalize, resize and batch images (and their targets); undo the resize on detections.

    Args:
        min_size: the short side after resizing; a tuple picks one at random per image in training
            (multi-scale training), and uses the last one in prediction.
        max_size: the largest long side after resizing.
        image_mean, image_std: per-channel statistics to normalize with.
        size_divisible: the padded batch's height and width are multiples of this.
    """

    def __init__(self, min_size: int | tuple[int, ...], max_size: int, image_mean: tuple[float, float, float],
                 image_std: tuple[float, float, float], size_divisible: int = 32):
        super().__init__()
        self.min_size = min_size if isinstance(min_size, (tuple, list)) else (min_size,)
        self.max_size = max_size
        self.image_mean, self.image_std = image_mean, image_std
        # float32 copies as buffers: they move with the model to its device once, instead of being
        # copied from the host on every call.
        self.register_buffer("mean_float32", torch.tensor(image_mean)[:, None, None], persistent=False)
        self.register_buffer("std_float32", torch.tensor(image_std)[:, None, None], persistent=False)
        self.size_divisible = size_divisible

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
                ) -> tuple[Tensor, list[tuple[int, int]], list[dict[str, Tensor]] | None]:
        """images: Tensor[3, H_i, W_i] floats in [0, 1]; targets: per image {"boxes", "labels", "masks", ...}.

        Returns:
            batch: Tensor[N, 3, H, W], zero-padded; image_sizes: (h_i, w_i) of each resized image;
            targets: copies with boxes and masks resized (the caller's dicts are left untouched).
        """
        resized, image_sizes, new_targets = [], [], [] if targets is not None else None
        for i, image in enumerate(images):
            target = dict(targets[i]) if targets is not None else None
            image, target = self.resize(self.normalize(image), target)
            resized.append(image)
            image_sizes.append((image.shape[-2], image.shape[-1]))
            if new_targets is not None:
                new_targets.append(target)
        return self.batch(resized), image_sizes, new_targets

    def normalize(self, image: Tensor) -> Tensor:
        if image.dtype == torch.float32:
            return (image - self.mean_float32) / self.std_float32
        # Other precisions (float64 in the tests) round the statistics once, from the exact values.
        mean = torch.as_tensor(self.image_mean, dtype=image.dtype, device=image.device)[:, None, None]
        std = torch.as_tensor(self.image_std, dtype=image.dtype, device=image.device)[:, None, None]
        return (image - mean) / std

    def resize(self, image: Tensor, target: dict[str, Tensor] | None) -> tuple[Tensor, dict[str, Tensor] | None]:
        """Resize one image (Tensor[3, H, W]) and its target by min(min_size / short, max_size / long)."""
        height, width = image.shape[-2:]
        if self.training:  # one draw per image from the global RNG, as torchvision makes it
            min_size = self.min_size[int(torch.empty(1).uniform_(0.0, float(len(self.min_size))).item())]
        else:
            min_size = self.min_size[-1]
        scale = min(min_size / min(height, width), self.max_size / max(height, width))
        # recompute_scale_factor: the output size is floor(size · scale), and the interpolation then
        # uses the exact ratio of the two sizes.
        image = F.interpolate(image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True,
                              align_corners=False)[0]
        if target is None:
            return image, None
        target["boxes"] = resize_boxes(target["boxes"], (height, width), tuple(image.shape[-2:]))
        if "masks" in target:
            masks = target["masks"][:, None].float()
            target["masks"] = F.interpolate(masks, scale_factor=scale, recompute_scale_factor=True)[:, 0].byte()
        return image, target

    def batch(self, images: list[Tensor]) -> Tensor:
        """Zero-pad images at the bottom and right into Tensor[N, 3, H, W], H and W multiples of size_divisible."""
        stride = self.size_divisible
        height = int(math.ceil(max(img.shape[-2] for img in images) / stride) * stride)
        width = int(math.ceil(max(img.shape[-1] for img in images) / stride) * stride)
        batch = images[0].new_zeros(len(images), 3, height, width)
        for padded, image in zip(batch, images):
            padded[:, : image.shape[-2], : image.shape[-1]].copy_(image)
        return batch

    def postprocess(self, detections: list[dict[str, Tensor]], image_sizes: list[tuple[int, int]],
                    original_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """Scale boxes back to each original image and paste the masks: masks become Tensor[D, 1, H, W]."""
        for detection, size, original in zip(detections, image_sizes, original_sizes):
            detection["boxes"] = resize_boxes(detection["boxes"], size, original)
            if "masks" in detection:
                detection["masks"] = paste_masks_in_image(detection["masks"], detection["boxes"], original)
        return detections


def resize_boxes(boxes: Tensor, original_size: tuple[int, int], new_size: tuple[int, int]) -> Tensor:
    """Scale Tensor[N, 4] boxes from an image of original_size (h, w) to one of new_size (h, w)."""
    # The ratios are rounded to float32, as torchvision computes them, so that float64 boxes round the
    # same way too. They are Python numbers: no tensor is made on the device for them.
    ratio_h, ratio_w = (float(numpy.float32(new) / numpy.float32(old)) for new, old in zip(new_size, original_size))
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=1)
