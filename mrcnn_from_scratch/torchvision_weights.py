"""Load torchvision's weights into our modules: the two models name the same tensors differently.

torchvision's names follow its code (`layer1`, `bn1`, `downsample`, `inner_blocks`); ours follow the
paper (`stages`, `norm1`, `shortcut`, `lateral_convs`). Renaming is the only conversion: the tensors
themselves have the same shapes and meanings, which the equivalence tests prove.
"""
import re

from torch import Tensor, nn

from .backbone import FrozenBatchNorm2d

# (pattern, replacement), applied in order to each key of torchvision's Mask R-CNN state dict.
_RENAMES = [
    (r"^backbone\.body\.conv1\.", "backbone.body.stem.0."),
    (r"^backbone\.body\.bn1\.", "backbone.body.stem.1."),
    (r"^backbone\.body\.layer(\d)\.", lambda m: f"backbone.body.stages.{int(m[1]) - 1}."),
    (r"^(backbone\.body\..*)\.bn(\d)\.", r"\1.norm\2."),
    (r"^(backbone\.body\..*)\.downsample\.", r"\1.shortcut."),
    # Checkpoints from before torchvision 0.13 lack the ".0" that Conv2dNormActivation adds.
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.(0\.)?", r"backbone.fpn.lateral_convs.\1."),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.(0\.)?", r"backbone.fpn.output_convs.\1."),
    (r"^rpn\.head\.conv\.0\.0\.", "rpn.head.conv."),
    (r"^roi_heads\.mask_head\.(\d+)\.0\.", r"roi_heads.mask_head.convs.\1."),
    (r"^roi_heads\.mask_head\.mask_fcn(\d+)\.", lambda m: f"roi_heads.mask_head.convs.{int(m[1]) - 1}."),
    (r"^roi_heads\.mask_predictor\.conv5_mask\.", "roi_heads.mask_predictor.upsample."),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.", "roi_heads.mask_predictor.logits."),
]


def rename_torchvision_key(key: str) -> str:
    """One key of torchvision's `maskrcnn_resnet50_fpn` state dict (new or old names) -> ours."""
    for pattern, replacement in _RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def rename_backbone_key(key: str) -> str:
    """One torchvision backbone key (`body.*` or `fpn.*`) -> our name for the same tensor."""
    return rename_torchvision_key("backbone." + key)[len("backbone.") :]


def load_torchvision_backbone(module: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Load a torchvision backbone state dict into ours, strictly.

    Args:
        module: our `BackboneWithFPN` (for `maskrcnn_resnet50_fpn(...).backbone.state_dict()`), or our
            `ResNet` (for `torchvision.models.resnetXX().state_dict()`; its classifier `fc` is dropped).
        state_dict: torchvision's tensors under torchvision's names.
    """
    if any(key.startswith("body.") for key in state_dict):
        renamed = {rename_backbone_key(key): value for key, value in state_dict.items()}
    else:  # a classification ResNet: the same names without "body.", plus the classifier
        renamed = {
            rename_backbone_key("body." + key)[len("body.") :]: value
            for key, value in state_dict.items()
            if not key.startswith("fc.")
        }
    load_strict(module, renamed)


def load_strict(module: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """`module.load_state_dict(state_dict)` that names every missing and unexpected key when it fails.

    BatchNorm's `num_batches_tracked` counter is dropped where our module has no such buffer
    (FrozenBatchNorm2d, GroupNorm): it only counts training steps and affects no output.
    """
    own = module.state_dict()
    state_dict = {k: v for k, v in state_dict.items() if k in own or not k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise KeyError(
            f"state dict does not fit {type(module).__name__}: "
            f"{len(missing)} missing keys {missing[:20]}, {len(unexpected)} unexpected keys {unexpected[:20]}"
        )
    module.load_state_dict(state_dict)


def load_torchvision_weights(model: nn.Module, state_dict: dict[str, Tensor], frozen_bn_eps: float | None = None) -> None:
    """Load a torchvision `maskrcnn_resnet50_fpn` (v1) state dict into our MaskRCNN, strictly.

    Args:
        model: our `MaskRCNN`, built with the same num_classes as the checkpoint.
        state_dict: e.g. `torch.load("maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth")`; old key names
            (`mask_fcn1`, `fpn.inner_blocks.0.weight`) are accepted too.
        frozen_bn_eps: if given, set the eps of every FrozenBatchNorm2d; torchvision's COCO checkpoint
            was trained with 0.0, and the default 1e-5 changes its outputs slightly.
    """
    renamed = {rename_torchvision_key(key): value for key, value in state_dict.items()}
    own = model.state_dict()
    for key, value in renamed.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(f"{key}: the checkpoint has shape {list(value.shape)}, the model {list(own[key].shape)}"
                             " (is num_classes the same as the checkpoint's?)")
    load_strict(model, renamed)
    if frozen_bn_eps is not None:
        for module in model.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.eps = frozen_bn_eps
