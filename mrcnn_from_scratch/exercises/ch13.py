"""Checkers for chapter 13's exercises: greedy NMS as a fixed point, and two predictions (the host syncs of
chapter 01's loop NMS, the rounds of the fixed point on a chain of boxes), checked against measurements.

The functions they expect:

    greedy_keep(overlaps: Tensor[M, M] bool, candidates: Tensor[M] bool) -> Tensor[M] bool
        the boxes that greedy NMS keeps, of M boxes sorted by decreasing score. overlaps[i, j] is True
        when i < j and box i overlaps box j above the threshold (`ops.nms.overlap_graph`); a box that
        is not a candidate is neither kept nor suppresses anything.
    loop_syncs(num_boxes: int, num_kept: int) -> int
        your prediction of the syncing calls that chapter 01's loop NMS (`loop_nms` below) makes on
        num_boxes boxes of which it keeps num_kept, as benchmarks/launches.py counts them.
    chain_rounds(length: int) -> int
        your prediction of the rounds that the fixed point ("keep what no kept box overlaps", repeated)
        runs on a chain of `length` boxes, each overlapping only its neighbours, with falling scores:
        counting every round, the last one included (the one that changes nothing and so ends the loop).

The reference for greedy_keep is the package's `ops.nms.greedy_keep` on the graph's edge list
(tests/test_nms.py and tests/test_fast_path.py check it against torchvision). The two predictions are
held against what the checker measures on this machine, with the same counter as the chapter.
"""
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ..ops import box_iou
from ..ops.nms import greedy_keep, overlap_graph
from ._checking import Case, run_cases, tensor_problem
from .ch01 import clustered_boxes, distinct_scores


def loop_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Chapter 01's teaching NMS: one step per kept box. Tensor[N, 4], Tensor[N] -> Tensor[K] int64."""
    pending = torch.sort(scores, descending=True, stable=True).indices
    keep = []
    while len(pending) > 0:
        best, pending = pending[0], pending[1:]
        keep.append(best)
        ious = box_iou(boxes[best][None], boxes[pending])[0]
        pending = pending[ious <= iou_threshold]
    return torch.stack(keep) if keep else pending


def chain_of_boxes(length: int) -> tuple[Tensor, Tensor]:
    """Boxes 3 px apart and 10 px wide (IoU 7/13 with a neighbour, 4/16 with the next but one), falling scores.

    Returns boxes Tensor[length, 4] and scores Tensor[length]. At threshold 0.5 each box overlaps only its
    neighbours, and greedy NMS keeps every other box: each decision waits for the one before it.
    """
    x = torch.arange(length, dtype=torch.float32) * 3
    boxes = torch.stack([x, torch.zeros(length), x + 10, torch.full((length,), 10.0)], dim=1)
    return boxes, torch.linspace(1, 0.5, length)


def fixed_point_rounds(overlaps: Tensor, candidates: Tensor) -> tuple[Tensor, int]:
    """The fixed point with a check after every round, on one group: overlaps Tensor[M, M], candidates
    Tensor[M]. Returns the kept boxes Tensor[M] bool and the number of rounds run, the last included."""
    kept, rounds = candidates, 0
    while True:
        rounds += 1
        suppressed = (overlaps & kept[:, None]).any(dim=0)  # [j]: some kept box i overlaps j
        new_kept = candidates & ~suppressed
        if torch.equal(new_kept, kept):
            return kept, rounds
        kept = new_kept


def sync_counter() -> Callable:
    """benchmarks/launches.py's `count(step) -> (leaf calls, syncs by source)`: the chapter's counter."""
    folder = Path(__file__).resolve().parents[2] / "benchmarks"
    if not (folder / "launches.py").exists():
        raise RuntimeError(f"the counter benchmarks/launches.py is not at {folder}: run from a clone of the course")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    from launches import count
    return count


def count_syncs(step: Callable) -> int:
    """How many syncing calls `step()` makes, by benchmarks/launches.py's rules."""
    return sum(sync_counter()(step)[1].values())


# ------------------------------------------------------------------------------ greedy NMS, fixed point

def _ranked_case(name: str, boxes: Tensor, scores: Tensor, iou_threshold: float = 0.5,
                 candidates: Tensor | None = None, hint: str = "") -> Case:
    """A case from boxes: their overlap graph once sorted by decreasing score, and the candidates."""
    ranked = boxes[torch.sort(scores, descending=True, stable=True).indices]
    if candidates is None:
        candidates = torch.ones(len(boxes), dtype=torch.bool)
    return Case(name, {"overlaps": overlap_graph(ranked, iou_threshold), "candidates": candidates}, hint)


def reference_greedy_keep(overlaps: Tensor, candidates: Tensor) -> Tensor:
    """The package's greedy_keep on the edges of the graph that join two candidates."""
    first, second = (overlaps & candidates[:, None] & candidates[None, :]).nonzero(as_tuple=True)
    return greedy_keep(first, second, candidates)


def _kept_problem(received, expected: Tensor) -> str | None:
    if not isinstance(received, Tensor) or received.dtype != expected.dtype or received.shape != expected.shape:
        return tensor_problem(received, expected, "the result (a bool mask, one per box)")
    extra, missing = torch.where(received & ~expected)[0].tolist(), torch.where(expected & ~received)[0].tolist()
    parts = [f"kept boxes that greedy NMS suppresses: {extra}"] if extra else []
    parts += [f"suppressed boxes that greedy NMS keeps: {missing}"] if missing else []
    return "; ".join(parts) or None


