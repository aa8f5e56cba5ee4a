"""Anchors: the reference boxes that the RPN scores and regresses, a few at every feature-map cell.

On an FPN each level gets one anchor size, growing with the level's stride: 32 pixels on P2 (stride
4) up to 512 on P6 (stride 64), always 8 strides wide. A cell of a coarse map "sees" a large patch of
the image, so it proposes large objects; small objects are left to the fine maps. Each size comes in
three aspect ratios (height / width = 0.5, 1, 2) of equal area.
"""
import torch
from torch import Tensor, nn


class AnchorGenerator(nn.Module):
    """Anchors for every cell of every feature map, the same for every image of a batch.

    Args:
        sizes: anchor sizes (sqrt of area, in pixels) per feature map, e.g. ((32,), (64,), ..., (512,)).
        aspect_ratios: height / width per feature map, e.g. ((0.5, 1.0, 2.0),) * 5.
    """

    def __init__(self, sizes: tuple[tuple[int, ...], ...], aspect_ratios: tuple[tuple[float, ...], ...]):
        super().__init__()
        if len(sizes) != len(aspect_ratios):
            raise ValueError(f"one tuple of sizes and one of aspect ratios per level: {len(sizes)} vs {len(aspect_ratios)}")
        self.sizes, self.aspect_ratios = sizes, aspect_ratios
        # Buffers, so that they move with the model to its device once, not once per call.
        for level, (s, r) in enumerate(zip(sizes, aspect_ratios)):
            self.register_buffer(f"cell_anchors_{level}", cell_anchors(s, r), persistent=False)

    @property
    def cell_anchors(self) -> list[Tensor]:
        """The anchors of the cell at the origin, per level: Tensor[A_l, 4] each."""
        return [getattr(self, f"cell_anchors_{level}") for level in range(len(self.sizes))]

    def num_anchors_per_location(self) -> list[int]:
        """A: how many anchors sit on each cell of each level."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def forward(self, image_size: tuple[int, int], feature_maps: list[Tensor]) -> Tensor:
        """Anchors in (x1, y1, x2, y2) image pixels for a padded batch.

        Args:
            image_size: (H, W) of the padded batch tensor.
            feature_maps: Tensor[N, C, H_l, W_l] per level.

        Returns:
            Tensor[sum_l H_l·W_l·A_l, 4], level after level, and within a level ordered by
            (row, column, anchor), the order in which the RPN head's outputs are flattened.
        """
        if len(feature_maps) != len(self.cell_anchors):
            raise ValueError(f"{len(self.cell_anchors)} anchor levels but {len(feature_maps)} feature maps")
        anchors = []
        for features, base in zip(feature_maps, self.cell_anchors):
            height, width = features.shape[-2:]
            # The stride is how many image pixels one cell spans: 4 for P2 of a padded batch.
            stride_y, stride_x = image_size[0] // height, image_size[1] // width
            device = features.device
            shift_y = torch.arange(height, device=device) * stride_y
            shift_x = torch.arange(width, device=device) * stride_x
            shift_y, shift_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
            shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1).reshape(-1, 1, 4)
            base = base.to(features.dtype)
            anchors.append((shifts + base[None]).reshape(-1, 4))
        return torch.cat(anchors)


def cell_anchors(sizes: tuple[int, ...], aspect_ratios: tuple[float, ...]) -> Tensor:
    """The anchors of the cell at the origin, centred on (0, 0): Tensor[len(ratios)·len(sizes), 4].

    For ratio r = h / w and size s: h = s·sqrt(r), w = s / sqrt(r), so h·w = s². Corners are rounded to
    whole pixels, as Detectron and torchvision do. Ordered ratio-major: all sizes of ratio 0, then ratio 1...
    """
    sizes_t = torch.as_tensor(sizes, dtype=torch.float32)
    height_factor = torch.sqrt(torch.as_tensor(aspect_ratios, dtype=torch.float32))
    width_factor = 1 / height_factor
    widths = (width_factor[:, None] * sizes_t[None, :]).reshape(-1)
    heights = (height_factor[:, None] * sizes_t[None, :]).reshape(-1)
    return (torch.stack([-widths, -heights, widths, heights], dim=1) / 2).round()
