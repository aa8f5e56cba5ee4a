"""The GPU-minded fast path (chapter 13) on the CPU: same results, fewer host syncs and operator calls.

- NMS on the overlap graph is exact, also when the greedy chain is long enough to need many rounds;
- sampling by ranks draws the right counts, never ignored boxes, and each box equally often;
- the masked losses equal the losses on the gathered boxes, and stay finite where unused targets are not;
- compiling the dense parts changes neither the results nor the state dict's names;
- benchmarks/launches.py's counts meet the issue's targets against torchvision.
"""
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from mrcnn_from_scratch import MaskRCNN, small_config
from mrcnn_from_scratch.losses import fastrcnn_loss, rpn_loss, smooth_l1
from mrcnn_from_scratch.matching import BalancedPositiveNegativeSampler
from mrcnn_from_scratch.ops import nms
from mrcnn_from_scratch.ops.nms import greedy_keep, overlap_edges

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.parametrize("length", [2, 9, 40, 130])
def test_nms_on_a_long_chain_needs_many_rounds_and_stays_exact(length):
    # Boxes 3 px apart, 10 px wide: each overlaps its neighbours (IoU 7/13) but not the next but one
    # (4/16). With falling scores greedy keeps every other box, and each decision waits for the one
    # before it: the fixed point needs `length` rounds, past several convergence checks.
    x = torch.arange(length, dtype=torch.float32) * 3
    boxes = torch.stack([x, torch.zeros(length), x + 10, torch.full((length,), 10.0)], dim=1)
    scores = torch.linspace(1, 0.5, length)
    expected = torchvision.ops.nms(boxes, scores, 0.5)
    assert torch.equal(nms(boxes, scores, 0.5), expected)
    assert torch.equal(expected, torch.arange(0, length, 2))


@pytest.mark.parametrize("count", [1024, 1025, 3000])
def test_overlap_edges_built_in_blocks_give_the_same_nms(count):
    # On a CPU a block holds 2^20 IoUs: 1024 boxes are one block, 1025 and 3000 several, the last short.
    gen = torch.Generator().manual_seed(count)
    corners, sizes = torch.rand(count, 2, generator=gen) * 500, 10 + torch.rand(count, 2, generator=gen) * 90
    boxes, scores = torch.cat([corners, corners + sizes], dim=1), torch.rand(count, generator=gen)
    order = torch.sort(scores, descending=True, stable=True).indices
    first, second = overlap_edges(boxes[order], 0.5)
    iou = torchvision.ops.box_iou(boxes[order], boxes[order])
    expected = torch.triu(iou > 0.5, diagonal=1).nonzero(as_tuple=True)
    assert sorted(zip(first.tolist(), second.tolist())) == sorted(zip(*(e.tolist() for e in expected)))
    kept = order[greedy_keep(first, second, torch.ones(count, dtype=torch.bool))]
    assert torch.equal(kept, torchvision.ops.nms(boxes, scores, 0.5))


def test_sampling_by_ranks_draws_the_right_counts_and_never_ignored_boxes():
    sampler = BalancedPositiveNegativeSampler(64, 0.25, draws="ranks")
    torch.manual_seed(0)
    for num_positive, num_negative in [(0, 500), (3, 500), (40, 500), (40, 10), (0, 0)]:
        labels = torch.cat([torch.ones(num_positive), torch.zeros(num_negative), -torch.ones(30)])
        labels = labels[torch.randperm(len(labels))]
        positive, negative = sampler([labels])
        chosen_positive = min(num_positive, 16)
        assert positive[0].sum() == chosen_positive
        assert negative[0].sum() == min(num_negative, 64 - chosen_positive)
        assert (labels[positive[0]] == 1).all() and (labels[negative[0]] == 0).all()


def test_sampling_by_ranks_picks_every_positive_equally_often():
    sampler = BalancedPositiveNegativeSampler(16, 0.25, draws="ranks")  # 4 of 20 positives: p = 0.2
    labels = torch.cat([torch.ones(20), torch.zeros(100)])
    torch.manual_seed(0)
    draws = 2000
    frequency = sum(sampler([labels])[0][0][:20].float() for _ in range(draws)) / draws
    # The standard deviation of each frequency is sqrt(0.2 · 0.8 / 2000) = 0.009: 0.05 is over 5 of them.
    assert (frequency - 0.2).abs().max() < 0.05


