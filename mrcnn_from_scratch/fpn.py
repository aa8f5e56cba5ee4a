"""Feature Pyramid Network (Lin et al., 2017): strong semantics at every scale.

The bottom-up path (the ResNet) gives C2–C5: fine but shallow at the bottom, coarse but deep at the
top. The FPN adds two paths:
- lateral: a 1×1 convolution takes each C_k to `out_channels` (256), with no activation;
- top-down: starting from C5, each merged map is upsampled ×2 by nearest neighbour (no parameters, not
  a deconvolution) and added to the next lateral map down.
A 3×3 convolution on each merged map then gives P_k; it smooths the blocky artefacts (aliasing) that
nearest-neighbour upsampling leaves. P6 is P5 subsampled with stride 2: it exists only so that the
RPN can place 512-pixel anchors; the box and mask heads pool from P2–P5 only.
"""
from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn


class FeaturePyramidNetwork(nn.Module):
    """Turn [C2, ..., C5] into P2–P6, keyed as torchvision's FPN: '0'–'3' for P2–P5 and 'pool' for P6.

    Args:
        in_channels: channels of C2, ..., C5.
        out_channels: channels of every P_k (256 in the paper).
    """

    def __init__(self, in_channels: list[int], out_channels: int = 256):
        super().__init__()
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output_convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        self.out_channels = out_channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # Kaiming-uniform with a = 1 (gain 1, no ReLU follows), as torchvision initializes its FPN.
                nn.init.kaiming_uniform_(module.weight, a=1)
                nn.init.zeros_(module.bias)

    def forward(self, features: list[Tensor]) -> "OrderedDict[str, Tensor]":
        """features: [C2, ..., C5], C_k: Tensor[N, in_channels[k-2], H_k, W_k].

        Returns:
            OrderedDict '0'..'3' -> P2..P5, each Tensor[N, out_channels, H_k, W_k], and 'pool' -> P6,
            Tensor[N, out_channels, ceil(H_5 / 2), ceil(W_5 / 2)].
        """
        merged = self.lateral_convs[-1](features[-1])
        pyramid = [self.output_convs[-1](merged)]
        for k in range(len(features) - 2, -1, -1):
            lateral = self.lateral_convs[k](features[k])
            # Upsample to the lateral map's exact size: odd sizes make it not always exactly ×2.
            merged = lateral + F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
            pyramid.insert(0, self.output_convs[k](merged))
        # P6: "max pooling" with a 1×1 kernel and stride 2 is plain subsampling.
        pyramid.append(F.max_pool2d(pyramid[-1], kernel_size=1, stride=2))
        names = [str(k) for k in range(len(features))] + ["pool"]
        return OrderedDict(zip(names, pyramid))


class BackboneWithFPN(nn.Module):
    """The ResNet body followed by the FPN: images in, the feature pyramid out.

    Args:
        body: a module mapping Tensor[N, 3, H, W] to [C2, ..., C5], with `out_channels` listing their channels.
        out_channels: channels of the pyramid.
    """

    def __init__(self, body: nn.Module, out_channels: int = 256):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.out_channels, out_channels)
        self.out_channels = out_channels

    def forward(self, images: Tensor) -> "OrderedDict[str, Tensor]":
        """images: Tensor[N, 3, H, W] -> OrderedDict of P2..P6 (see FeaturePyramidNetwork.forward)."""
        return self.fpn(self.body(images))
