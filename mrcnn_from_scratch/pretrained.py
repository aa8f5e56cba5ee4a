"""Starting from trained weights instead of random ones: transfer learning.

Three kinds of file can start a model:
- one of our checkpoints (RUN/last.pt): the whole model, with the config it was built from;
- torchvision's `maskrcnn_resnet50_fpn` state dict, such as the COCO weights
  `maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth`: the whole model, ResNet-50-FPN with torchvision's defaults;
- torchvision's ImageNet classifier, `resnet18/34/50/101-*.pth`: the ResNet body only.

Almost every tensor of a detector describes images in general (edges, textures, parts, "objectness"),
and carries over to new classes. Only three layers are tied to the class list, since they have one row
per class: the box head's `cls_score` [K, 1024] and `bbox_pred` [4K, 1024], and the mask head's
per-class `logits` [K, 256, 1, 1]. When the new dataset has another number of classes K, those three
are re-made at random (as a new model has them) and everything else is loaded.
"""
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .backbone import RESNET_STAGES
from .config import MaskRCNNConfig
from .torchvision_weights import load_strict, load_torchvision_backbone, rename_torchvision_key

CLASS_SPECIFIC_PREFIXES = ("roi_heads.box_predictor.cls_score.", "roi_heads.box_predictor.bbox_pred.",
                           "roi_heads.mask_predictor.logits.")


@dataclass
class LoadReport:
    """What `load_pretrained` did: the tensors it loaded and those it left at their fresh initialization."""

    source: str
    loaded: list[str]
    reinitialized: list[str]
    reason: str = ""

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        if self.reinitialized:
            lines.append(f"re-initialized {len(self.reinitialized)} class-specific tensors "
                         f"({', '.join(self.reinitialized)}): {self.reason}")
        return "\n".join(lines)


def load_file(path: str | Path):
    """What a weights file holds, on the CPU, read with the safe loader (a weights file runs no code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors differ by version; all mean "not a weights file"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""  # torch's run to pages
        raise ValueError(f"{path}: not a PyTorch weights file ({type(error).__name__}: {first_line})") from None


def read_weights(path: str | Path) -> tuple[dict[str, Tensor], MaskRCNNConfig | None]:
    """A whole-model weights file as (state dict under our names, the config it was trained with or None).

    Our checkpoints carry their config; torchvision's files are bare state dicts.
    """
    content = load_file(path)
    if isinstance(content, dict) and "model" in content and "config" in content:
        return content["model"], MaskRCNNConfig(**content["config"])
    if isinstance(content, dict) and all(isinstance(value, Tensor) for value in content.values()):
        return {rename_torchvision_key(key): value for key, value in content.items()}, None
    raise ValueError(f"{path}: neither a checkpoint of ours (RUN/last.pt) nor a state dict of tensors")


def pretrained_config(path: str | Path, class_names: tuple[str, ...]) -> MaskRCNNConfig:
    """The architecture a weights file was trained with, for a dataset with `class_names` (labels 1..K-1).

    torchvision's COCO file is ResNet-50-FPN with torchvision's defaults; its frozen BatchNorm was trained
    with eps = 0.
    """
    state_dict, config = read_weights(path)
    if config is None:
        if not any(key.startswith("roi_heads.") for key in state_dict):
            raise ValueError(f"{path}: holds no detection heads; is it an ImageNet ResNet? Pass it as "
                             "--backbone-weights (load_backbone_weights), not --init")
        config = MaskRCNNConfig(frozen_bn_eps=0.0)
    return config.replace(num_classes=len(class_names) + 1, class_names=tuple(class_names))


def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Load a whole-model weights file (ours or torchvision's) into `model`, re-making the class layers
    if the number of classes differs. Every other tensor must fit exactly, else an error names it."""
    state_dict, _ = read_weights(path)
    own = model.state_dict()
    reinitialized = []
    for key, value in state_dict.items():
        if key in own and own[key].shape != value.shape:
            if not key.startswith(CLASS_SPECIFIC_PREFIXES):
                raise ValueError(f"{path}: {key} has shape {list(value.shape)} but the model's is "
                                 f"{list(own[key].shape)}: the file holds another architecture")
            reinitialized.append(key)
    kept = {key: own[key] if key in reinitialized else value for key, value in state_dict.items()}
    load_strict(model, kept)
    classes_in_file = state_dict["roi_heads.box_predictor.cls_score.weight"].shape[0]
    reason = (f"the file has {classes_in_file} classes (with the background), the model "
              f"{own['roi_heads.box_predictor.cls_score.weight'].shape[0]}") if reinitialized else ""
    loaded = [key for key in kept if key not in reinitialized]
    return LoadReport(str(path), loaded, reinitialized, reason)


def resnet_depth(state_dict: dict[str, Tensor]) -> int:
    """The depth of a torchvision ResNet state dict, from its blocks per stage and its block kind."""
    blocks = tuple(len({key.split(".")[1] for key in state_dict if key.startswith(f"layer{i}.")}) for i in range(1, 5))
    kind = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    for depth, (block_kind, blocks_per_stage) in RESNET_STAGES.items():
        if (block_kind, tuple(blocks_per_stage)) == (kind, blocks):
            return depth
    raise ValueError(f"not a ResNet-18/34/50/101 state dict: {kind} blocks per stage {blocks}")


def load_backbone_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """Load torchvision's ImageNet ResNet weights (`resnet50-*.pth`, ...) into the model's ResNet body.

    The FPN, RPN and heads keep their fresh initialization. The classifier `fc` is not used.
    """
    state_dict = load_file(path)
    if not isinstance(state_dict, dict) or "conv1.weight" not in state_dict:
        raise ValueError(f"{path}: not a torchvision ResNet state dict (it has no conv1.weight)")
    config = model.config
    depth, width = resnet_depth(state_dict), state_dict["conv1.weight"].shape[0]
    if (depth, width) != (config.depth, config.width):
        raise ValueError(f"{path} is a ResNet-{depth} of width {width}, the model a ResNet-{config.depth} of "
                         f"width {config.width}: --set depth={depth} width={width}")
    if config.norm == "gn":
        raise ValueError(f"{path} holds BatchNorm statistics, which GroupNorm cannot use: "
                         "--set norm=frozen_bn (or bn)")
    load_torchvision_backbone(model.backbone.body, state_dict)
    loaded = [f"backbone.body.{key}" for key in model.backbone.body.state_dict()]
    return LoadReport(str(path), loaded, [])
