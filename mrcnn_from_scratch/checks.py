"""Input validation for the model: fail early, with the image and box at fault, never silently."""
import torch
from torch import Tensor


def check_images(images: list[Tensor]) -> None:
    """Every image must be a float Tensor[3, H, W] (values in [0, 1])."""
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
        if image.dim() != 3 or image.shape[0] != 3 or image.shape[1] == 0 or image.shape[2] == 0:
            raise ValueError(f"images[{i}] must have shape [3, H, W], got {list(image.shape)}")


def check_targets(images: list[Tensor], targets: list[dict[str, Tensor]], num_classes: int) -> None:
    """Training targets: boxes [G, 4] with x2 > x1 and y2 > y1, labels [G] in 1..num_classes-1,
    masks [G, H, W] of the image's size."""
    if len(targets) != len(images):
        raise ValueError(f"{len(images)} images but {len(targets)} targets")
    for i, (image, target) in enumerate(zip(images, targets)):
        for key in ("boxes", "labels", "masks"):
            if key not in target:
                raise ValueError(f"targets[{i}] has no '{key}' (it has {sorted(target)})")
        boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
        if not boxes.is_floating_point() or boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(f"targets[{i}]['boxes'] must be a float Tensor[G, 4], got {boxes.dtype} {list(boxes.shape)}")
        degenerate = torch.where((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))[0]
        if len(degenerate):
            j = int(degenerate[0])
            raise ValueError(f"targets[{i}]['boxes'][{j}] = {boxes[j].tolist()} has no area: every box needs "
                             "x2 > x1 and y2 > y1")
        if labels.dtype != torch.int64 or labels.shape != (len(boxes),):
            raise ValueError(f"targets[{i}]['labels'] must be an int64 Tensor[{len(boxes)}] (one per box), "
                             f"got {labels.dtype} {list(labels.shape)}")
        bad = torch.where((labels < 1) | (labels >= num_classes))[0]
        if len(bad):
            raise ValueError(f"targets[{i}]['labels'][{int(bad[0])}] = {int(labels[bad[0]])} is outside "
                             f"1..{num_classes - 1} (0 is background, and the model has {num_classes} classes)")
        if masks.dim() != 3 or len(masks) != len(boxes):
            raise ValueError(f"targets[{i}]['masks'] must be Tensor[{len(boxes)}, H, W] (one per box), "
                             f"got {list(masks.shape)}")
        if tuple(masks.shape[-2:]) != tuple(image.shape[-2:]):
            raise ValueError(f"targets[{i}]['masks'] are {list(masks.shape[-2:])} but image {i} is "
                             f"{list(image.shape[-2:])}")
