"""Non-maximum suppression: keep the best-scoring box, drop every box that overlaps it too much, repeat."""
from contextlib import contextmanager

import torch
from torch import Tensor

from .boxes import box_iou


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, block_size: int = 32) -> Tensor:
    """Greedy NMS.

    Args:
        boxes: Tensor[N, 4] in (x1, y1, x2, y2).
        scores: Tensor[N].
        iou_threshold: a box is dropped if its IoU with a kept, higher-scoring box is > this.
        block_size: how many boxes are settled together; it changes the speed, never the result.

    Returns:
        Tensor[M] (int64): indices of the kept boxes, in decreasing order of score. Equal scores keep
        their input order.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [N, 4], got {list(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"scores must be [N] for {len(boxes)} boxes, got {list(scores.shape)}")
    order = torch.sort(scores, descending=True, stable=True).indices
    kept = []
    with _one_cpu_thread(boxes.device):
        # Walk down the boxes in score order a block at a time: settle the block, then drop every later
        # box that a kept box of the block overlaps. `order` only ever holds boxes still in the running.
        while len(order) > 0:
            block, rest = order[:block_size], order[block_size:]
            overlaps = box_iou(boxes[block], boxes[order]) > iou_threshold
            in_block = _greedy_in_block(torch.triu(overlaps[:, : len(block)], diagonal=1))
            kept.append(block[in_block])
            suppressed = (overlaps[:, len(block) :] & in_block[:, None]).any(dim=0)
            order = rest[~suppressed]
    return torch.cat(kept) if kept else order


@contextmanager
def _one_cpu_thread(device: torch.device):
    """Run the block loop's many small operations on one CPU thread.

    Each operation is too small to gain from a second thread, and when another program keeps the
    other core busy, every multi-threaded operation waits for a thread that is not running: measured
    here, that made NMS on 4000 boxes take 10 s instead of 75 ms.
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _greedy_in_block(overlaps: Tensor) -> Tensor:
    """Run greedy NMS inside one block of boxes sorted by score.

    Args:
        overlaps: Tensor[B, B] bool, upper triangular: box i would suppress the later box j.

    Returns:
        Tensor[B] bool, the boxes greedy NMS keeps.

    Greedy keeps box j iff no kept box before it overlaps it. That rule refers only to earlier boxes,
    so it has exactly one solution, and repeating "keep what no kept box overlaps" reaches it: after
    t rounds the first t boxes are settled. It usually takes a handful of rounds.
    """
    kept = torch.ones(len(overlaps), dtype=torch.bool, device=overlaps.device)
    while True:
        updated = ~(overlaps & kept[:, None]).any(dim=0)
        if torch.equal(updated, kept):
            return kept
        kept = updated


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category independently: boxes of different `idxs` never suppress each other.

    Args:
        boxes: Tensor[N, 4] in (x1, y1, x2, y2); scores: Tensor[N];
        idxs: Tensor[N] (int), the category (or image, or FPN level) of each box.
        iou_threshold: as for `nms`.

    Returns:
        Tensor[M] (int64): indices of the kept boxes, in decreasing order of score.
    """
    if len(boxes) == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    # Few boxes: one NMS call after shifting each category to its own far-away patch of the plane,
    # so boxes of different categories cannot overlap. Many boxes: the shifted problem would compare
    # every pair across categories, so run one NMS per category instead. (torchvision switches at
    # the same size.)
    if len(boxes) <= 1000:
        offsets = idxs.to(boxes) * (boxes.max() + 1)
        return nms(boxes + offsets[:, None], scores, iou_threshold)
    keep = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    for category in torch.unique(idxs):
        members = torch.where(idxs == category)[0]
        keep[members[nms(boxes[members], scores[members], iou_threshold)]] = True
    kept = torch.where(keep)[0]
    # torch.sort's default (unstable) order for tied scores, exactly as torchvision orders them.
    return kept[torch.sort(scores[kept], descending=True).indices]
