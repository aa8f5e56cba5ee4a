"""Checkers for chapter 08's exercises: smooth L1, the mask loss, its gradient by hand, and the weighted
sum of the loss terms.

Each checker runs your function on fixed cases, compares it with the package's finished version
(`mrcnn_from_scratch.losses`), and raises AssertionError on the first case it gets wrong, showing that
input. The functions it expects:

    smooth_l1(prediction: Tensor[...], target: Tensor[...], beta: float) -> scalar Tensor
        0.5·x²/beta where |x| < beta and |x| - 0.5·beta elsewhere, x = prediction - target, summed.
    maskrcnn_loss(mask_logits: Tensor[P, K, M, M], mask_targets: Tensor[P, M, M], labels: Tensor[P] int64)
        -> scalar Tensor
        binary cross-entropy with logits on channel labels[p] of RoI p, averaged over the P·M·M pixels;
        0 (a tensor) when there are no RoIs.
    mask_loss_grad(mask_logits: Tensor[P, K, M, M], mask_targets: Tensor[P, M, M], labels: Tensor[P] int64)
        -> Tensor[P, K, M, M]
        the gradient of maskrcnn_loss with respect to mask_logits, written by hand (no autograd).
    total_loss(losses: dict[str, Tensor], weights: dict[str, float]) -> scalar Tensor
        the sum of every term of `losses`, each multiplied by its weight in `weights` (1 if it has none);
        still a tensor that backpropagates into the terms.
"""
from typing import Any, Callable

import torch
from torch import Tensor

from .. import losses as package_losses
from ._checking import Case, run_cases, tensor_problem


def _scalar_problem(received: Any, expected: Tensor, what: str, rtol: float = 1e-5, atol: float = 1e-6) -> str | None:
    """tensor_problem for a scalar loss, with a clearer message for the usual shape mistakes."""
    if isinstance(received, float):
        return f"{what} should be a torch.Tensor (a float cannot be backpropagated), got float"
    if isinstance(received, Tensor) and received.shape != expected.shape:
        return f"{what} should be a scalar tensor (shape []), got shape {list(received.shape)}: sum or average it"
    return tensor_problem(received.detach() if isinstance(received, Tensor) else received, expected.detach(), what,
                          rtol=rtol, atol=atol)


# -------------------------------------------------------------------------------------- smooth L1

def _l1_case(name: str, seed: int, shape: tuple[int, ...], scale: float, beta: float, hint: str = "") -> Case:
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(shape, generator=g)
    prediction = target + scale * torch.randn(shape, generator=g)
    return Case(name, {"prediction": prediction, "target": target, "beta": beta}, hint)


def check_smooth_l1(fn: Callable) -> bool:
    """Check fn(prediction, target, beta) -> the summed smooth L1 loss, a scalar tensor."""
    formula = "with x = prediction - target: 0.5·x²/beta where |x| < beta, |x| - 0.5·beta elsewhere; then sum"
    cases = [
        _l1_case("64 × 4 deltas, errors around beta = 1/9", 0, (64, 4), 0.15, 1 / 9, formula),
        _l1_case("small errors only (the quadratic part)", 1, (20, 4), 0.01, 1 / 9,
                 "where |x| < beta the loss is 0.5·x²/beta: divide by beta, do not multiply"),
        _l1_case("large errors only (the linear part)", 2, (20, 4), 5.0, 1 / 9,
                 "where |x| >= beta the loss is |x| - 0.5·beta, so that the two parts meet at |x| = beta"),
        _l1_case("beta = 1", 3, (32, 4), 1.0, 1.0, "use the beta you are given"),
        _l1_case("beta = 0.5, a 1-D tensor", 4, (50,), 0.6, 0.5),
        _l1_case("one delta", 5, (1, 4), 0.2, 1 / 9, "sum over all elements, do not average"),
        _l1_case("no deltas", 6, (0, 4), 1.0, 1 / 9, "the sum over no elements is 0 (a mean would be nan)"),
    ]

    def compare(received, expected, case):
        return _scalar_problem(received, expected, "the loss")

    return run_cases("check_smooth_l1", fn, package_losses.smooth_l1, cases, compare)


# ------------------------------------------------------------------------------------ the mask loss

def _mask_case(name: str, seed: int, rois: int, num_classes: int, size: int = 28, logit_scale: float = 2.0,
               labels: Tensor | None = None, binary: bool = False, hint: str = "") -> Case:
    g = torch.Generator().manual_seed(seed)
    logits = logit_scale * torch.randn(rois, num_classes, size, size, generator=g)
    targets = torch.rand(rois, size, size, generator=g)
    targets = (targets > 0.5).float() if binary else targets
    if labels is None:
        labels = torch.randint(1, num_classes, (rois,), generator=g)
    return Case(name, {"mask_logits": logits, "mask_targets": targets, "labels": labels}, hint)


def _mask_cases(own: str) -> list[Case]:
    return [
        _mask_case("6 RoIs, 4 classes", 0, 6, 4, hint=own),
        _mask_case("10 RoIs, 91 classes", 1, 10, 91, hint=own),
        _mask_case("every RoI of the last class", 2, 4, 5, labels=torch.full((4,), 4),
                   hint="labels count the background as 0, so class c is channel c (not c - 1)"),
        _mask_case("0/1 targets, 14 × 14 masks", 3, 5, 3, size=14, binary=True),
        _mask_case("one RoI", 4, 1, 6),
    ]


