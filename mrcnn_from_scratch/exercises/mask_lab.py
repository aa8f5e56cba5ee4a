"""A tiny mask head trained in seconds on RoIs of the shapes data: the bench for chapter 05's experiment,
RoIPool against RoIAlign, where only the pooling differs.

The "features" are the image itself, average-pooled to stride 8 (a 16 × 16 × 3 map for a 128-pixel
image): coarse enough that RoIPool's rounding to whole cells (up to 8 pixels) matters, as it does on
the FPN's coarse levels. The RoIs are the objects' tight boxes jittered by 10% of their size, like
proposals. Each RoI is pooled to 14 × 14 and a small FCN (4 convolutions of 16 channels, a 2×2
transposed convolution, one class-agnostic mask) learns its 28 × 28 target, the GT mask seen through
the RoI (`mask_head.mask_targets`). The score is the mask IoU of each test RoI at p > 0.5.

    result = experiment(lambda features, rois: ops.roi_align(features, rois, 14, 1 / STRIDE, 2))
    result["IoU >= 0.75"]   # the share of test RoIs whose mask is precise
"""
import functools
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import image_rng, make_shapes_image
from ..mask_head import mask_targets

STRIDE = 8
IMAGE_SIZE = 128


@functools.lru_cache(maxsize=4)  # both poolings of an experiment read the same RoIs; do not change them
def rois_of(split: str, count: int, jitter: float = 0.1) -> tuple[Tensor, Tensor, Tensor]:
    """The bench's RoIs of `count` shapes images of a split.

    Returns:
        features: Tensor[count, 3, 16, 16], each image average-pooled with stride 8.
        rois: Tensor[K, 5] of (image index, x1, y1, x2, y2) in image pixels.
        targets: Tensor[K, 28, 28] in [0, 1], each RoI's mask target.
    """
    jitters = torch.Generator().manual_seed(0 if split == "train" else 1)
    features, rois, targets = [], [], []
    for index in range(count):
        image, masks, _ = make_shapes_image(image_rng(0, split, index), IMAGE_SIZE)
        pixels = torch.from_numpy(image).permute(2, 0, 1).float() / 255
        features.append(F.avg_pool2d(pixels[None], STRIDE)[0])
        tight = [[np.flatnonzero(m.any(0))[0], np.flatnonzero(m.any(1))[0],
                  np.flatnonzero(m.any(0))[-1] + 1, np.flatnonzero(m.any(1))[-1] + 1] for m in masks]
        boxes = torch.tensor(tight, dtype=torch.float32)
        sides = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
        boxes = boxes + jitter * sides * torch.randn(boxes.shape, generator=jitters)  # proposal-like
        targets.append(mask_targets(torch.from_numpy(masks), boxes, torch.arange(len(boxes)), 28))
        rois.append(torch.cat([torch.full((len(boxes), 1), float(index)), boxes], dim=1))
    return torch.stack(features), torch.cat(rois), torch.cat(targets)


def tiny_mask_head(channels: int = 16) -> nn.Sequential:
    """Tensor[K, 3, 14, 14] -> Tensor[K, 1, 28, 28] logits: chapter 07's head, 16 channels wide."""
    layers = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU()]
    for _ in range(3):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
    layers += [nn.ConvTranspose2d(channels, channels, 2, stride=2), nn.ReLU(), nn.Conv2d(channels, 1, 1)]
    return nn.Sequential(*layers)


def experiment(pool: Callable[[Tensor, Tensor], Tensor], steps: int = 400, train_count: int = 200,
               test_count: int = 50, seed: int = 0) -> dict[str, float]:
    """Train the tiny head on RoIs pooled by pool(features, rois) -> Tensor[K, 3, 14, 14]; score the test RoIs.

    Returns {"mean IoU": the mean mask IoU, "IoU >= 0.75": the share of test RoIs at IoU 0.75 or more}.
    """
    features, rois, targets = rois_of("train", train_count)
    crops = pool(features, rois).detach()
    torch.manual_seed(seed)
    head = tiny_mask_head()
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    batches = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(0, len(crops), (32,), generator=batches)
        loss = F.binary_cross_entropy_with_logits(head(crops[batch])[:, 0], targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    features, rois, targets = rois_of("val", test_count)
    with torch.no_grad():
        predicted = head(pool(features, rois))[:, 0].sigmoid() > 0.5
    truth = targets >= 0.5
    iou = (predicted & truth).sum(dim=(1, 2)) / (predicted | truth).sum(dim=(1, 2)).clamp(min=1)
    return {"mean IoU": iou.mean().item(), "IoU >= 0.75": (iou >= 0.75).float().mean().item()}
