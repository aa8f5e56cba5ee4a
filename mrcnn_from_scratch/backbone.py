"""The bottom-up path: a ResNet that returns C2–C5, the last feature map of each of its 4 stages.

Strides are 4, 8, 16 and 32. The stem's output (C1, stride 2) is not returned: at that resolution
the feature maps would cost the most memory for the least semantic content (the seed's choice too).

Two residual units, as in the paper "Deep Residual Learning" (He et al., 2016):
- BasicBlock (ResNet-18/34): 3×3 → 3×3, with the same width throughout.
- Bottleneck (ResNet-50/101): 1×1 reduce → 3×3 → 1×1 expand by 4. The 3×3 convolution carries the
  stride, as in torchvision's "ResNet v1.5" (the original put it on the first 1×1, which skips 3 of
  every 4 pixels before looking at them).
"""
import torch
from torch import Tensor, nn

# depth -> (block type, blocks per stage)
RESNET_STAGES = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
                 50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with statistics and affine parameters fixed: y = (x - mean) / sqrt(var + eps) · w + b.

    Detection trains with 1–2 images per GPU, far too few for batch statistics, so the ImageNet
    statistics are kept as constants (buffers, not parameters). The layer is then a per-channel affine
    map, y = x · scale + shift. torchvision's COCO checkpoint was made with eps = 0.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[N, C, H, W] -> Tensor[N, C, H, W]."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]

    def extra_repr(self) -> str:
        return f"{len(self.weight)}, eps={self.eps}"


def make_norm(kind: str, channels: int, frozen_bn_eps: float = 1e-5) -> nn.Module:
    """The normalization layer after each convolution: "frozen_bn", "bn" or "gn" (32 groups)."""
    if kind == "frozen_bn":
        return FrozenBatchNorm2d(channels, eps=frozen_bn_eps)
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(min(32, channels), channels)
    raise ValueError(f"norm must be 'frozen_bn', 'bn' or 'gn', got {kind!r}")


def conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    """A bias-free convolution with 'same' padding (the norm that follows has its own bias)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False)


class BasicBlock(nn.Module):
    """relu(x + norm(conv3×3(relu(norm(conv3×3(x)))))), for ResNet-18/34. Output channels = width.

    The blocks add and apply ReLU in place (`+=`, `relu_`): the maps are large, and reusing their memory
    saves time; autograd allows it because no backward step needs these outputs.
    """

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, norm):
        super().__init__()
        self.conv1, self.norm1 = conv(in_channels, width, 3, stride), norm(width)
        self.conv2, self.norm2 = conv(width, width, 3), norm(width)
        self.shortcut = _shortcut(in_channels, width, stride, norm)

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[N, in_channels, H, W] -> Tensor[N, width, H / stride, W / stride]."""
        out = torch.relu_(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        out += self.shortcut(x)
        return torch.relu_(out)


class Bottleneck(nn.Module):
    """1×1 down to `width`, 3×3 (with the stride), 1×1 up to 4·width, plus the shortcut, for ResNet-50/101."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, norm):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1, self.norm1 = conv(in_channels, width, 1), norm(width)
        self.conv2, self.norm2 = conv(width, width, 3, stride), norm(width)
        self.conv3, self.norm3 = conv(width, out_channels, 1), norm(out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm)

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[N, in_channels, H, W] -> Tensor[N, 4·width, H / stride, W / stride]."""
        out = torch.relu_(self.norm1(self.conv1(x)))
        out = torch.relu_(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        out += self.shortcut(x)
        return torch.relu_(out)


def _shortcut(in_channels: int, out_channels: int, stride: int, norm) -> nn.Module:
    """Identity when shapes agree, else a strided 1×1 projection (the paper's option B)."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(conv(in_channels, out_channels, 1, stride), norm(out_channels))


class ResNet(nn.Module):
    """ResNet-18/34/50/101 without its classifier, returning [C2, C3, C4, C5].

    Args:
        depth: 18, 34, 50 or 101.
        norm: "frozen_bn", "bn" or "gn".
        width: channels of the stem and of stage 2's blocks (64 in the paper); each stage doubles it.
        frozen_bn_eps: eps of FrozenBatchNorm2d (1e-5, or 0.0 for torchvision's COCO checkpoint).
        trainable_stages: how many of (C5, C4, C3, C2, stem) train, counted from the top, like
            torchvision's `trainable_layers`: 5 trains everything, 3 freezes the stem and C2 (the
            detection default with an ImageNet-trained backbone), 0 freezes the whole body.
    """

    def __init__(self, depth: int = 50, norm: str = "frozen_bn", width: int = 64, frozen_bn_eps: float = 1e-5,
                 trainable_stages: int = 5):
        super().__init__()
        if depth not in RESNET_STAGES:
            raise ValueError(f"depth must be one of {sorted(RESNET_STAGES)}, got {depth}")
        block_kind, blocks_per_stage = RESNET_STAGES[depth]
        block = BasicBlock if block_kind == "basic" else Bottleneck

        def norm_layer(channels):
            return make_norm(norm, channels, frozen_bn_eps)

        # Stem: 7×7 stride-2 convolution, then 3×3 stride-2 max pooling: stride 4 before stage 2.
        self.stem = nn.Sequential(conv(3, width, 7, stride=2), norm_layer(width), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.stages = nn.ModuleList()
        self.out_channels = []  # channels of C2..C5
        in_channels = width
        for i, num_blocks in enumerate(blocks_per_stage):
            stage_width, stride = width * 2**i, 1 if i == 0 else 2
            blocks = []
            for j in range(num_blocks):
                blocks.append(block(in_channels, stage_width, stride if j == 0 else 1, norm_layer))
                in_channels = stage_width * block.expansion
            self.stages.append(nn.Sequential(*blocks))
            self.out_channels.append(in_channels)
        self._init_weights()
        self.freeze(trainable_stages)

    def forward(self, images: Tensor) -> list[Tensor]:
        """images: Tensor[N, 3, H, W] -> [C2, C3, C4, C5], C_k of shape [N, out_channels[k-2], H/2^k, W/2^k]
        (sizes rounded up)."""
        x = self.stem(images)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def freeze(self, trainable_stages: int) -> None:
        """Stop gradients in all but the top `trainable_stages` of (C5, C4, C3, C2, stem)."""
        if not 0 <= trainable_stages <= 5:
            raise ValueError(f"trainable_stages must be in [0, 5], got {trainable_stages}")
        bottom_up = [self.stem, *self.stages]  # stem, C2, C3, C4, C5
        for i, part in enumerate(bottom_up):
            trainable = i >= 5 - trainable_stages
            for parameter in part.parameters():
                parameter.requires_grad_(trainable)

    def _init_weights(self) -> None:
        # He initialization for ReLU networks, as torchvision's ResNet does; norms start as identity.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
