"""What every "predict, then measure" exercise does: check the learner's change, run the experiment, and
hold the learner's prediction against the measurement.

An experiment exercise has three parts. The learner writes down a prediction first, then builds the
variant (one change to a working model), then the checker:
1. checks the variant: it must be the reference variant, exactly (same outputs on a fixed batch), so
   that the measurement measures the change and nothing else; a wrong variant raises AssertionError;
2. measures it, and the unchanged model as the baseline, with the same seeds and budget;
3. prints the prediction next to the measurement and accepts it within a tolerance: a prediction is
   judged by its distance to what was measured on this machine, never by a stored number.
"""
import math
from typing import Callable

import torch
from torch import Tensor, nn

from . import rpn_lab


def need_prediction(prediction, what: str) -> float:
    """The prediction as a float; NotImplementedError if it is still None (the stub's value)."""
    if prediction is None:
        raise NotImplementedError(f"write down your prediction first: {what}")
    try:
        value = float(prediction)
    except (TypeError, ValueError):
        raise AssertionError(f"the prediction should be a number ({what}), got {prediction!r}") from None
    if not math.isfinite(value):
        raise AssertionError(f"the prediction should be a finite number, got {prediction!r}")
    return value


def judge_prediction(checker: str, prediction: float, measured: float, tolerance: float, what: str,
                     why: str) -> bool:
    """Print prediction, measurement and the accepted range; True if |prediction - measured| <= tolerance.

    Every experiment here measures a fraction, so the range is shown within [0, 1]."""
    low, high = max(measured - tolerance, 0.0), min(measured + tolerance, 1.0)
    within = abs(prediction - measured) <= tolerance
    verdict = "✓ within" if within else "✗ outside"
    print(f"{checker}: you predicted {prediction:.3f} for {what}; measured {measured:.3f}. "
          f"{verdict} the accepted range {low:.3f} to {high:.3f}.")
    print(f"Why: {why}")
    return within


# ------------------------------------------------------------------------------ the RPN experiments

def _losses_and_proposals(backbone: nn.Module, rpn: nn.Module, images: Tensor, boxes: list[Tensor]):
    """The RPN's two training losses on a fixed batch (sampling seeded) and its eval-mode proposals."""
    size = [tuple(images.shape[-2:])] * len(images)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the sampler draws from the global generator
        backbone.train(), rpn.train()
        _, losses = rpn(images, size, backbone(images), [{"boxes": b} for b in boxes])
    backbone.eval(), rpn.eval()
    with torch.no_grad():
        found, _ = rpn(images, size, backbone(images))
    return {name: value.detach() for name, value in losses.items()}, found


def check_rpn_variant(checker: str, build: Callable, reference: dict, hint: str) -> None:
    """AssertionError unless build(seed=0) gives the same model as rpn_lab.build_rpn(seed=0, **reference).

    Same means: the same two losses on a fixed batch of 4 val images (the matcher, the anchors and every
    layer take part in them) and the same proposals in evaluation mode.
    """
    with torch.random.fork_rng(devices=[]):
        built = build(seed=0)
        ours = rpn_lab.build_rpn(seed=0, **reference)
    if not (isinstance(built, tuple) and len(built) == 2 and all(isinstance(m, nn.Module) for m in built)):
        raise AssertionError(f"{checker}: return (backbone, rpn), the two modules of rpn_lab.build_rpn, "
                             f"got {type(built).__name__}")
    images, boxes = rpn_lab.shapes_split("val", 4)
    try:
        their_losses, their_proposals = _losses_and_proposals(*built, images, boxes)
    except Exception as error:
        raise AssertionError(f"{checker}: your model raised {type(error).__name__}: {error}\nHint: {hint}") from error
    our_losses, our_proposals = _losses_and_proposals(*ours, images, boxes)
    for name, value in our_losses.items():
        if name not in their_losses or not torch.allclose(their_losses[name], value, rtol=1e-4, atol=1e-6):
            got = their_losses.get(name)
            raise AssertionError(f"{checker}: on a fixed batch your model's {name} is "
                                 f"{'missing' if got is None else f'{got.item():.6f}'}, the variant's is "
                                 f"{value.item():.6f}: it is not the variant asked for.\nHint: {hint}")
    for theirs, expected in zip(their_proposals, our_proposals):
        if theirs.shape != expected.shape or not torch.allclose(theirs, expected, rtol=1e-4, atol=1e-3):
            raise AssertionError(f"{checker}: your model's proposals differ from the variant's.\nHint: {hint}")


def rpn_experiment(checker: str, build: Callable, prediction, reference: dict, hint: str, why: str,
                   baseline: dict | None, iterations: int, train_count: int, val_count: int,
                   k: int = 100, iou: float = 0.7, tolerance: float = 0.1) -> dict:
    """The whole exercise: check the variant, measure it (and the baseline unless given), judge the prediction.

    Returns {"measured": recall_by_size of the variant, "baseline": the same for the unchanged bench,
    "prediction": float, "within": bool}.
    """
    what = f"the recall at IoU {iou} with {k} proposals, all objects"
    prediction = need_prediction(prediction, what)
    check_rpn_variant(checker, build, reference, hint)
    print(f"✓ {checker}: your variant is the one asked for. Training it for {iterations} iterations...")
    measured = rpn_lab.measure(build, iterations, train_count, val_count, k, iou)
    if baseline is None:
        baseline = rpn_lab.measure(rpn_lab.build_rpn, iterations, train_count, val_count, k, iou)
    print(f"recall at IoU {iou} with {k} proposals, {val_count} val images:")
    print(f"  {'':10s}" + "".join(f"{group:>20s}" for group in measured))
    for name, result in (("baseline", baseline), ("variant", measured)):
        print(f"  {name:10s}" + "".join(f"{value:20.3f}" for value in result.values()))
    within = judge_prediction(checker, prediction, measured["all"], tolerance, what, why)
    return {"measured": measured, "baseline": baseline, "prediction": prediction, "within": within}
