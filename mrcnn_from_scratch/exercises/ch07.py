"""Checkers for chapter 07's exercises: mask targets, the mask of each detection's class, pasting one
mask into the image, and the IoU that a target of a given resolution keeps after the round trip.

Each checker runs your function on fixed cases, compares it with the package's finished version
(`mrcnn_from_scratch.mask_head`), and raises AssertionError on the first case it gets wrong, showing
that input. The functions it expects:

    mask_targets(gt_masks: Tensor[G, H, W] uint8, boxes: Tensor[R, 4], matched_gt: Tensor[R] int64, size: int)
        -> Tensor[R, size, size] float32
        each RoI's GT mask (gt_masks[matched_gt[r]]) cropped to the RoI by RoIAlign (spatial scale 1,
        adaptive sampling, aligned=False) and resized to size × size.
    class_masks(mask_logits: Tensor[D, K, M, M], labels: Tensor[D] int64) -> Tensor[D, 1, M, M]
        the sigmoid of each detection's own class channel.
    paste_mask(mask: Tensor[M, M], box: Tensor[4], image_size: (h, w)) -> Tensor[h, w] float32
        the mask padded by one zero cell on each side, the box grown by (M + 2) / M about its centre and
        truncated to whole pixels (as .to(torch.int64) does), the padded mask resized bilinearly to the
        grown box (x1..x2 and y1..y2 inclusive) and placed in an empty image, clipped at its borders.
    roundtrip_iou(gt_mask: Tensor[H, W] bool, box: Tensor[4], size: int) -> float
        the IoU between gt_mask and its size × size target (cropped to `box`) pasted back into the
        image and thresholded at > 0.5.
"""
import math
from typing import Any, Callable

import torch
from torch import Tensor

from .. import mask_head
from ._checking import Case, run_cases, tensor_problem


def disc_mask(height: int, width: int, cx: float, cy: float, radius: float) -> Tensor:
    """Tensor[height, width] bool: the pixels whose centres lie within `radius` of (cx, cy)."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2


def triangle_mask(height: int, width: int, cx: float, cy: float, radius: float, angle: float = 0.3) -> Tensor:
    """Tensor[height, width] bool: an equilateral triangle with circumradius `radius` centred on (cx, cy)."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    corners = [(cx + radius * math.cos(angle + 2 * math.pi * k / 3), cy + radius * math.sin(angle + 2 * math.pi * k / 3))
               for k in range(3)]
    inside = torch.ones(height, width, dtype=torch.bool)
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
        inside &= (x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0) >= 0
    return inside


def tight_box(mask: Tensor) -> Tensor:
    """Tensor[4] float32: the smallest (x1, y1, x2, y2) box around the True pixels of a [H, W] mask."""
    rows, cols = torch.where(mask.any(dim=1))[0], torch.where(mask.any(dim=0))[0]
    return torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)


def _boxes(*rows: list[float]) -> Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


# ---------------------------------------------------------------------------------- mask targets

def _gt_masks(seed: int, count: int, height: int, width: int) -> Tensor:
    """Tensor[count, height, width] uint8: discs of random size and place, one per GT object."""
    g = torch.Generator().manual_seed(seed)
    masks = []
    for _ in range(count):
        cx, cy = (torch.rand(2, generator=g) * torch.tensor([width, height])).tolist()
        radius = float(5 + torch.rand(1, generator=g) * min(height, width) / 3)
        masks.append(disc_mask(height, width, cx, cy, radius))
    return torch.stack(masks).to(torch.uint8)


