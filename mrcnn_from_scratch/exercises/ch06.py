"""Checkers for chapter 06's exercises: the Fast R-CNN loss, the box of each RoI's class, the candidates of
post-processing, and the two-layer MLP head.

Each checker runs your code on fixed cases, compares it with the package's finished version
(`mrcnn_from_scratch.losses`, `mrcnn_from_scratch.box_head`, `mrcnn_from_scratch.ops`), and raises
AssertionError on the first case it gets wrong, showing that input. What they expect:

    fastrcnn_loss(class_logits: Tensor[R, K], box_deltas: Tensor[R, 4K], labels: Tensor[R] int64,
                  regression_targets: Tensor[R, 4]) -> (loss_classifier, loss_box_reg), two scalar tensors
        cross-entropy over all RoIs; smooth L1 (beta 1/9) of the positives' deltas of their own class,
        summed and divided by R.
    boxes_for_labels(box_deltas: Tensor[R, 4K], proposals: Tensor[R, 4], labels: Tensor[R] int64) -> Tensor[R, 4]
        each proposal moved by its deltas for class labels[r], decoded with weights (10, 10, 5, 5) and
        dw, dh clamped at log(1000 / 16).
    candidates(class_logits: Tensor[R, K], boxes: Tensor[R, K, 4], score_thresh: float)
        -> (boxes Tensor[M, 4], scores Tensor[M], labels Tensor[M] int64)
        softmax scores; one candidate per (proposal, foreground class), in (proposal, class) order;
        only those with score > score_thresh.
    TwoMLPHead(in_channels, representation_size) -> nn.Module with fc6, fc7:
        Tensor[R, C, 7, 7] -> Tensor[R, representation_size], flatten, fc6, ReLU, fc7, ReLU.
"""
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from ..box_head import TwoMLPHead
from ..losses import fastrcnn_loss
from ._checking import Case, keeping_random_state, run_cases, tensor_problem

BOX_HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def _random_boxes(n: int, seed: int, image_size: float = 128.0) -> Tensor:
    """Tensor[n, 4] of boxes with sides 4..64 pixels inside an image_size² image."""
    g = torch.Generator().manual_seed(seed)
    size = 4 + torch.rand(n, 2, generator=g) * 60
    top_left = torch.rand(n, 2, generator=g) * (image_size - size)
    return torch.cat([top_left, top_left + size], dim=1)


def _labels(n: int, num_classes: int, seed: int, positive_fraction: float = 0.25) -> Tensor:
    """Tensor[n] int64: 0 (background) for most, a class in 1..K-1 for about `positive_fraction` of them."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.randint(1, num_classes, (n,), generator=g)
    return torch.where(torch.rand(n, generator=g) < positive_fraction, classes, 0)


# ---------------------------------------------------------------------------------- Fast R-CNN loss

def _loss_case(name: str, rois: int, num_classes: int, seed: int, labels: Tensor | None = None, target_scale: float = 0.5,
               hint: str = "") -> Case:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rois, num_classes, generator=g) * 2
    deltas = torch.randn(rois, 4 * num_classes, generator=g) * 0.3
    if labels is None:
        labels = _labels(rois, num_classes, seed + 100)
    targets = torch.randn(rois, 4, generator=g) * target_scale
    args = {"class_logits": logits, "box_deltas": deltas, "labels": labels, "regression_targets": targets}
    return Case(name, args, hint)


def reference_fastrcnn_loss(class_logits: Tensor, box_deltas: Tensor, labels: Tensor, regression_targets: Tensor):
    """The package's `losses.fastrcnn_loss`."""
    return fastrcnn_loss(class_logits, box_deltas, labels, regression_targets)


