"""Data augmentation for (image, target) pairs, done by torchvision.transforms.v2.

v2 transforms move boxes and masks along with the image when they are wrapped as tv_tensors: a
horizontal flip maps a box's x1, x2 to W - x2, W - x1 and mirrors each mask. `DetectionTransform`
wraps our plain tensors before a v2 transform and unwraps them after it, so the dataset and the model
only ever see plain tensors. This is the one module of the package that needs torchvision; it is not
imported by `mrcnn_from_scratch.data`.
"""
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


class DetectionTransform:
    """Apply a v2 transform to an (image, target) pair from `CocoInstances`.

    The image (float [3, H, W]) becomes a `tv_tensors.Image`, target["boxes"] (XYXY [N, 4]) a
    `tv_tensors.BoundingBoxes` and target["masks"] ([N, H, W]) a `tv_tensors.Mask`; v2 passes the other
    fields through untouched. `area` is therefore not updated: right for flips and colour changes, wrong
    for transforms that resize or crop.
    """

    def __init__(self, transform: v2.Transform):
        self.transform = transform

    def __call__(self, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        wrapped = dict(target)
        wrapped["boxes"] = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=tuple(image.shape[-2:]))
        wrapped["masks"] = tv_tensors.Mask(target["masks"])
        image, wrapped = self.transform(tv_tensors.Image(image), wrapped)
        target = {k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for k, v in wrapped.items()}
        return image.as_subclass(torch.Tensor), target

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"


def train_transforms(flip_prob: float = 0.5, photometric: bool = False) -> DetectionTransform:
    """The training augmentation: a random horizontal flip, as in torchvision's Mask R-CNN recipe.

    photometric: also distort brightness, contrast, saturation and hue (and sometimes swap the colour
    channels), each with probability 1/2, as SSD's recipe does. Real photographs vary in lighting and
    camera; synthetic shapes do not, so it is off by default (`train --photometric` turns it on).
    Scale jitter is not done here but by the model's transform: give MaskRCNNConfig.min_size several sizes
    (`--set min_size=(96,112,128)`) and each training image is resized to one of them at random.
    """
    flip = v2.RandomHorizontalFlip(flip_prob)
    return DetectionTransform(v2.Compose([v2.RandomPhotometricDistort(), flip]) if photometric else flip)
