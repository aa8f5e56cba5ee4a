"""One training step's gradients, parameter by parameter, against torchvision's with the same weights.

The loss test in test_model.py compares what a step computes; this module compares what it teaches. A bug
that leaves every loss unchanged but sends gradient where torchvision sends none (proposals that are not
detached), or none where it sends some (a detached branch), shows only here.

How the runs are made comparable:
- Same weights (`make_models`), same images and targets, the same `torch.manual_seed` before each forward,
  and `sampler_draws="torchvision"`: both models sample the same anchors and RoIs.
- BatchNorm layers use their running statistics, as torchvision's FrozenBatchNorm2d does when it fine-tunes;
  their weights and biases still train and are compared. With batch statistics this randomly initialized
  ResNet is so badly conditioned in float32 that its features are off by 1e-3 of their scale and some
  gradients by 20%, on both sides alike: a float32 comparison would then have no teeth.
- Every run is handed the proposals of torchvision's float32 run. Which 2,000 proposals the RPN keeps, and in
  what order, comes from sorting tens of thousands of objectness scores, and float32 swaps adjacent near-equal
  ones (10 of the first image's 2,000 proposals move here, 46 of the second's); the sampler's random
  permutation then draws other RoIs, and the float64 truth would be the gradient of another loss. Each model
  still computes its own proposals, which are checked against torchvision's, and the substitute keeps their
  autograd path, so a proposal that carries gradient still shows.
"""
import copy

import pytest
import torch
from torch import nn

from mrcnn_from_scratch.torchvision_weights import rename_torchvision_key

from conftest import assert_as_accurate_as
from test_model import make_models, odd_images, training_targets

SEED = 3  # the seed of test_training_losses_match_torchvision_with_the_same_seed


def training_step(model: nn.Module, dtype: torch.dtype, proposals: list[torch.Tensor] | None = None):
    """One step of a copy of `model` in dtype: losses summed, then backward.

    proposals: per image Tensor[P_i, 4] to hand the RoI heads instead of the RPN's own, keeping the RPN's
    autograd path (p + (q - p).detach() has the values of q and the gradient of p).
    Returns ({our parameter name: gradient}, the RPN's own proposals, detached).
    """
    model = copy.deepcopy(model).train().to(dtype)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()  # running statistics: see the module docstring
    own = []

    def substitute(module, inputs, output):
        boxes, losses = output
        own.extend(p.detach().clone() for p in boxes)
        if proposals is not None:
            if [p.shape for p in boxes] != [q.shape for q in proposals]:
                raise AssertionError(f"the RPN kept {[len(p) for p in boxes]} proposals, "
                                     f"torchvision {[len(q) for q in proposals]}")
            return [p + (q.to(dtype) - p).detach() for p, q in zip(boxes, proposals, strict=True)], losses

    model.rpn.register_forward_hook(substitute)
    images = odd_images()  # drawn in float32, then converted: the float64 truth sees the same pixels
    targets = [{**t, "boxes": t["boxes"].to(dtype)} for t in training_targets(images)]
    images = [image.to(dtype) for image in images]
    torch.manual_seed(SEED)
    sum(model(images, targets).values()).backward()
    # torchvision's names -> ours (rename_torchvision_key leaves ours unchanged)
    grads = {rename_torchvision_key(n): p.grad for n, p in model.named_parameters() if p.requires_grad}
    return grads, own


@pytest.fixture(scope="module")
def steps():
    """The four runs: {(side, dtype): (gradients, own proposals)}, all given torchvision's float32 proposals."""
    ours, theirs = make_models(min_size=320, max_size=533)
    runs = {("theirs", torch.float32): training_step(theirs, torch.float32)}
    given = runs["theirs", torch.float32][1]
    runs["ours", torch.float32] = training_step(ours, torch.float32, given)
    runs["theirs", torch.float64] = training_step(theirs, torch.float64, given)
    runs["ours", torch.float64] = training_step(ours, torch.float64, given)
    trainable = [n for n, p in ours.named_parameters() if p.requires_grad]
    return runs, trainable