def check_fastrcnn_loss(fn: Callable) -> bool:
    """Check fn(class_logits, box_deltas, labels, regression_targets) -> (loss_classifier, loss_box_reg)."""
    gt_class = ("take each positive RoI's 4 deltas of its own class: box_deltas.reshape(R, K, 4)[positive, labels[positive]]; "
                "background RoIs and the other classes' deltas get no box loss")
    divide = "divide the summed smooth L1 by the number of *sampled RoIs* (R), not by the number of positives"
    beta = "smooth L1 with beta = 1/9: 0.5·x²/beta where |x| < beta, |x| - 0.5·beta elsewhere, summed over the 4 coordinates"
    cases = [
        _loss_case("64 RoIs, 4 classes", 64, 4, 0, hint=gt_class),
        _loss_case("128 RoIs, 91 classes (COCO)", 128, 91, 1, hint=gt_class),
        _loss_case("targets near zero (the quadratic part)", 40, 3, 2, target_scale=0.02, hint=beta),
        _loss_case("every RoI positive", 16, 5, 3, labels=torch.tensor([1, 2, 3, 4] * 4), hint=divide),
        _loss_case("one positive among 32 RoIs", 32, 4, 4, labels=torch.tensor([0] * 31 + [2]), hint=divide),
        _loss_case("no positive RoI", 20, 4, 5, labels=torch.zeros(20, dtype=torch.int64),
                   hint="with no positives the box loss is 0 (a sum over nothing), not NaN (a mean over nothing)"),
    ]

    def compare(received, expected, case):
        if not isinstance(received, (tuple, list)) or len(received) != 2:
            return "return two scalar tensors: (loss_classifier, loss_box_reg)"
        for name, got, want in zip(["loss_classifier", "loss_box_reg"], received, expected):
            if isinstance(got, Tensor) and got.dim() == 1 and got.numel() == 1:
                return f"{name} should be a scalar (shape []), got shape [1]"
            problem = tensor_problem(got, want.detach(), name, rtol=1e-5, atol=1e-6)
            if problem:
                return problem
        return None

    return run_cases("check_fastrcnn_loss", _tuple_or_same(fn), _tuple_or_same(reference_fastrcnn_loss), cases, compare)


def _tuple_or_same(fn: Callable) -> Callable:
    """fn's output as a tuple of detached tensors when it is a pair, so that failure messages show plain values."""

    def wrapped(*args):
        out = fn(*args)
        if isinstance(out, (tuple, list)):
            return tuple(t.detach() if isinstance(t, Tensor) else t for t in out)
        return out

    return wrapped


# ------------------------------------------------------------------------------ boxes of the labels

