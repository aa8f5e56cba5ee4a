"""Input validation for the model: fail early, with the image and box at fault, never silently.

Two kinds of checks, and they cost very differently on a GPU:
- types, shapes, dtypes and devices are known on the host, so checking them is free;
- values (NaN, pixels above 1, boxes without area, labels out of range) live on the device, and reading
  any answer back makes the host wait for the GPU to finish its queue (a host sync).
So the value checks compute every problem as a flag on the device, stack the flags into one tensor and
read it once. Only when a flag is set does a slow path look again to name the image and box at fault.
"""
import math

import torch
from torch import Tensor


def check_inputs(images: list[Tensor], targets: list[dict[str, Tensor]] | None, config,
                 dtype: torch.dtype | None) -> None:
    """Raise TypeError or ValueError, naming the image (and box) at fault, unless the model can take these.

    Args:
        images: float Tensor[3, H_i, W_i] with values in [0, 1], of the model's dtype.
        targets: None (prediction), or per image {"boxes": float [G, 4] (x1, y1, x2, y2) with x2 > x1 and
            y2 > y1, "labels": int64 [G] in 1..num_classes-1, "masks": [G, H_i, W_i]}.
        config: the model's MaskRCNNConfig (num_classes, min_size, max_size).
        dtype: the dtype of the model's weights, which the images must share (None: the images need only
            share one dtype).

    At most one host sync: all value problems are read back together.
    """
    check_image_types(images, dtype)
    for i, image in enumerate(images):
        check_resizable(i, image.shape[1], image.shape[2], config.min_size, config.max_size)
    if targets is not None:
        check_target_types(images, targets)
    check_values(images, targets, config.num_classes)


def check_values(images: list[Tensor], targets: list[dict[str, Tensor]] | None, num_classes: int) -> None:
    """The value checks of `images` (and `targets`, unless None), read back in one host sync."""
    with torch.no_grad():
        flags = [image_flag(image) for image in images]
        if targets is not None:
            flags += [target_flag(target, num_classes) for target in targets]
        problems = torch.stack(flags).tolist()  # the one host sync
    for i, problem in enumerate(problems[: len(images)]):
        if problem:
            explain_image(i, images[i])
    for i, problem in enumerate(problems[len(images):]):
        if problem:
            explain_target(i, targets[i], num_classes)


def check_image_types(images: list[Tensor], dtype: torch.dtype | None) -> None:
    """Everything about the images that the host knows without reading them: no sync. `dtype`: the
    model's (None: the images need only agree with each other)."""
    if isinstance(images, Tensor) and images.dim() == 4:
        raise TypeError("images must be a list of Tensor[3, H, W], got one batched tensor: pass list(batch)")
    if len(images) == 0:
        raise ValueError("images is empty: pass at least one Tensor[3, H, W]")
    for i, image in enumerate(images):
        if not isinstance(image, Tensor):
            raise TypeError(f"images[{i}] must be a Tensor[3, H, W], got {type(image).__name__}")
        if not image.is_floating_point():
            raise TypeError(f"images[{i}] must be a float tensor with values in [0, 1], got dtype {image.dtype}"
                            " (for uint8 images, divide by 255)")
        if image.dtype != (dtype or images[0].dtype):
            # Converting silently would hide a model and data that disagree (and double a float64 batch's
            # memory for nothing); the fix is one call.
            raise TypeError(f"images[{i}] is {image.dtype} but the model's weights are {dtype or images[0].dtype}: "
                            f"pass image.to({dtype or images[0].dtype}) (under autocast too, images stay in the "
                            "weights' dtype)")
        if image.dim() != 3 or image.shape[0] != 3 or image.shape[1] == 0 or image.shape[2] == 0:
            raise ValueError(f"images[{i}] must have shape [3, H, W], got {list(image.shape)}")
        if image.device != images[0].device:
            raise ValueError(f"images[{i}] is on {image.device} but images[0] is on {images[0].device}")


def check_resizable(i: int, height: int, width: int, min_size: int | tuple[int, ...], max_size: int) -> None:
    """The transform scales by min(min_size / short side, max_size / long side) (see transform.py); an
    image so long and thin that its short side would shrink below one pixel cannot be resized."""
    smallest = min(min_size) if isinstance(min_size, (tuple, list)) else min_size  # ImageTransform takes both
    short, long = min(height, width), max(height, width)
    scale = min(smallest / short, max_size / long)
    if math.floor(short * scale) < 1:
        raise ValueError(f"images[{i}] is {height}×{width}: resized to a long side of at most {max_size} "
                         f"(max_size) its short side would be {short * scale:.2f} pixels, less than one. Crop it "
                         f"into pieces with a side ratio under {max_size}:1, or raise max_size")


