"""A small RPN that trains on the shapes data in under a minute on a CPU: the bench for the experiments
of chapters 03 and 04 (what the FPN, its 3×3 output convolutions, low-quality matches and the anchor
sizes are worth, measured as recall).

It is chapter 04's section-10 network, packaged so that one variant differs from another in one
setting only: a ResNet-18 body of width 32 with GroupNorm, a 64-channel FPN, anchors of 16 to 256
pixels (4 strides per level) at ratios 0.5, 1, 2, 200 proposals per level in training, AdamW at 1e-3
with a cosine schedule, 8 images per step. Everything is seeded: the same variant, seed and number of
iterations give the same numbers on the same machine.

    backbone, rpn = build_rpn(output_convs=False)          # one change at a time
    train_rpn(backbone, rpn, *shapes_split("train", 1000), iterations=250)
    found = recall(proposals(backbone, rpn, val_images), val_boxes, k=100)

or, all in one, `measure(lambda seed: build_rpn(output_convs=False, seed=seed))`.
"""
import functools
import math
from collections import OrderedDict

import numpy as np
import torch
from torch import Tensor, nn

from ..anchors import AnchorGenerator
from ..backbone import ResNet
from ..data import image_rng, make_shapes_image
from ..fpn import BackboneWithFPN
from ..matching import Matcher
from ..ops import box_iou
from ..rpn import RegionProposalNetwork, RPNHead

IMAGE_SIZE = 128
ANCHOR_SIZES = (16, 32, 64, 128, 256)  # one per level P2..P6: 4 strides each
RATIOS = (0.5, 1.0, 2.0)
CHANNELS = 64
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
# Object sizes sqrt(w·h) that split the shapes' objects (11 to 56 pixels) into three groups.
SIZE_GROUPS = {"small (< 24 px)": (0, 24), "medium (24-40 px)": (24, 40), "large (>= 40 px)": (40, math.inf)}


@functools.lru_cache(maxsize=4)  # experiments reuse the same splits; the caller must not change them
def shapes_split(split: str, count: int, seed: int = 0) -> tuple[Tensor, list[Tensor]]:
    """`count` shapes images of a split, as the model's transform would hand them to the backbone.

    Returns:
        images: Tensor[count, 3, 128, 128], normalized with ImageNet's mean and std.
        boxes: per image a Tensor[G, 4] (x1, y1, x2, y2), the tight box around each visible mask.
    """
    images, boxes = [], []
    for index in range(count):
        image, masks, _ = make_shapes_image(image_rng(seed, split, index), IMAGE_SIZE)
        pixels = torch.from_numpy(image).float() / 255
        images.append(((pixels - MEAN) / STD).permute(2, 0, 1))
        tight = []
        for mask in masks:
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            tight.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        boxes.append(torch.tensor(tight, dtype=torch.float32).reshape(-1, 4))
    return torch.stack(images), boxes


class SingleLevel(nn.Module):
    """A backbone without a pyramid, as in Faster R-CNN on C4: one map C_level, 1×1-projected to `channels`.

    forward: images Tensor[N, 3, H, W] -> OrderedDict {'0': Tensor[N, channels, H / 2^level, W / 2^level]}.
    """

    def __init__(self, body: nn.Module, level: int, channels: int = CHANNELS):
        super().__init__()
        self.body, self.index = body, level - 2  # the body returns [C2, C3, C4, C5]
        self.projection = nn.Conv2d(body.out_channels[self.index], channels, 1)
        self.out_channels = channels

    def forward(self, images: Tensor) -> "OrderedDict[str, Tensor]":
        return OrderedDict([("0", self.projection(self.body(images)[self.index]))])


