"""Checkers for chapter 11's exercises: RoIPool's rounding at a stride, the softmax mask loss's gradient at
one pixel, and the gap between two rows of the ablation table.

The functions they expect:

    rounding_shift(boxes: Tensor[N, 4], stride: int) -> Tensor[N]
        how far RoIPool's first rounding moves each box, in image pixels: each coordinate is divided by
        the stride, rounded to the nearest whole cell (halves away from zero, as C's round), and
        multiplied back; the result is the largest of the four moves.
    softmax_pixel_gradient(logits: Tensor[K], target: float, label: int) -> Tensor[K]
        d loss / d logits of the softmax mask loss at one pixel (channel 0 is background): the loss is
        -(t·log p_label + (1 - t)·log p_0) with p = softmax(logits).
    gap(ours: list[float], reference: list[float]) -> tuple[float, float]
        the gap of the means, ours minus reference, and its standard error sqrt(s_o²/n_o + s_r²/n_r), both
        in AP points (×100), from APs in 0..1 over seeds; s is the sample standard deviation (0 for one seed).
"""
from typing import Callable

import torch
from torch import Tensor

from ..ablation_table import compare, mean_and_std
from ..ablation_variants import Variant
from ..losses import maskrcnn_softmax_loss
from ._checking import Case, run_cases, tensor_problem


def reference_rounding_shift(boxes: Tensor, stride: int) -> Tensor:
    scaled = boxes / stride
    rounded = torch.sign(scaled) * torch.floor(scaled.abs() + 0.5)
    return (rounded * stride - boxes).abs().amax(dim=1)


def check_rounding_shift(fn: Callable) -> bool:
    """Check fn(boxes Tensor[N, 4], stride) -> Tensor[N], the largest move of a box's edges by RoIPool's rounding."""
    floor_hint = "round to the nearest cell: int() or floor() moves 31 px to 0 at stride 32, a whole cell too far"
    gen = torch.Generator().manual_seed(0)
    random = torch.rand(50, 2, generator=gen) * 100
    random = torch.cat([random, random + 5 + torch.rand(50, 2, generator=gen) * 40], dim=1)
    cases = [
        Case("edges on the grid", {"boxes": torch.tensor([[0.0, 32, 64, 96]]), "stride": 32}, "nothing moves: 0"),
        Case("one pixel short of a cell", {"boxes": torch.tensor([[31.0, 0, 33, 64]]), "stride": 32}, floor_hint),
        Case("half a cell", {"boxes": torch.tensor([[16.0, 8, 40, 24]]), "stride": 16},
             "halves round away from zero: 0.5 cell -> 1 cell, a move of half a stride"),
        Case("partly outside the image", {"boxes": torch.tensor([[-13.0, -3, 20, 30]]), "stride": 8},
             "negative coordinates round too: the move is a distance, never negative"),
        Case("50 random boxes, stride 4", {"boxes": random, "stride": 4}, floor_hint),
        Case("50 random boxes, stride 32", {"boxes": random, "stride": 32}, floor_hint),
        Case("no boxes", {"boxes": torch.zeros(0, 4), "stride": 16}, "the result is Tensor[0]"),
    ]

    def compare_shifts(received, expected, case):
        return tensor_problem(received, expected, "the shifts", rtol=1e-5, atol=1e-4)

    return run_cases("check_rounding_shift", fn, reference_rounding_shift, cases, compare_shifts)


def reference_softmax_pixel_gradient(logits: Tensor, target: float, label: int) -> Tensor:
    """Autograd through the package's maskrcnn_softmax_loss on one RoI of one pixel."""
    logits = logits.detach().clone().requires_grad_(True)
    loss = maskrcnn_softmax_loss(logits[None, :, None, None], torch.tensor([[[target]]], dtype=logits.dtype),
                                 torch.tensor([label]))
    loss.backward()
    return logits.grad


def check_softmax_pixel_gradient(fn: Callable) -> bool:
    """Check fn(logits Tensor[K], target, label) -> Tensor[K], the softmax mask loss's gradient at one pixel."""
    hint = ("the gradient of cross-entropy after a softmax is p - y: here y is t on the label's channel and 1 - t "
            "on background's (channel 0), 0 elsewhere, so every other class's channel gets +p_k")
    cases = [
        Case("inside the object, 4 channels", {"logits": torch.tensor([0.5, 1.0, 3.0, -1.0], dtype=torch.float64),
                                               "target": 1.0, "label": 2}, hint),
        Case("outside the object", {"logits": torch.tensor([2.0, -1.0, 0.0, 1.5], dtype=torch.float64),
                                    "target": 0.0, "label": 1}, hint),
        Case("a soft edge", {"logits": torch.tensor([0.0, 4.0, 4.0, 0.0], dtype=torch.float64),
                             "target": 0.3, "label": 1}, hint),
        Case("one class only", {"logits": torch.tensor([0.2, -0.7], dtype=torch.float64), "target": 1.0,
                                "label": 1}, "with K = 2 this is the sigmoid loss's gradient on the logit difference"),
    ]

    def compare_gradients(received, expected, case):
        return tensor_problem(received, expected, "the gradient", rtol=1e-9, atol=1e-12)

    return run_cases("check_softmax_pixel_gradient", fn, reference_softmax_pixel_gradient, cases, compare_gradients)


def reference_gap(ours: list[float], reference: list[float]) -> tuple[float, float]:
    """ablation_table.compare on the two lists' means and standard deviations."""
    summaries = []
    for values in (ours, reference):
        mean, std = mean_and_std(values)
        summaries.append({"mean": mean, "std": std, "n": len(values)})
    result = compare(*summaries, Variant("ours"))
    return result["gap"], result["standard_error"]


def check_gap(fn: Callable) -> bool:
    """Check fn(ours, reference) -> (gap, standard error), in AP points, against ablation_table.compare."""
    hint = ("points are AP × 100; the standard error of a difference of two means is sqrt(s_o²/n_o + s_r²/n_r), "
            "with s the sample standard deviation (divided by n - 1)")
    cases = [
        Case("three seeds each", {"ours": [0.50, 0.52, 0.47], "reference": [0.55, 0.56, 0.51]}, hint),
        Case("the variant is better", {"ours": [0.61, 0.60, 0.66], "reference": [0.58, 0.57, 0.60]}, hint),
        Case("one seed each", {"ours": [0.40], "reference": [0.45]}, "one seed has no spread: a standard error of 0"),
        Case("five seeds against three", {"ours": [0.3, 0.35, 0.31, 0.28, 0.33], "reference": [0.36, 0.34, 0.39]},
             hint),
    ]

    def compare_gaps(received, expected, case):
        if not (isinstance(received, tuple) and len(received) == 2):
            return f"expected a tuple (gap, standard error), got {received!r}"
        for name, r, e in zip(("the gap", "the standard error"), received, expected):
            if abs(float(r) - e) > 1e-6 * max(1.0, abs(e)):
                return f"{name}: expected {e:.6g} points, got {float(r):.6g}"
        return None

    return run_cases("check_gap", fn, reference_gap, cases, compare_gaps)