def check_greedy_keep(fn: Callable) -> bool:
    """Check fn(overlaps Tensor[M, M] bool, candidates Tensor[M] bool) -> kept Tensor[M] bool."""
    only_kept = "only kept boxes suppress: a box suppressed by a kept box suppresses nothing itself"
    until_stable = ("repeat until a round changes nothing: a chain of L boxes needs L rounds, so no fixed number of "
                    "rounds is enough")
    not_candidates = "a box that is not a candidate is never kept and suppresses nothing"
    cases = [_ranked_case(f"16 boxes around 4 objects, seed {seed}, threshold {threshold}", clustered_boxes(16, seed),
                          distinct_scores(16, seed), threshold, hint=only_kept)
             for seed, threshold in [(0, 0.5), (1, 0.3), (2, 0.7)]]
    cases += [
        _ranked_case("a chain of 3 boxes: A drops B, B would drop C", *chain_of_boxes(3), hint=only_kept),
        _ranked_case("a chain of 40 boxes", *chain_of_boxes(40), hint=until_stable),
        _ranked_case("200 boxes around 30 objects", clustered_boxes(200, 3, objects=30, image_size=300),
                     distinct_scores(200, 3), hint=only_kept),
        _ranked_case("the best 4 of 10 boxes are not candidates", clustered_boxes(10, 4, objects=2),
                     distinct_scores(10, 4), candidates=torch.arange(10) >= 4, hint=not_candidates),
        _ranked_case("a chain of 12 with box 2 not a candidate", *chain_of_boxes(12),
                     candidates=torch.arange(12) != 2, hint=not_candidates),
        _ranked_case("nothing overlaps", torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]]),
                     torch.tensor([0.5, 0.9, 0.7]), hint="with no overlaps, every candidate is kept"),
        _ranked_case("no candidates", clustered_boxes(8, 5, objects=2), distinct_scores(8, 5),
                     candidates=torch.zeros(8, dtype=torch.bool), hint=not_candidates),
        _ranked_case("identical boxes", torch.tensor([[5.0, 5, 25, 25]] * 4), torch.tensor([0.2, 0.9, 0.4, 0.6])),
        Case("no boxes", {"overlaps": torch.zeros(0, 0, dtype=torch.bool),
                          "candidates": torch.zeros(0, dtype=torch.bool)}, "the result is Tensor[0] bool"),
    ]

    def compare(received, expected, case):
        return _kept_problem(received, expected)

    return run_cases("check_greedy_keep", fn, reference_greedy_keep, cases, compare)


# ------------------------------------------------------------------------------ predictions, measured

def _boxes_with_kept(num_boxes: int, num_kept: int) -> tuple[Tensor, Tensor]:
    """num_boxes boxes around num_kept objects far apart, near-copies of each: NMS at 0.5 keeps num_kept."""
    which = torch.arange(num_boxes) % max(num_kept, 1)
    jitter = (torch.arange(num_boxes) // max(num_kept, 1)).float()[:, None] * torch.tensor([0.2, 0.1, 0.2, 0.1])
    base = torch.stack([which * 50.0, torch.zeros(num_boxes), which * 50.0 + 30, torch.full((num_boxes,), 30.0)], 1)
    scores = torch.linspace(0.9, 0.1, num_boxes)
    return base + jitter, scores


def measured_loop_syncs(num_boxes: int, num_kept: int) -> int:
    """Run `loop_nms` on boxes it keeps num_kept of and count its syncing calls."""
    boxes, scores = _boxes_with_kept(num_boxes, num_kept)
    kept = []
    syncs = count_syncs(lambda: kept.append(loop_nms(boxes, scores, 0.5)))
    assert len(kept[0]) == num_kept, f"the case was meant to keep {num_kept} boxes, NMS kept {len(kept[0])}"
    return syncs


def _number_problem(received, expected: int, what: str) -> str | None:
    if isinstance(received, Tensor) and received.numel() == 1:
        received = received.item()
    if not isinstance(received, (int, float)) or isinstance(received, bool):
        return f"the prediction should be a number, got {type(received).__name__}"
    if received != expected:
        return f"{what}: you predicted {received:g}, measured {expected}"
    return None


def check_loop_syncs(fn: Callable) -> bool:
    """Check the prediction fn(num_boxes, num_kept) -> int against the syncs of `loop_nms`, counted."""
    hint = ("count the host reads in one step of the loop: indexing with a 0-d tensor (boxes[best]) reads its value "
            "(aten::item), and boolean-mask indexing (pending[ious <= t]) needs nonzero; len() of a tensor does not "
            "read its data")
    cases = [Case(f"{n} box{'' if n == 1 else 'es'}, {k} kept", {"num_boxes": n, "num_kept": k}, hint)
             for n, k in [(1, 1), (10, 1), (10, 10), (60, 4), (200, 25), (0, 0)]]

    def compare(received, expected, case):
        return _number_problem(received, expected, "syncing calls")

    return run_cases("check_loop_syncs", fn, measured_loop_syncs, cases, compare)


def measured_chain_rounds(length: int) -> int:
    """The rounds `fixed_point_rounds` runs on `chain_of_boxes(length)` at IoU threshold 0.5."""
    boxes, _ = chain_of_boxes(length)  # already in decreasing order of score
    return fixed_point_rounds(overlap_graph(boxes, 0.5), torch.ones(length, dtype=torch.bool))[1]


def check_chain_rounds(fn: Callable) -> bool:
    """Check the prediction fn(length) -> int against the rounds of the fixed point on a chain, measured."""
    hint = ("start from 'every candidate kept': after round t the first t boxes of the chain are settled, and the "
            "loop stops at the first round that changes nothing")
    cases = [Case(f"a chain of {length}", {"length": length}, hint) for length in [1, 2, 3, 4, 7, 12, 40]]

    def compare(received, expected, case):
        return _number_problem(received, expected, "rounds")

    return run_cases("check_chain_rounds", fn, measured_chain_rounds, cases, compare)