def _rois(seed: int, count: int, height: int, width: int) -> Tensor:
    """Tensor[count, 4] float32: boxes of 4 to 40 pixels, some sticking out of the image, with fractional corners."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(count, 2, generator=g) * torch.tensor([width, height])
    size = 4 + 36 * torch.rand(count, 2, generator=g)
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def _targets_case(name: str, gt_masks: Tensor, boxes: Tensor, matched_gt: Tensor, size: int = 28,
                  hint: str = "") -> Case:
    return Case(name, {"gt_masks": gt_masks, "boxes": boxes, "matched_gt": matched_gt, "size": size}, hint)


def check_mask_targets(fn: Callable) -> bool:
    """Check fn(gt_masks Tensor[G, H, W] uint8, boxes Tensor[R, 4], matched_gt Tensor[R], size) -> Tensor[R, size, size]."""
    how = ("RoIAlign over the GT masks: rois = (matched_gt, x1, y1, x2, y2), output (size, size), spatial_scale 1, "
           "the default sampling_ratio (-1, adaptive) and aligned=False; convert the uint8 masks to float first")
    g = torch.Generator().manual_seed(0)
    masks = _gt_masks(1, 3, 60, 80)
    disc = disc_mask(50, 50, 24.0, 26.0, 15.0).to(torch.uint8)[None]
    tight = tight_box(disc[0].bool())[None]
    cases = [
        _targets_case("12 RoIs on 3 GT masks", masks, _rois(2, 12, 60, 80), torch.randint(0, 3, (12,), generator=g),
                      hint=how),
        _targets_case("every RoI matched to the last GT mask", masks, _rois(3, 5, 60, 80), torch.full((5,), 2),
                      hint="crop gt_masks[matched_gt[r]] for RoI r: matched_gt is the batch index of each roi"),
        _targets_case("a disc and its tight box", disc, tight, torch.zeros(1, dtype=torch.int64),
                      hint="aligned=False: the original Mask R-CNN (and torchvision) do not shift the box by half a pixel"),
        _targets_case("the same box, size 14", disc, tight, torch.zeros(1, dtype=torch.int64), 14,
                      hint="the output is size × size"),
        _targets_case("a box twice the object, size 56", disc, _boxes([0.5, 2.5, 49.5, 49.5]),
                      torch.zeros(1, dtype=torch.int64), 56),
        _targets_case("RoIs partly outside the image", masks, _boxes([-10.0, -6.0, 20.0, 22.0], [70.5, 40.0, 95.0, 70.0]),
                      torch.tensor([0, 1]), hint="RoIAlign reads 0 outside the map; do not clip the boxes first"),
        _targets_case("no RoIs", masks, _boxes(), torch.zeros(0, dtype=torch.int64),
                      hint="the result is Tensor[0, size, size]"),
    ]

    def compare(received, expected, case):
        return tensor_problem(received, expected, "the mask targets", rtol=1e-5, atol=1e-5)

    return run_cases("check_mask_targets", fn, mask_head.mask_targets, cases, compare)


# ------------------------------------------------------------------------------ masks of the labels

def reference_class_masks(mask_logits: Tensor, labels: Tensor) -> Tensor:
    """Tensor[D, K, M, M], Tensor[D] -> Tensor[D, 1, M, M]: mask_head.masks_of_labels for one image."""
    return mask_head.masks_of_labels(mask_logits, [labels])[0]


def _class_case(name: str, detections: int, num_classes: int, seed: int, labels: Tensor | None = None, size: int = 28,
                hint: str = "") -> Case:
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(detections, num_classes, size, size, generator=g)
    if labels is None:
        labels = torch.randint(1, num_classes, (detections,), generator=g)
    return Case(name, {"mask_logits": logits, "labels": labels}, hint)


def check_class_masks(fn: Callable) -> bool:
    """Check fn(mask_logits Tensor[D, K, M, M], labels Tensor[D]) -> Tensor[D, 1, M, M] probabilities."""
    own = "take channel labels[d] of detection d (index with torch.arange(D) and labels), then a sigmoid"
    cases = [
        _class_case("5 detections, 4 classes", 5, 4, 0, hint=own),
        _class_case("8 detections, 91 classes", 8, 91, 1, hint=own),
        _class_case("all of the last class", 3, 6, 2, torch.full((3,), 5),
                    hint="labels count the background as 0, so class c is channel c (not c - 1)"),
        _class_case("small masks (14 × 14)", 4, 5, 3, size=14),
        _class_case("one detection", 1, 3, 4, hint="keep the channel dimension: the result is Tensor[D, 1, M, M]"),
        _class_case("no detections", 0, 4, 5, torch.zeros(0, dtype=torch.int64), hint="the result is Tensor[0, 1, M, M]"),
    ]

    def compare(received, expected, case):
        problem = tensor_problem(received, expected, "the masks", rtol=1e-5, atol=1e-6)
        if problem and isinstance(received, Tensor) and received.shape == expected.shape and len(expected):
            if torch.allclose(received, case.args["mask_logits"].softmax(dim=1)[torch.arange(len(expected)),
                                                                               case.args["labels"]][:, None]):
                return problem + " (that is a softmax over the classes: each class's mask has its own sigmoid)"
        return problem

    return run_cases("check_class_masks", fn, reference_class_masks, cases, compare)


# ------------------------------------------------------------------------------------ paste one mask

def reference_paste_mask(mask: Tensor, box: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Tensor[M, M], Tensor[4], (h, w) -> Tensor[h, w]: mask_head.paste_masks_in_image for one mask."""
    return mask_head.paste_masks_in_image(mask[None, None], box[None], image_size)[0, 0]


def _paste_case(name: str, box: list[float], image_size: tuple[int, int] = (60, 80), seed: int = 0, size: int = 28,
                hint: str = "") -> Case:
    g = torch.Generator().manual_seed(seed)
    # A blob that is 1 in the middle and fades towards the border, like a predicted mask.
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    mask = torch.sigmoid(6 * (0.8 - xs**2 - ys**2) + torch.randn(size, size, generator=g))
    return Case(name, {"mask": mask, "box": torch.tensor(box, dtype=torch.float32), "image_size": image_size}, hint)