def check_target_types(images: list[Tensor], targets: list[dict[str, Tensor]]) -> None:
    """The targets' keys, dtypes, shapes and devices: no sync."""
    if len(targets) != len(images):
        raise ValueError(f"{len(images)} images but {len(targets)} targets")
    for i, (image, target) in enumerate(zip(images, targets)):
        for key in ("boxes", "labels", "masks"):
            if key not in target:
                raise ValueError(f"targets[{i}] has no '{key}' (it has {sorted(target)})")
        boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
        if not boxes.is_floating_point() or boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(f"targets[{i}]['boxes'] must be a float Tensor[G, 4], got {boxes.dtype} "
                             f"{list(boxes.shape)}")
        if labels.dtype != torch.int64 or labels.shape != (len(boxes),):
            raise ValueError(f"targets[{i}]['labels'] must be an int64 Tensor[{len(boxes)}] (one per box), "
                             f"got {labels.dtype} {list(labels.shape)}")
        if masks.dim() != 3 or len(masks) != len(boxes):
            raise ValueError(f"targets[{i}]['masks'] must be Tensor[{len(boxes)}, H, W] (one per box), "
                             f"got {list(masks.shape)}")
        if tuple(masks.shape[-2:]) != tuple(image.shape[-2:]):
            raise ValueError(f"targets[{i}]['masks'] are {list(masks.shape[-2:])} but image {i} is "
                             f"{list(image.shape[-2:])}")
        for key in ("boxes", "labels", "masks"):
            if target[key].device != image.device:
                raise ValueError(f"targets[{i}]['{key}'] is on {target[key].device} but image {i} is on "
                                 f"{image.device}: move both to the same device")


def image_flag(image: Tensor) -> Tensor:
    """Bool scalar, on the image's device: True if any value is outside [0, 1] (NaN included, since
    every comparison with NaN is False)."""
    low, high = torch.aminmax(image.detach())
    return ~((low >= 0) & (high <= 1))


def target_flag(target: dict[str, Tensor], num_classes: int) -> Tensor:
    """Bool scalar: True if a box has no area or is not finite, or a label is out of range.

    A box's width x2 - x1 (and height) must be > 0 and < Inf: that one test also catches every NaN or
    Inf coordinate, since NaN fails both comparisons and an infinite coordinate makes the size ±Inf
    (or NaN, for Inf - Inf)."""
    boxes, labels = target["boxes"].detach(), target["labels"]
    sizes = boxes[:, 2:] - boxes[:, :2]  # [G, 2]: widths and heights
    good_boxes = ((sizes > 0) & (sizes < math.inf)).all()
    good_labels = ((labels >= 1) & (labels < num_classes)).all()
    return ~(good_boxes & good_labels)


def explain_image(i: int, image: Tensor) -> None:
    """The slow path, taken only when image_flag is set: say what is wrong with images[i] and how to fix it."""
    finite = torch.isfinite(image)
    if not finite.all():
        raise ValueError(f"images[{i}] holds {int((~finite).sum())} NaN or Inf values: the model needs finite pixels")
    low, high = image.min().item(), image.max().item()
    if high > 1:
        raise ValueError(f"images[{i}] has values up to {high:g}, but the model takes values in [0, 1]: "
                         "if it holds 0–255 pixels, pass image / 255")
    raise ValueError(f"images[{i}] has values down to {low:g}, but the model takes values in [0, 1]: if it is "
                     "already normalized with a mean and std, pass the image before normalizing (the model "
                     "normalizes itself)")


def explain_target(i: int, target: dict[str, Tensor], num_classes: int) -> None:
    """The slow path, taken only when target_flag is set: name the first bad box or label of targets[i]."""
    boxes, labels = target["boxes"], target["labels"]
    sizes = boxes[:, 2:] - boxes[:, :2]  # in the boxes' dtype, as target_flag computed them
    bad = ~((sizes > 0) & (sizes < math.inf)).all(dim=1)
    if bad.any():
        j = int(bad.nonzero()[0])
        box = boxes[j].tolist()
        if not torch.isfinite(boxes[j]).all():
            raise ValueError(f"targets[{i}]['boxes'][{j}] = {box} is not finite: every coordinate must be a number")
        if torch.isinf(sizes[j]).any():
            raise ValueError(f"targets[{i}]['boxes'][{j}] = {box} is too large: its size overflows {boxes.dtype}")
        raise ValueError(f"targets[{i}]['boxes'][{j}] = {box} has no area: every box needs x2 > x1 and y2 > y1")
    for j, label in enumerate(labels.tolist()):
        if not 1 <= label < num_classes:
            raise ValueError(f"targets[{i}]['labels'][{j}] = {label} is outside 1..{num_classes - 1} (0 is "
                             f"background, and the model has {num_classes} classes)")