def test_masked_losses_equal_the_losses_on_the_gathered_boxes():
    gen = torch.Generator().manual_seed(0)
    anchors = 400
    objectness, deltas = torch.randn(anchors, generator=gen, dtype=torch.float64), torch.randn(anchors, 4, generator=gen, dtype=torch.float64)
    labels = torch.randint(-1, 2, (anchors,), generator=gen).double()
    targets = torch.randn(anchors, 4, generator=gen, dtype=torch.float64)
    positive = (labels == 1) & (torch.rand(anchors, generator=gen) < 0.5)
    negative = (labels == 0) & (torch.rand(anchors, generator=gen) < 0.5)
    sampled = positive | negative
    expected_objectness = torch.nn.functional.binary_cross_entropy_with_logits(objectness[sampled], labels[sampled])
    expected_box = smooth_l1(deltas[positive], targets[positive], 1 / 9) / sampled.sum()
    got_objectness, got_box = rpn_loss(objectness, deltas, labels, targets, positive, negative)
    torch.testing.assert_close(got_objectness, expected_objectness, atol=1e-12, rtol=0)
    torch.testing.assert_close(got_box, expected_box, atol=1e-12, rtol=0)

    rois, classes = 64, 5
    logits, box_deltas = torch.randn(rois, classes, generator=gen, dtype=torch.float64), torch.randn(rois, 4 * classes, generator=gen, dtype=torch.float64)
    roi_labels = torch.randint(0, classes, (rois,), generator=gen)
    roi_targets = torch.randn(rois, 4, generator=gen, dtype=torch.float64)
    fg = roi_labels > 0
    expected = smooth_l1(box_deltas.view(rois, classes, 4)[fg, roi_labels[fg]], roi_targets[fg], 1 / 9) / rois
    torch.testing.assert_close(fastrcnn_loss(logits, box_deltas, roi_labels, roi_targets)[1], expected, atol=1e-12, rtol=0)


def test_unused_infinite_targets_leave_the_losses_and_gradients_finite():
    # An image without objects gives its anchors a zero-size "matched box": log(0) = -inf targets,
    # never used since no anchor of it is positive. A mask multiplied in would make inf · 0 = NaN.
    deltas = torch.randn(10, 4, requires_grad=True)
    targets = torch.full((10, 4), -torch.inf)
    negative = torch.zeros(10, dtype=torch.bool)
    negative[:5] = True
    objectness = torch.randn(10, requires_grad=True)
    losses = rpn_loss(objectness, deltas, torch.zeros(10), targets, torch.zeros(10, dtype=torch.bool), negative)
    sum(losses).backward()
    assert all(torch.isfinite(loss) for loss in losses)
    assert torch.isfinite(deltas.grad).all() and torch.isfinite(objectness.grad).all()


def test_compiling_the_dense_parts_keeps_results_and_state_dict_names():
    torch.manual_seed(0)
    model = MaskRCNN(small_config(3)).eval()
    images = [torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        expected = model(images)
    names = list(model.state_dict())
    model.compile_dense_parts(backend="eager")  # the wiring; a real backend needs a compiler and minutes
    with torch.no_grad():
        got = model(images)
    assert list(model.state_dict()) == names
    for a, b in zip(got, expected):
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)


def test_the_counter_targets_hold_against_torchvision():
    """benchmarks/launches.py at a fifth of its image size: host syncs no more than torchvision's, and
    leaf operator calls at most 2× (a training step) and 1.5× (inference) torchvision's."""
    from launches import count, training_batch
    from model import make_models
    ours, theirs = make_models(torch.device("cpu"))
    for model in (ours, theirs):
        model.transform.min_size, model.transform.max_size = (160,), 267  # the same resize in both
    images, targets = training_batch(torch.device("cpu"), size=160)
    test_image = [torch.rand(3, 150, 200, generator=torch.Generator().manual_seed(2))]

    def infer(model):
        model.eval()
        with torch.no_grad():
            model(test_image)

    def train_step(model):
        model.train()
        torch.manual_seed(3)
        sum(model(images, targets).values()).backward()

    for step, leaf_ratio in [(infer, 1.5), (train_step, 2.0)]:
        step(ours), step(theirs)
        (ours_leaves, ours_syncs), (their_leaves, their_syncs) = count(lambda: step(ours)), count(lambda: step(theirs))
        assert sum(ours_syncs.values()) <= sum(their_syncs.values()), (step.__name__, ours_syncs, their_syncs)
        assert ours_leaves <= leaf_ratio * their_leaves, (step.__name__, ours_leaves, their_leaves)