def build_rpn(levels: str = "P2-P6", output_convs: bool = True, allow_low_quality_matches: bool = True,
              anchor_sizes: tuple[int, ...] = ANCHOR_SIZES, seed: int = 0) -> tuple[nn.Module, RegionProposalNetwork]:
    """The bench's backbone and RPN, with one setting changed from the default if asked.

    Args:
        levels: "P2-P6" (the FPN) or "C4" / "C5" (one level, every anchor size on it).
        output_convs: False replaces the FPN's 3×3 output convolutions by the identity, P_k = M_k.
        allow_low_quality_matches: the RPN matcher's setting (chapter 04, section 5).
        anchor_sizes: one size per level P2..P6 (all of them on the single level).
        seed: fixes the initial weights.
    """
    torch.manual_seed(seed)
    body = ResNet(18, norm="gn", width=32)
    if levels == "P2-P6":
        backbone = BackboneWithFPN(body, out_channels=CHANNELS)
        if not output_convs:
            backbone.fpn.output_convs = nn.ModuleList(nn.Identity() for _ in backbone.fpn.output_convs)
        generator = AnchorGenerator(tuple((size,) for size in anchor_sizes), (RATIOS,) * len(anchor_sizes))
        anchors_per_cell = len(RATIOS)
    elif levels in ("C4", "C5"):
        backbone = SingleLevel(body, int(levels[1]))
        generator = AnchorGenerator((tuple(anchor_sizes),), (RATIOS,))
        anchors_per_cell = len(RATIOS) * len(anchor_sizes)
    else:
        raise ValueError(f"levels must be 'P2-P6', 'C4' or 'C5', not {levels!r}")
    rpn = RegionProposalNetwork(generator, RPNHead(CHANNELS, anchors_per_cell),
                                pre_nms_top_n=dict(training=200, testing=1000),
                                post_nms_top_n=dict(training=200, testing=1000))
    rpn.matcher = Matcher(0.7, 0.3, allow_low_quality_matches=allow_low_quality_matches)
    return backbone, rpn


def train_rpn(backbone: nn.Module, rpn: RegionProposalNetwork, images: Tensor, boxes: list[Tensor],
              iterations: int = 250, batch_size: int = 8, lr: float = 1e-3, seed: int = 0) -> list[float]:
    """Train backbone and RPN together on random batches of (images, boxes); returns the loss of each step.

    images: Tensor[M, 3, H, W]; boxes: M tensors [G_i, 4]. AdamW with a cosine schedule to 0.
    """
    parameters = [p for p in [*backbone.parameters(), *rpn.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(iterations, 1))
    generator = torch.Generator().manual_seed(seed)
    size = tuple(images.shape[-2:])
    backbone.train(), rpn.train()
    losses = []
    for _ in range(iterations):
        chosen = torch.randint(0, len(images), (batch_size,), generator=generator)
        targets = [{"boxes": boxes[i]} for i in chosen.tolist()]
        batch = images[chosen]
        _, loss_terms = rpn(batch, [size] * batch_size, backbone(batch), targets)
        loss = sum(loss_terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def proposals(backbone: nn.Module, rpn: RegionProposalNetwork, images: Tensor, batch_size: int = 25) -> list[Tensor]:
    """The RPN's proposals for each image, best first: a list of Tensor[P_i, 4] (evaluation mode)."""
    backbone.eval(), rpn.eval()
    size, found = tuple(images.shape[-2:]), []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            out, _ = rpn(batch, [size] * len(batch), backbone(batch))
            found += out
    return found


def recall(found: list[Tensor], boxes: list[Tensor], k: int = 100, iou: float = 0.5,
           size_range: tuple[float, float] = (0, math.inf)) -> float:
    """The fraction of ground-truth boxes with side sqrt(w·h) in `size_range` that one of the first k
    proposals of their image overlaps with IoU >= `iou`. NaN if no box has a size in the range."""
    hits, total = 0, 0
    for props, gt in zip(found, boxes):
        sides = ((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])).sqrt()
        gt = gt[(sides >= size_range[0]) & (sides < size_range[1])]
        total += len(gt)
        if len(gt) and len(props):
            hits += int((box_iou(gt, props[:k]) >= iou).any(dim=1).sum())
    return hits / total if total else float("nan")


def recall_by_size(found: list[Tensor], boxes: list[Tensor], k: int = 100, iou: float = 0.5) -> dict[str, float]:
    """recall() over all boxes ("all") and over each group of SIZE_GROUPS."""
    result = {"all": recall(found, boxes, k, iou)}
    result.update({name: recall(found, boxes, k, iou, bounds) for name, bounds in SIZE_GROUPS.items()})
    return result


def measure(build=build_rpn, iterations: int = 250, train_count: int = 1000, val_count: int = 100, k: int = 100,
            iou: float = 0.7) -> dict[str, float]:
    """Train build(seed=0) -> (backbone, rpn) on `train_count` training images; its recall_by_size on `val_count`
    val images. With the defaults: the bench unchanged, as chapter 04's section 12 scores it."""
    backbone, rpn = build(seed=0)
    train_rpn(backbone, rpn, *shapes_split("train", train_count), iterations=iterations)
    images, boxes = shapes_split("val", val_count)
    return recall_by_size(proposals(backbone, rpn, images), boxes, k=k, iou=iou)
