"""Comparing ranked outputs (detections, proposals) up to the order of near-tied items.

Detections and proposals are ordered by a float score and cut: a score threshold, NMS, the best k. Two
items whose exact scores lie closer together than float32's error can come out in either order on another
CPU, and at a cut either one can be the item kept. So ranked outputs are not compared row by row. Instead:

1. Each of our items is paired with an item of the float64 truth that has the same label and the same box
   (to 1e-4 of the largest coordinate: float32 boxes are off by about 1e-7 of it, and two distinct
   detections that close together would be one box).
2. The score bound B is the one `assert_as_accurate_as` allows a float32 score: 4 × torchvision's own
   float32 error on this input, plus 4 ulps. Two items can swap only if each score moves by at most B
   towards the other, so their float64 scores lie within 2B: that is the tie band. Two paired items in
   the other order than the truth's must lie within it.
3. An item without a partner must lie within the band of a cut: the score threshold, or the lowest
   score of a list that is full. Where NMS meets an IoU within rounding of its threshold, a box can be
   kept on one side and dropped on the other: torchvision's own float32 run shows how many such items
   an input has, and ours may have at most 4 times as many. Where it has none, anything else is a real
   difference.
4. Paired items are then compared as values (`assert_as_accurate_as`) and, for masks, pixel by pixel.

The bound comes from the error analysis in docs/equivalence.md, not from one machine's gap.

A model's detections depend on its proposals: a near-tie at one of the RPN's cuts hands the RoI heads
another proposal, whose detection can then have any score. So a whole model is compared stage by stage
(`recorded_proposals`): its proposals up to near-ties, then its detections from the truth's proposals.
"""
import contextlib

import torch

from conftest import FLOAT32_EPS, assert_as_accurate_as

# Boxes within this fraction of the largest coordinate are the same box (see above).
SAME_BOX = 1e-4


