"""Load torchvision's weights into our modules: the two models name the same tensors differently.

torchvision's names follow its code (`layer1`, `bn1`, `downsample`, `inner_blocks`); ours follow the
paper (`stages`, `norm1`, `shortcut`, `lateral_convs`). Renaming is the only conversion: the tensors
themselves have the same shapes and meanings, which the equivalence tests prove.
"""
import re

from torch import Tensor, nn

# (pattern, replacement), applied in order to each torchvision key relative to the backbone module.
_BACKBONE_RENAMES = [
    (r"^body\.conv1\.", "body.stem.0."),
    (r"^body\.bn1\.", "body.stem.1."),
    (r"^body\.layer(\d)\.", lambda m: f"body.stages.{int(m[1]) - 1}."),
    (r"\.bn(\d)\.", r".norm\1."),
    (r"\.downsample\.", ".shortcut."),
    # FPN convolutions; checkpoints before torchvision 0.13 lack the ".0" of Conv2dNormActivation.
    (r"^fpn\.inner_blocks\.(\d+)\.(0\.)?", r"fpn.lateral_convs.\1."),
    (r"^fpn\.layer_blocks\.(\d+)\.(0\.)?", r"fpn.output_convs.\1."),
]


def rename_backbone_key(key: str) -> str:
    """One torchvision backbone key (`body.*` or `fpn.*`) -> our name for the same tensor."""
    for pattern, replacement in _BACKBONE_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


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