def reference_boxes_for_labels(box_deltas: Tensor, proposals: Tensor, labels: Tensor) -> Tensor:
    """Tensor[R, 4K], Tensor[R, 4], Tensor[R] -> Tensor[R, 4]: each proposal decoded with its class's deltas."""
    boxes = ops.BoxCoder(BOX_HEAD_WEIGHTS).decode(box_deltas, proposals)  # [R, 4K]
    return boxes.reshape(len(boxes), box_deltas.shape[1] // 4, 4)[torch.arange(len(boxes)), labels]


def _boxes_case(name: str, rois: int, num_classes: int, seed: int, labels: Tensor | None = None, scale: float = 1.0,
                hint: str = "") -> Case:
    g = torch.Generator().manual_seed(seed)
    deltas = torch.randn(rois, 4 * num_classes, generator=g) * scale
    if labels is None:
        labels = torch.randint(0, num_classes, (rois,), generator=g)
    return Case(name, {"box_deltas": deltas, "proposals": _random_boxes(rois, seed), "labels": labels}, hint)


def check_boxes_for_labels(fn: Callable) -> bool:
    """Check fn(box_deltas Tensor[R, 4K], proposals Tensor[R, 4], labels Tensor[R]) -> Tensor[R, 4]."""
    layout = ("the deltas of class c are columns 4c .. 4c+3: box_deltas.reshape(R, K, 4)[r, labels[r]]; "
              "then decode them against the proposal")
    weights = "divide (dx, dy, dw, dh) by the box head's weights (10, 10, 5, 5) before using them"
    clamp = "clamp dw and dh at log(1000 / 16) after dividing by the weights, before exp"
    cases = [
        _boxes_case("8 RoIs, 4 classes", 8, 4, 0, hint=layout),
        _boxes_case("30 RoIs, 91 classes", 30, 91, 1, hint=layout),
        _boxes_case("large deltas", 10, 3, 2, scale=8.0, hint=weights),
        _boxes_case("huge dw, dh", 4, 2, 3, labels=torch.tensor([1, 1, 0, 1]), scale=40.0, hint=clamp),
        _boxes_case("every RoI of class 0 (background)", 5, 3, 4, labels=torch.zeros(5, dtype=torch.int64), hint=layout),
        Case("zero deltas give the proposals back", {"box_deltas": torch.zeros(3, 12), "proposals": _random_boxes(3, 5),
             "labels": torch.tensor([0, 2, 1])}),
        _boxes_case("no RoIs", 0, 4, 6, hint="the result is Tensor[0, 4]; with R = 0, reshape(R, -1, 4) cannot tell "
                    "what -1 is: give the number of classes, K = box_deltas.shape[1] // 4"),
    ]

    def compare(received, expected, case):
        return tensor_problem(received, expected, "the boxes", rtol=1e-5, atol=1e-4)

    return run_cases("check_boxes_for_labels", fn, reference_boxes_for_labels, cases, compare)


# ---------------------------------------------------------------------------------------- candidates

def reference_candidates(class_logits: Tensor, boxes: Tensor, score_thresh: float) -> tuple[Tensor, Tensor, Tensor]:
    """Softmax, drop the background column, flatten (proposal, class), keep score > score_thresh."""
    scores = F.softmax(class_logits, dim=-1)
    labels = torch.arange(class_logits.shape[1]).expand_as(scores)
    scores, labels, boxes = scores[:, 1:].flatten(), labels[:, 1:].flatten(), boxes[:, 1:].reshape(-1, 4)
    keep = torch.where(scores > score_thresh)[0]
    return boxes[keep], scores[keep], labels[keep]


def _candidates_case(name: str, rois: int, num_classes: int, seed: int, score_thresh: float = 0.05,
                     logit_scale: float = 2.0, hint: str = "") -> Case:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rois, num_classes, generator=g) * logit_scale
    boxes = _random_boxes(rois * num_classes, seed).reshape(rois, num_classes, 4)
    return Case(name, {"class_logits": logits, "boxes": boxes, "score_thresh": score_thresh}, hint)


def check_candidates(fn: Callable) -> bool:
    """Check fn(class_logits Tensor[R, K], boxes Tensor[R, K, 4], score_thresh) -> (boxes [M, 4], scores [M], labels [M])."""
    order = ("flatten in (proposal, class) order: proposal 0's classes 1..K-1, then proposal 1's, ...; "
             "drop class 0 (background) before flattening")
    softmax = "scores are probabilities: F.softmax(class_logits, dim=-1), over the classes of each RoI"
    strict = "keep scores > score_thresh, strictly"
    ties = torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, 0.0, 0.0]])  # scores 1/4 and 1/6
    cases = [
        _candidates_case("10 RoIs, 4 classes", 10, 4, 0, hint=order),
        _candidates_case("50 RoIs, 91 classes, threshold 0.05", 50, 91, 1, logit_scale=3.0, hint=softmax),
        _candidates_case("6 RoIs, 3 classes, threshold 0.3", 6, 3, 2, score_thresh=0.3, hint=order),
        Case("scores exactly at the threshold", {"class_logits": ties, "boxes": _random_boxes(8, 3).reshape(2, 4, 4),
             "score_thresh": 0.25}, strict),
        _candidates_case("threshold 0: every foreground pair", 4, 3, 4, score_thresh=0.0, hint=order),
        _candidates_case("no RoIs", 0, 4, 5, hint="return empty tensors: boxes [0, 4], scores [0], labels [0] int64"),
    ]

    def compare(received, expected, case):
        if not isinstance(received, (tuple, list)) or len(received) != 3:
            return "return three tensors: (boxes [M, 4], scores [M], labels [M] int64)"
        for name, got, want in zip(["the boxes", "the scores", "the labels"], received, expected):
            problem = tensor_problem(got, want, name, rtol=1e-5, atol=1e-6)
            if problem:
                if isinstance(got, Tensor) and got.shape == want.shape and name != "the boxes":
                    problem += f" ({order})"
                return problem
        return None

    return run_cases("check_candidates", fn, reference_candidates, cases, compare)