def pair_items(boxes: torch.Tensor, truth_boxes: torch.Tensor, labels: torch.Tensor | None = None,
               truth_labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair items of a float32 output with the truth's by (label, box): each truth item, best first, takes
    the nearest unpaired item of the same label within SAME_BOX.

    boxes: Tensor[N, 4]; truth_boxes: Tensor[M, 4]; labels: Tensor[N] and Tensor[M], or None (proposals).
    Returns index tensors (ours, truth) of the P pairs, in the truth's order.
    """
    truth_boxes = truth_boxes.double()
    scale = max(1.0, truth_boxes.abs().max().item()) if len(truth_boxes) else 1.0
    distance = (boxes.double()[:, None, :] - truth_boxes[None, :, :]).abs().amax(dim=2)  # [N, M]
    if labels is not None:
        distance[labels[:, None] != truth_labels[None, :]] = float("inf")
    distance[distance > SAME_BOX * scale] = float("inf")
    ours, truth = [], []
    for t in range(len(truth_boxes)):
        candidates = distance[:, t]
        if len(candidates) and candidates.min().isfinite():
            best = int(candidates.argmin())
            ours.append(best), truth.append(t)
            distance[best, :] = float("inf")  # paired once
    return torch.tensor(ours, dtype=torch.long), torch.tensor(truth, dtype=torch.long)


def score_bound(their_scores: torch.Tensor, truth_scores: torch.Tensor) -> float:
    """B: how far a float32 score may lie from the truth, as `assert_as_accurate_as` allows with factor 4.
    Both are scores of the same items, Tensor[P]."""
    truth_scores = truth_scores.double()
    their_error = (their_scores.double() - truth_scores).abs().max().item() if len(truth_scores) else 0.0
    return 4 * their_error + 4 * FLOAT32_EPS * max(1.0, truth_scores.abs().max().item() if len(truth_scores) else 0.0)


def check_order(name: str, truth_scores: torch.Tensor, ours: torch.Tensor, truth: torch.Tensor, band: float) -> None:
    """The pairs (ours, truth) may be ordered differently only within the band. truth_scores: Tensor[M]."""
    # Pairs by our position; an inversion is a later pair that comes earlier in the truth.
    by_position = torch.argsort(ours)
    truth_position, paired_scores = truth[by_position], truth_scores.double()[truth[by_position]]
    later = torch.ones(len(ours), len(ours), dtype=torch.bool).triu(1)
    inverted = later & (truth_position[None, :] < truth_position[:, None])
    apart = (paired_scores[:, None] - paired_scores[None, :]).abs() > band
    if (inverted & apart).any():
        i, j = (inverted & apart).nonzero()[0].tolist()
        raise AssertionError(f"{name}: items {int(ours[by_position[i]])} and {int(ours[by_position[j]])} are "
                             f"in the other order than the truth's, whose scores {paired_scores[i]:.10f} and "
                             f"{paired_scores[j]:.10f} differ by more than the tie band {band:.3g}")


def unexplained(scores: torch.Tensor, truth_scores: torch.Tensor, ours: torch.Tensor, truth: torch.Tensor,
                band: float, cuts: list[float]) -> list[str]:
    """The items on either side left unpaired that lie within the band of no cut, described for a message.
    scores: Tensor[N] of the float32 output, truth_scores: Tensor[M]; (ours, truth): the pairs."""
    found = []
    for side, all_scores, paired in [("float32", scores.double(), ours), ("truth", truth_scores.double(), truth)]:
        unpaired = torch.ones(len(all_scores), dtype=torch.bool)
        unpaired[paired] = False
        for index in torch.where(unpaired)[0].tolist():
            score = all_scores[index].item()
            if not any(abs(score - cut) <= band for cut in cuts):
                found.append(f"{side} item {index} (score {score:.10f})")
    return found


def paired_up_to_near_ties(name: str, got: dict, expected: dict, truth: dict, score_thresh: float,
                           capacity: int, extra_cuts: list[float] = ()) -> tuple[torch.Tensor, torch.Tensor,
                                                                                 torch.Tensor]:
    """Pair our float32 output and torchvision's with the float64 truth, checking order and cuts.

    got, expected, truth: {"boxes": Tensor[N, 4], "scores": Tensor[N], "labels": Tensor[N] (optional)}.
    capacity: the most items a list can hold (the truth's lowest score is a cut when it is full).
    extra_cuts: the truth's scores at cuts made before the output (the RPN's best k of each level).
    Returns indices (ours, theirs, truth) of the items present in all three, in the truth's order.

    Items without a partner that lie at no cut: where NMS meets an IoU within rounding of its threshold,
    a box can be kept on one side and dropped on the other, and with it what it suppresses. How often an
    input does that shows in torchvision's own float32 run. Ours may have at most 4 times as many such
    items (the factor of `assert_as_accurate_as`): where torchvision's run has none, ours must have none.
    """
    labels = [d.get("labels") for d in (got, expected, truth)]
    their_index, their_truth = pair_items(expected["boxes"], truth["boxes"], labels[1], labels[2])
    band = 2 * score_bound(expected["scores"][their_index], truth["scores"][their_truth])
    cuts = [score_thresh, *extra_cuts] + ([truth["scores"][-1].item()] if len(truth["scores"]) == capacity else [])
    our_index, our_truth = pair_items(got["boxes"], truth["boxes"], labels[0], labels[2])
    check_order(f"{name}, torchvision", truth["scores"], their_index, their_truth, band)
    check_order(f"{name}, ours", truth["scores"], our_index, our_truth, band)
    theirs_off = unexplained(expected["scores"], truth["scores"], their_index, their_truth, band, cuts)
    ours_off = unexplained(got["scores"], truth["scores"], our_index, our_truth, band, cuts)
    if len(ours_off) > 4 * len(theirs_off):
        cut_list = [round(c, 10) for c in cuts]
        raise AssertionError(f"{name}: {len(ours_off)} items of ours or the truth have no partner of the same label "
                             f"and box and lie within the tie band {band:.3g} of no cut {cut_list}, more than 4 "
                             f"times torchvision's {len(theirs_off)}: {', '.join(ours_off[:5])}")
    # The truth items both sides have, and where each side has them.
    ours_of, theirs_of = dict(zip(our_truth.tolist(), our_index.tolist())), dict(zip(their_truth.tolist(),
                                                                                    their_index.tolist()))
    common = sorted(set(ours_of) & set(theirs_of))
    return (torch.tensor([ours_of[t] for t in common], dtype=torch.long),
            torch.tensor([theirs_of[t] for t in common], dtype=torch.long), torch.tensor(common, dtype=torch.long))


def assert_same_binary_masks(got: torch.Tensor, expected: torch.Tensor) -> None:
    """What a learner sees, detection by detection: each mask at p > 0.5, pixel for pixel. Pixels may differ
    only where the expected probability is within float32's reach of 0.5. got, expected: Tensor[N, 1, H, W]."""
    uncertain = (expected - 0.5).abs() <= 1e-3
    for index, (a, b, unsure) in enumerate(zip(got, expected, uncertain)):
        differ = ((a > 0.5) != (b > 0.5)) & ~unsure
        assert not differ.any(), f"detection {index}: {int(differ.sum())} mask pixels differ"


def assert_detections_as_accurate_as(got: list[dict], expected: list[dict], truth: list[dict], score_thresh: float,
                                     capacity: int, keys=("boxes", "scores", "masks"), min_compared: int = 1,
                                     extra_cuts: list[list[float]] | None = None) -> None:
    """Per image: the same items up to near-ties (see the module's docstring), then each paired item's values
    as accurate as torchvision's, and its mask the same at p > 0.5. extra_cuts: per image, see above."""
    for image, (a, b, t) in enumerate(zip(got, expected, truth)):
        cuts = extra_cuts[image] if extra_cuts else []
        ours, theirs, common = paired_up_to_near_ties(f"image {image}", a, b, t, score_thresh, capacity, cuts)
        assert len(common) >= min_compared, f"image {image}: only {len(common)} items to compare"
        for key in keys:
            assert_as_accurate_as(a[key][ours], b[key][theirs], t[key][common], f"image {image}, {key}")
        if "masks" in keys:
            assert_same_binary_masks(a["masks"][ours], b["masks"][theirs])


@contextlib.contextmanager
def recorded_proposals(rpn, k: int, forced: list[torch.Tensor] | None = None):
    """Record what an RPN proposes, ours or torchvision's (their filter_proposals take and return the same).

    Yields a list that fills with one dict per image: "boxes" Tensor[P, 4], "scores" Tensor[P] (probabilities,
    best first), and "cuts": the probability of the k-th best anchor of each level that has more than k,
    where the RPN cuts before NMS. forced: per image Tensor[P, 4], handed on instead of the RPN's own
    proposals (converted to their dtype), so that the next stage of every run starts from the same boxes.
    """
    record = []
    filter_proposals = rpn.filter_proposals

    def recording(boxes, objectness, image_sizes, anchors_per_level):
        proposals, scores = filter_proposals(boxes, objectness, image_sizes, anchors_per_level)
        logits = objectness.detach().reshape(len(boxes), -1).split(list(anchors_per_level), dim=1)
        for image, (p, s) in enumerate(zip(proposals, scores)):
            cuts = [torch.sigmoid(level[image].topk(k).values[-1]).item() for level in logits if level.shape[1] > k]
            record.append({"boxes": p.detach(), "scores": s.detach(), "cuts": cuts})
        if forced is not None:
            proposals = [f.to(p) for f, p in zip(forced, proposals)]
        return proposals, scores

    rpn.filter_proposals = recording
    try:
        yield record
    finally:
        del rpn.filter_proposals