def check_paste_mask(fn: Callable) -> bool:
    """Check fn(mask Tensor[M, M], box Tensor[4], image_size (h, w)) -> Tensor[h, w] float32."""
    steps = ("pad the mask with one zero cell on each side (M -> M + 2); grow the box by (M + 2) / M about its centre; "
             "truncate the grown box to int64; resize to (y2 - y1 + 1, x2 - x1 + 1) with F.interpolate(mode='bilinear', "
             "align_corners=False); paste what falls inside the image")
    cases = [
        _paste_case("a box inside the image", [20.0, 10.0, 48.0, 38.0], hint=steps),
        _paste_case("fractional corners", [12.3, 7.8, 50.6, 29.1], seed=1, hint=steps),
        _paste_case("a large box", [5.0, 4.0, 75.0, 57.0], seed=2,
                    hint="the grown box spans x1..x2 inclusive: its width is x2 - x1 + 1 pixels"),
        _paste_case("a small box (8 pixels)", [30.0, 30.0, 38.0, 38.0], seed=3,
                    hint="the 30/28 growth and the zero border matter most for small boxes"),
        _paste_case("a box over the top-left corner", [-12.6, -7.2, 20.0, 18.0], seed=4,
                    hint="truncate toward zero as .to(torch.int64) does (-2.7 -> -2, not floor's -3), then paste only "
                         "the part of the resized mask that lies inside the image"),
        _paste_case("a box over the bottom-right corner", [60.0, 45.0, 95.0, 72.0], seed=5,
                    hint="paste only the part of the resized mask that lies inside the image"),
        _paste_case("a 14 × 14 mask", [10.0, 10.0, 40.0, 30.0], seed=6, size=14,
                    hint="the growth factor is (M + 2) / M for an M × M mask"),
        _paste_case("a sub-pixel box", [10.0, 10.0, 10.4, 10.3], seed=7,
                    hint="a box thinner than a pixel still gets at least 1 × 1 pixels: max(x2 - x1 + 1, 1)"),
    ]

    def compare(received, expected, case):
        return tensor_problem(received, expected, "the pasted mask", rtol=0, atol=1e-5)

    return run_cases("check_paste_mask", fn, reference_paste_mask, cases, compare)


# --------------------------------------------------------------------------------- round-trip IoU

def reference_roundtrip_iou(gt_mask: Tensor, box: Tensor, size: int) -> float:
    """The IoU between a [H, W] mask and its size × size target pasted back into the image (> 0.5)."""
    target = mask_head.mask_targets(gt_mask[None].to(torch.uint8), box[None], torch.zeros(1, dtype=torch.int64), size)
    pasted = mask_head.paste_masks_in_image(target[:, None], box[None], tuple(gt_mask.shape))[0, 0] > 0.5
    return ((pasted & gt_mask).sum() / (pasted | gt_mask).sum()).item()


class _Number(float):
    """A float shown with 6 decimals in a failure message."""

    def __repr__(self) -> str:
        return f"{float(self):.6f}"


def _iou_case(name: str, gt_mask: Tensor, size: int, box: Tensor | None = None, hint: str = "") -> Case:
    return Case(name, {"gt_mask": gt_mask, "box": tight_box(gt_mask) if box is None else box, "size": size}, hint)


def check_roundtrip_iou(fn: Callable) -> bool:
    """Check fn(gt_mask Tensor[H, W] bool, box Tensor[4], size) -> the round-trip IoU, a float."""
    how = ("target = mask_targets(gt_mask[None], box[None], torch.zeros(1, dtype=torch.int64), size); paste it back with "
           "paste_masks_in_image into the full image; threshold at > 0.5; IoU with gt_mask over the whole image")
    disc = disc_mask(160, 160, 80.3, 79.6, 61.0)
    triangle = triangle_mask(160, 160, 78.0, 83.0, 70.0)
    cases = [
        _iou_case("a disc of radius 61, target 28 × 28", disc, 28, hint=how),
        _iou_case("the same disc at 14 × 14", disc, 14, hint=how),
        _iou_case("the same disc at 56 × 56", disc, 56, hint=how),
        _iou_case("a triangle at 28 × 28", triangle, 28),
        _iou_case("a small disc (radius 9) at 28 × 28", disc_mask(40, 40, 20.5, 19.0, 9.0), 28),
        _iou_case("a box larger than the disc", disc, 28, _boxes([5.0, 3.0, 150.0, 158.0])[0],
                  hint="crop with the given box, not with the mask's own tight box"),
    ]

    def reference(gt_mask, box, size):
        return _Number(reference_roundtrip_iou(gt_mask, box, size))

    def compare(received, expected, case):
        if isinstance(received, Tensor) and received.numel() == 1:
            received = received.item()
        if not isinstance(received, (float, int)):
            return f"return the IoU as a number (float), got {type(received).__name__}"
        if not abs(received - expected) <= 1e-5:
            return f"the IoU should be {expected:.6f}, got {received:.6f}"
        return None

    def shown(*args: Any) -> Any:
        out = fn(*args)
        return _Number(out.item()) if isinstance(out, Tensor) and out.numel() == 1 else (
            _Number(out) if isinstance(out, float) else out)

    return run_cases("check_roundtrip_iou", shown, reference, cases, compare)
