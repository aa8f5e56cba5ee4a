"""Pictures of detections: each instance's mask as a see-through colour, its box, class name and score.

`draw_detections` draws on any matplotlib Axes (a notebook's, for instance); `save_detections` writes
one PNG through matplotlib's object interface, with no display and no change to pyplot's backend.
"""
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

MASK_ALPHA = 0.45


def label_name(label: int, class_names: tuple[str, ...]) -> str:
    """class_names holds the names of labels 1..K (0 is the background)."""
    return class_names[label - 1] if 1 <= label <= len(class_names) else f"class {label}"


def draw_detections(ax: Axes, image: torch.Tensor, detection: dict[str, torch.Tensor], class_names: tuple[str, ...],
                    score_thresh: float = 0.5, mask_thresh: float = 0.5) -> int:
    """Draw `image` and the detections scoring at least `score_thresh` on `ax`.

    Args:
        image: float [3, H, W] in [0, 1].
        detection: the model's output for it: boxes [D, 4], labels [D], scores [D], masks [D, 1, H, W].
        class_names: names of labels 1..K.

    Returns the number of detections drawn. Each gets its own colour; where masks overlap, the one drawn
    later (lower score) is on top.
    """
    # Nearest-neighbour display: a 128-pixel image shown large stays sharp, pixel for pixel.
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy(), interpolation="nearest")
    keep = detection["scores"] >= score_thresh
    boxes, labels, scores = (detection[key][keep].tolist() for key in ("boxes", "labels", "scores"))
    masks = (detection["masks"][keep, 0] > mask_thresh).cpu().numpy()
    palette = colormaps["tab10"]
    overlay = np.zeros((*image.shape[-2:], 4))  # RGBA, transparent where no mask
    for i, ((x1, y1, x2, y2), label, score, mask) in enumerate(zip(boxes, labels, scores, masks)):
        colour = palette(i % palette.N)[:3]
        overlay[mask] = (*colour, MASK_ALPHA)
        # imshow puts pixel j's centre at j, so its left edge, where a box's x1 = j lies, is at j - 0.5.
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.5))
        ax.text(x1 - 0.5, y1 - 0.5, f"{label_name(label, class_names)} {score:.2f}", color="white", fontsize=8, va="bottom",
                bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "edgecolor": "none"})
    ax.imshow(overlay, interpolation="nearest")
    ax.set_axis_off()
    return len(boxes)


def save_detections(path: str | Path, image: torch.Tensor, detection: dict[str, torch.Tensor],
                    class_names: tuple[str, ...], score_thresh: float = 0.5, size_inches: float = 6.0) -> int:
    """Draw as `draw_detections` does into a PNG at `path`, the image's long side `size_inches` wide
    (small images are enlarged so that the labels stay readable). Returns the number drawn."""
    height, width = image.shape[-2:]
    scale = size_inches / max(height, width)
    figure = Figure(figsize=(width * scale, height * scale))
    ax = figure.add_axes((0, 0, 1, 1))
    drawn = draw_detections(ax, image, detection, class_names, score_thresh)
    figure.savefig(path, dpi=100)
    return drawn
