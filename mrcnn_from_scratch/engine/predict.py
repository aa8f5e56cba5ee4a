"""The `predict` command: run a trained model on image files and draw what it finds.

    python -m mrcnn_from_scratch predict --checkpoint RUN/last.pt IMAGE... --out DIR [--score-thresh 0.5]
    python -m mrcnn_from_scratch predict --torchvision-weights FILE IMAGE... --out DIR

writes DIR/<image name>.png for each image (<image name>_2.png, ... when names repeat or the picture
would replace an input image). The second form runs torchvision's COCO-trained weights
(maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth), downloaded by the user, in our model.
"""
from pathlib import Path

import torch

from ..coco_names import COCO_CATEGORY_NAMES
from ..data.images import load_image as read_image  # one place decodes images; notebooks import it from here
from ..model import MaskRCNN, maskrcnn_resnet50_fpn
from ..pretrained import load_file
from ..torchvision_weights import load_torchvision_weights
from ..visualize import save_detections
from .checkpoint import model_from_checkpoint
from .distributed import pick_device
from .errors import UsageError
from .outputs import check_output_folder, picture_paths


def model_from_torchvision_weights(path: str | Path, device: torch.device | str = "cpu") -> MaskRCNN:
    """Our ResNet-50-FPN Mask R-CNN holding torchvision's COCO weights (91 labels, COCO's names), in
    eval mode. That checkpoint was trained with FrozenBatchNorm's eps at 0.0, not the default 1e-5."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"torchvision weights not found: {path}")
    model = maskrcnn_resnet50_fpn(num_classes=len(COCO_CATEGORY_NAMES), class_names=COCO_CATEGORY_NAMES[1:])
    try:
        load_torchvision_weights(model, load_file(path), frozen_bn_eps=0.0)
    except (ValueError, KeyError) as error:  # not a weights file, or not this model's
        message = error.args[0] if error.args else error  # (a KeyError's str() adds quotes)
        raise UsageError(f"--torchvision-weights {path}: {message}"[:400]) from None
    return model.to(device).eval()


@torch.no_grad()
def predict_images(images: list[str | Path], out: str | Path, checkpoint: str | Path | None = None,
                   torchvision_weights: str | Path | None = None, score_thresh: float = 0.5,
                   device: str = "auto") -> list[Path]:
    """Draw the detections of the model in `checkpoint` (or `torchvision_weights`) on each image.

    Returns the PNGs written, one per image, named after it, in `out`.
    """
    if (checkpoint is None) == (torchvision_weights is None):
        raise UsageError("give either a checkpoint or torchvision weights")
    check_output_folder(Path(out))  # before the model is loaded
    torch_device = pick_device(device)
    if checkpoint is not None:
        model = model_from_checkpoint(checkpoint, torch_device)
    else:
        model = model_from_torchvision_weights(torchvision_weights, torch_device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for image_path, png in zip(images, picture_paths(images, out)):
        image = read_image(image_path)
        detection = {k: v.cpu() for k, v in model([image.to(torch_device)])[0].items()}
        drawn = save_detections(png, image, detection, model.config.class_names, score_thresh)
        print(f"{image_path}: {drawn} detections with score >= {score_thresh} -> {png}")
        written.append(png)
    return written