def check_maskrcnn_loss(fn: Callable) -> bool:
    """Check fn(mask_logits Tensor[P, K, M, M], mask_targets Tensor[P, M, M], labels Tensor[P]) -> scalar loss."""
    own = ("take channel labels[p] of RoI p (index with torch.arange(P) and labels), then "
           "F.binary_cross_entropy_with_logits against the targets, averaged over all P·M·M pixels")
    cases = _mask_cases(own) + [
        _mask_case("confident logits (±40)", 5, 3, 4, logit_scale=40.0, binary=True,
                   hint="sigmoid then log loses precision for large logits: use binary_cross_entropy_with_logits"),
        _mask_case("no positive RoIs", 6, 0, 4, labels=torch.zeros(0, dtype=torch.int64),
                   hint="with no RoIs return a zero tensor (for example mask_logits.sum() * 0): a mean over no pixels is nan"),
    ]

    def compare(received, expected, case):
        return _scalar_problem(received, expected, "the mask loss")

    return run_cases("check_maskrcnn_loss", fn, package_losses.maskrcnn_loss, cases, compare)


# ---------------------------------------------------------------------------- the mask loss's gradient

def reference_mask_loss_grad(mask_logits: Tensor, mask_targets: Tensor, labels: Tensor) -> Tensor:
    """The gradient of losses.maskrcnn_loss with respect to mask_logits, by autograd."""
    logits = mask_logits.detach().clone().requires_grad_(True)
    package_losses.maskrcnn_loss(logits, mask_targets, labels).backward()
    return logits.grad


def check_mask_loss_grad(fn: Callable) -> bool:
    """Check fn(mask_logits, mask_targets, labels) -> Tensor[P, K, M, M], the mask loss's gradient by hand."""
    formula = ("d loss / d logit = (sigmoid(logit) - target) / (P·M·M) on channel labels[p] of RoI p, "
               "and exactly 0 on every other channel")
    cases = _mask_cases(formula) + [
        _mask_case("no positive RoIs", 6, 0, 4, labels=torch.zeros(0, dtype=torch.int64),
                   hint="the gradient is all zeros of the logits' shape, [0, K, M, M]"),
    ]

    def reference(mask_logits, mask_targets, labels):
        return reference_mask_loss_grad(mask_logits, mask_targets, labels)

    def compare(received, expected, case):
        problem = tensor_problem(received, expected, "the gradient", rtol=1e-4, atol=1e-9)
        if problem and isinstance(received, Tensor) and received.shape == expected.shape and expected.numel():
            others = torch.ones_like(expected, dtype=torch.bool)
            others[torch.arange(len(expected)), case.args["labels"]] = False
            if received[others].abs().max() > 0:
                problem += " (only the GT class's channel of each RoI may have a nonzero gradient)"
        return problem

    return run_cases("check_mask_loss_grad", fn, reference, cases, compare)


# ------------------------------------------------------------------------------------- the total loss

TERMS = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")


class _Losses(dict):
    """A dict of loss terms that prints each as its value, and makes fresh leaf tensors for every call."""

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: {v.item():.4f}" for k, v in self.items()) + "}"


def _losses(seed: int, names: tuple[str, ...] = TERMS) -> _Losses:
    g = torch.Generator().manual_seed(seed)
    return _Losses({name: (0.05 + torch.rand((), generator=g)).requires_grad_(True) for name in names})


def reference_total_loss(losses: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    return sum(weights.get(name, 1.0) * value for name, value in losses.items())


def check_total_loss(fn: Callable) -> bool:
    """Check fn(losses dict[str, Tensor], weights dict[str, float]) -> the weighted sum, a scalar tensor."""
    every = "add up every term of `losses`, each times weights.get(name, 1.0)"
    cases = [
        Case("the five terms, no weights", {"losses": _losses(0), "weights": {}}, every),
        Case("the mask loss weighted 2", {"losses": _losses(1), "weights": {"loss_mask": 2.0}},
             "multiply each term by its weight; terms without a weight count once"),
        Case("every term weighted", {"losses": _losses(2), "weights": dict(zip(TERMS, (1.0, 10.0, 0.5, 2.0, 0.0)))},
             every),
        Case("the RoI heads' three terms only", {"losses": _losses(3, TERMS[2:]), "weights": {"loss_box_reg": 3.0}},
             "sum the terms that `losses` has, whatever their names"),
        Case("an extra term", {"losses": _losses(4, TERMS + ("loss_keypoint",)), "weights": {}}, every),
    ]

    def reference(losses, weights):
        return reference_total_loss(losses, weights)

    def compare(received, expected, case):
        problem = _scalar_problem(received, expected, "the total loss")
        if problem is None and not received.requires_grad:
            return ("the total loss does not backpropagate: build it from the loss tensors themselves "
                    "(no .item(), no torch.tensor(...) around numbers)")
        return problem

    return run_cases("check_total_loss", fn, reference, cases, compare)
