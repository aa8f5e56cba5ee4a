"""Non-maximum suppression: keep the best-scoring box, drop every box that overlaps it too much, repeat.

Written for a GPU, where every operation is a kernel launch and every value read back to the host
makes the host wait for the GPU. The loop of chapter 01 does both once per box. Here:
1. the IoUs of all pairs, thresholded, are the "overlap graph": an edge i -> j when box i scores
   higher than box j and overlaps it above the threshold; one `nonzero` turns it into an edge list;
2. the greedy rule, "keep j iff no kept box before it overlaps it", refers only to earlier boxes, so
   it has exactly one solution, and repeating "keep what no kept box overlaps" over the whole graph
   reaches it: after t rounds every box whose chain of higher-scoring overlaps is shorter than t is
   settled. A round is a handful of operations on the edge list, whatever the number of boxes;
3. the host checks for convergence after 8 rounds, then 16 more, 32 more, ...: one or two reads per
   call, where a check every round would cost one read per round.

At the threshold. "Overlaps above the threshold" means torchvision's CPU kernel, on every device:
`if (ovr > iou_threshold)` in torchvision/csrc/ops/cpu/nms_kernel.cpp, where `ovr` is the IoU in the
boxes' dtype and `iou_threshold` a C++ double, so a float32 IoU is widened and compared in float64. A
float32 tensor compared with a Python float is compared in float32 instead: the threshold is rounded to
the nearest float32 first, and 0.3, 0.4, 0.6 and 0.8 round up. Two integer boxes whose IoU is exactly
3/10 (areas 10 and 3, one inside the other) have a float32 IoU of 0.30000001, above 0.3 in float64 but
equal to float32(0.3): torchvision's CPU kernel suppresses the second, a plain float32 comparison keeps
it. `threshold_in` gives the float32 number that makes the float32 comparison the float64 one.
torchvision's CUDA kernel (devIoU in cuda/nms_kernel.cu, `const float threshold`) compares in float32
and keeps such a box: on a GPU ours follows the CPU kernel, not that one.
"""
from functools import lru_cache

import torch
from torch import Tensor

from .boxes import box_iou

# Measured on the RPN and box head of a trained and an untrained model: 2 to 10 rounds, most under 8.
FIRST_ROUNDS = 8


