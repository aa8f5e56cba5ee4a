"""Shared test inputs: feature maps and boxes that cover the cases RoI ops get wrong."""
import pytest
import torch


def random_boxes(gen: torch.Generator, count: int, height: float, width: float, dtype=torch.float64):
    """Tensor[count, 4] of boxes inside an image of height × width, sizes from sub-pixel to most of it."""
    centre = torch.rand(count, 2, generator=gen, dtype=dtype) * torch.tensor([width, height], dtype=dtype)
    size = torch.rand(count, 2, generator=gen, dtype=dtype) ** 2 * torch.tensor([width, height], dtype=dtype)
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def awkward_boxes(height: float, width: float, dtype=torch.float64):
    """Hand-picked boxes for an image of height × width: each row names a known pitfall."""
    h, w = height, width
    return torch.tensor(
        [
            [0.0, 0.0, w, h],  # the whole image
            [-0.3 * w, -0.2 * h, 0.4 * w, 0.5 * h],  # partly outside, top left
            [0.6 * w, 0.7 * h, 1.3 * w, 1.5 * h],  # partly outside, bottom right
            [1.2 * w, 1.1 * h, 1.5 * w, 1.4 * h],  # wholly outside, bottom right
            [-0.9 * w, -0.8 * h, -0.5 * w, -0.4 * h],  # wholly outside, top left
            [0.3 * w, 0.3 * h, 0.3 * w, 0.3 * h],  # zero size
            [0.25 * w, 0.5 * h, 0.25 * w, 0.75 * h],  # zero width
            [0.41 * w, 0.52 * h, 0.41 * w + 0.3, 0.52 * h + 0.2],  # sub-pixel
            [0.1 * w, 0.2 * h, 0.9 * w, 0.3 * h],  # long and thin
            [w - 1.0, h - 1.0, w, h],  # last pixel
        ],
        dtype=dtype,
    )


def make_rois(seed: int, n_images: int, image_size: tuple[float, float], per_image: int, dtype=torch.float64):
    """Tensor[K, 5] of (batch index, x1, y1, x2, y2): random boxes plus the awkward ones, for every image."""
    gen = torch.Generator().manual_seed(seed)
    height, width = image_size
    rois = []
    for b in range(n_images):
        boxes = torch.cat([random_boxes(gen, per_image, height, width, dtype), awkward_boxes(height, width, dtype)])
        rois.append(torch.cat([torch.full((len(boxes), 1), float(b), dtype=dtype), boxes], dim=1))
    return torch.cat(rois)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