# ------------------------------------------------------------------------------------- TwoMLPHead

class _Shown:
    """A head's output, shown in a failure message by its shape and first rows, not all of its numbers."""

    def __init__(self, value):
        self.value = value

    def __repr__(self) -> str:
        if isinstance(self.value, Tensor) and self.value.dim() == 2 and self.value.numel():
            return f"Tensor{list(self.value.shape)}, whose first 2 rows begin\n{self.value[:2, :6]!r}"
        return repr(self.value)


def _load_reference_weights(head: nn.Module, reference: nn.Module) -> None:
    """Copy the reference head's tensors into the learner's; raise ValueError naming what does not fit."""
    if not isinstance(head, nn.Module):
        raise TypeError(f"the class should build an nn.Module, got {type(head).__name__}")
    expected, own = reference.state_dict(), head.state_dict()
    if set(expected) != set(own):
        raise ValueError(f"your head's tensors should be named {sorted(expected)}, got {sorted(own)}: "
                         "make self.fc6 = nn.Linear(in_channels, representation_size) and self.fc7 likewise")
    wrong = [f"{k}: {list(own[k].shape)} instead of {list(v.shape)}" for k, v in expected.items() if own[k].shape != v.shape]
    if wrong:
        raise ValueError("some of your head's tensors have the wrong shape: " + "; ".join(wrong))
    head.load_state_dict(expected)


@keeping_random_state
def check_two_mlp_head(head_class: Callable) -> bool:
    """Check head_class(in_channels, representation_size): flatten, fc6 + ReLU, fc7 + ReLU."""
    order = "x.flatten(start_dim=1), then relu(fc6(x)), then relu(fc7(x)): a ReLU after *both* layers"
    flatten = "flatten [R, C, 7, 7] as it is laid out (channel-major: torch's flatten), so that the weights match"

    def run(cls):
        def build_and_run(channels, size, representation_size, rois):
            torch.manual_seed(channels + size + representation_size)
            reference = TwoMLPHead(channels * size * size, representation_size)
            with torch.no_grad():
                for p in reference.parameters():
                    p.normal_(std=0.5 / math.sqrt(p.shape[-1]))  # some units on, some off
            head = reference if cls is TwoMLPHead else cls(channels * size * size, representation_size)
            if head is not reference:
                _load_reference_weights(head, reference)
            x = torch.randn(rois, channels, size, size, generator=torch.Generator().manual_seed(rois))
            with torch.no_grad():
                return _Shown(head(x))

        return build_and_run

    cases = [
        Case("8 channels of 7×7, representation 32, 5 RoIs", {"channels": 8, "size": 7, "representation_size": 32, "rois": 5}, order),
        Case("256 channels of 7×7 (Mask R-CNN's), representation 64", {"channels": 256, "size": 7, "representation_size": 64, "rois": 3}, flatten),
        Case("3 channels of 2×2, representation 6", {"channels": 3, "size": 2, "representation_size": 6, "rois": 4}, flatten),
        Case("no RoIs", {"channels": 4, "size": 7, "representation_size": 16, "rois": 0}, "the result is Tensor[0, representation_size]"),
    ]

    def compare(received, expected, case):
        received, expected = received.value, expected.value
        problem = tensor_problem(received, expected, "the head's output", rtol=1e-4, atol=1e-5)
        if problem and isinstance(received, Tensor) and received.shape == expected.shape and (received < 0).any():
            problem += "; it has negative values: fc7 is followed by a ReLU too"
        return problem

    return run_cases("check_two_mlp_head", run(head_class), run(TwoMLPHead), cases, compare)