def assert_same_parameters(ours: dict, theirs: dict, trainable: list[str]):
    assert len(ours) == len(trainable) == len(theirs), (len(ours), len(trainable), len(theirs))
    assert set(ours) == set(theirs), sorted(set(ours) ^ set(theirs))[:10]
    missing = [name for name in trainable if ours[name] is None or theirs[name] is None]
    assert not missing, f"no gradient for {missing[:10]}"


def test_float64_gradients_match_torchvision(steps):
    """Every parameter's gradient of one step, float64 against float64.

    Catches: proposals that carry gradient into the RPN (a missing `.detach()` in rpn.py; torchvision's
    approximate joint training stops it there), a detached or dropped branch (the box or mask head feeding
    nothing back into the FPN), a wrong loss weight or normalization, a parameter that is never used.
    """
    runs, trainable = steps
    (ours, our_proposals), (theirs, their_proposals) = runs["ours", torch.float64], runs["theirs", torch.float64]
    for a, b in zip(our_proposals, their_proposals, strict=True):  # the RPN's own, before the substitution
        torch.testing.assert_close(a, b, atol=1e-8, rtol=0, msg="the RPN's own proposals")
    assert_same_parameters(ours, theirs, trainable)
    for name in trainable:
        # As in docs/equivalence.md: a gradient is a sum over up to ~10^5 terms (an early convolution's weight
        # over every pixel). torchvision's own float32 error, relative to the parameter's largest gradient,
        # reaches 6e-4 here (the first stage's conv1, test below); float64 rounds 2^29 times more finely, so
        # about 1e-12 (measured: 1.4e-16). 1e-8 of the gradient's scale, at least 1 so that tiny gradients
        # (down to 3e-4 here) are not held to tighter than absolute rounding, leaves a margin of 10^4. Real bugs
        # are far larger: proposals not detached make the stem's gradient NaN; the box branch's pooled
        # features detached move it by 0.031.
        scale = max(1.0, theirs[name].abs().max().item())
        error = (ours[name] - theirs[name]).abs().max().item()
        assert error <= 1e-8 * scale, f"{name}: gradient off by {error:.3g}, scale {scale:.3g}"


def test_float32_gradients_are_as_accurate_as_torchvision(steps):
    """Every parameter's gradient of one float32 step, against torchvision's float32 and the float64 truth.

    Catches the same bugs as the float64 test, in the dtype learners train in, and also a float32-only
    difference: our float32 RPN choosing other proposals than torchvision's.
    """
    runs, trainable = steps
    (ours, our_proposals), (theirs, their_proposals) = runs["ours", torch.float32], runs["theirs", torch.float32]
    truth = runs["theirs", torch.float64][0]
    for a, b in zip(our_proposals, their_proposals, strict=True):
        # The same proposal differs by float32 rounding (~1e-4 px); another one by pixels. If this fails, our
        # RPN is wrong, or two objectness scores tie within float32 rounding: then change the input
        # (odd_images, or make_models' weights) and say why here.
        assert a.shape == b.shape and (a - b).abs().max() <= 1e-2, "our float32 RPN kept other proposals"
    assert_same_parameters(ours, theirs, trainable)
    for name in trainable:
        # The test input must be well-conditioned: torchvision's own float32 error (up to 6e-4 of the scale
        # here) far below what a discrete difference between the float32 runs and the truth would cause
        # (20% with BatchNorm on batch statistics, see the module docstring).
        their_error = (theirs[name].double() - truth[name]).abs().max().item()
        assert their_error <= 1e-2 * truth[name].abs().max().item(), f"{name}: the float32 run is ill-conditioned"
        assert_as_accurate_as(ours[name], theirs[name], truth[name], name)