@lru_cache(maxsize=64)  # a model uses a few thresholds, and NMS runs per image: compute each once
def threshold_in(dtype: torch.dtype, iou_threshold: float) -> float:
    """The threshold t for IoUs of `dtype` such that `iou > t`, compared in `dtype`, is exactly
    `float64(iou) > iou_threshold`, the CPU kernel's test: the largest `dtype` number <= iou_threshold.

    For a float32 IoU x and that t: x > iou_threshold implies x > t, since t <= iou_threshold; and x > t
    implies x >= the next float32 after t, which is above iou_threshold since t is the largest one below.
    """
    if dtype == torch.float64:
        return iou_threshold
    nearest = torch.tensor(iou_threshold, dtype=dtype)
    if nearest.item() > iou_threshold:  # rounded up: take the float32 number just below
        nearest = torch.nextafter(nearest, torch.tensor(float("-inf"), dtype=dtype))
    return nearest.item()


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS.

    Args:
        boxes: Tensor[N, 4] in (x1, y1, x2, y2).
        scores: Tensor[N].
        iou_threshold: a box is dropped if its IoU with a kept, higher-scoring box is > this, the IoU
            taken in the boxes' dtype and compared in float64, as torchvision's CPU kernel does (module
            docstring).

    Returns:
        Tensor[M] (int64): indices of the kept boxes, in decreasing order of score. Equal scores keep
        their input order (a stable sort, as in both of torchvision's kernels): of two tied boxes that
        overlap, the one with the lower index is kept.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [N, 4], got {list(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"scores must be [N] for {len(boxes)} boxes, got {list(scores.shape)}")
    order = torch.sort(scores, descending=True, stable=True).indices
    first, second = overlap_edges(boxes[order], iou_threshold)
    kept = greedy_keep(first, second, torch.ones(len(boxes), dtype=torch.bool, device=boxes.device))
    return order[kept]


def overlap_graph(boxes: Tensor, iou_threshold: float) -> Tensor:
    """boxes: Tensor[G, M, 4], each group sorted by decreasing score.

    Returns Tensor[G, M, M] bool: [g, i, j] is True when i < j (box i scores higher) and their IoU is
    > iou_threshold (compared as in `nms`).
    """
    iou = box_iou(boxes, boxes)
    return torch.triu(iou > threshold_in(iou.dtype, iou_threshold), diagonal=1)


def overlap_edges(boxes: Tensor, iou_threshold: float) -> tuple[Tensor, Tensor]:
    """The edges of the overlap graph of Tensor[M, 4] boxes sorted by decreasing score.

    Returns first, second: Tensor[E] (int64), the pairs first < second whose IoU is > iou_threshold
    (compared as in `nms`).
    The IoUs are computed a block of rows at a time, each row only against the boxes after it. A block
    holds about 2^20 values on a CPU, where that fits in its caches, and 2^26 on a GPU, where one large
    block (one host read) is best: one block up to 1024 boxes on a CPU, 8192 on a GPU.
    """
    values_per_block = 2**20 if boxes.device.type == "cpu" else 2**26
    rows_per_block = max(1, values_per_block // max(1, len(boxes)))
    firsts, seconds = [], []
    for start in range(0, len(boxes), rows_per_block):
        rows, later = boxes[start:start + rows_per_block], boxes[start + 1:]
        # Row r is box start + r and column c is box start + 1 + c: keep c >= r, the boxes after it.
        iou = box_iou(rows, later)
        first, second = torch.triu(iou > threshold_in(iou.dtype, iou_threshold)).nonzero(as_tuple=True)
        firsts.append(first + start)
        seconds.append(second + start + 1)
    if not firsts:
        return boxes.new_zeros(0, dtype=torch.int64), boxes.new_zeros(0, dtype=torch.int64)
    return torch.cat(firsts), torch.cat(seconds)


def greedy_keep(first: Tensor, second: Tensor, candidates: Tensor) -> Tensor:
    """Greedy NMS over an overlap graph, by the fixed-point iteration of the module docstring.

    Args:
        first, second: Tensor[E] (int64), the edges: box `first` outranks box `second` and overlaps it
            above the threshold. Boxes are numbered in decreasing order of score (within each group of
            independent boxes; edges never join two groups).
        candidates: Tensor[V] bool, the boxes that take part; the others are neither kept nor suppress
            anything (padding, or boxes filtered out before NMS). No edge may touch them.

    Returns:
        Tensor[V] bool, the boxes greedy NMS keeps.
    """
    if len(first) == 0:  # nothing overlaps: every candidate is kept
        return candidates
    nobody = len(candidates)  # an extra slot that absorbs the writes of edges whose first box is not kept
    kept, rounds = candidates, FIRST_ROUNDS
    while True:
        for _ in range(rounds):
            previous = kept
            targets = torch.where(previous[first], second, nobody)
            suppressed = torch.zeros(nobody + 1, dtype=torch.bool, device=kept.device).index_fill_(0, targets, True)
            kept = candidates & ~suppressed[:nobody]
        if torch.equal(kept, previous):
            return kept
        rounds *= 2


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
    if shifts_categories_apart(len(boxes), boxes.device):
        offsets = idxs.to(boxes) * (boxes.max() + 1)
        return nms(boxes + offsets[:, None], scores, iou_threshold)
    keep = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    for category in torch.unique(idxs):
        members = torch.where(idxs == category)[0]
        keep[members[nms(boxes[members], scores[members], iou_threshold)]] = True
    kept = torch.where(keep)[0]
    # torch.sort's default (unstable) order for tied scores, exactly as torchvision orders them.
    return kept[torch.sort(scores[kept], descending=True).indices]


def shifts_categories_apart(num_boxes: int | Tensor, device: torch.device) -> bool | Tensor:
    """Which way batched NMS keeps categories apart, as torchvision chooses it (a bool, or a bool
    tensor for a tensor of counts).

    Few boxes: one NMS after shifting each category to its own far-away patch of the plane, so that
    boxes of different categories cannot overlap. Many boxes: the IoU matrix of all pairs would be
    large and mostly across categories, so one NMS per category. The two keep the same boxes except
    where float rounding of the shifted coordinates moves an IoU across the threshold, so we switch
    where torchvision does: above 1000 boxes on a CPU, 5000 on a GPU.
    """
    return num_boxes <= (1000 if device.type == "cpu" else 5000)
