"""Chapter 09's checkers pass correct code (ours, torchvision's) and reject plausible mistakes."""
import math

import pytest
import torch
from torchvision.models.detection.transform import resize_boxes as torchvision_resize_boxes

from mrcnn_from_scratch.engine.recipe import RECIPES, warmup_cosine
from mrcnn_from_scratch.engine.train import TrainOptions, resolve_settings
from mrcnn_from_scratch.exercises.ch09 import (
    check_boxes_to_original,
    check_iterations_for,
    check_scaled_lr,
    check_training_step,
    check_warmup_cosine,
    reference_iterations_for,
    reference_scaled_lr,
    reference_training_step,
)


# --------------------------------------------------------------------- correct implementations

def schedule(iteration, warmup_iters, total_iters, warmup_start, warmup_from=None, cosine_from_warmup=False,
             clamp=True, multiply=True):
    """Warm-up times cosine; the keyword arguments make the usual mistakes."""
    start = warmup_start if warmup_from is None else warmup_from
    warm = 1.0 if iteration >= warmup_iters else start + (1 - start) * iteration / warmup_iters
    if cosine_from_warmup:
        progress = max(iteration - warmup_iters, 0) / (total_iters - warmup_iters)
    else:
        progress = (min(iteration, total_iters) if clamp else iteration) / total_iters
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    if not multiply:
        return warm if iteration < warmup_iters else cosine
    return warm * cosine


def scaled_lr(optimizer, lr, lr_batch, batch_size, processes, count_processes=True, scale_adam=False, sqrt=False):
    total = batch_size * (processes if count_processes else 1)
    if optimizer == "sgd" or scale_adam:
        ratio = total / lr_batch
        return lr * (math.sqrt(ratio) if sqrt else ratio)
    return lr


def iterations_for(epochs, images, batch_size, processes, rounding=math.ceil, per_epoch=True, count_processes=True):
    per_process = math.ceil(images / processes) if count_processes else images
    if per_epoch:
        return epochs * int(rounding(per_process / batch_size))
    return int(rounding(epochs * per_process / batch_size))


def boxes_to_original(boxes, resized_size, original_size, one_ratio=False, inverted=False, swapped=False,
                      dtype=torch.float32):
    (rh, rw), (oh, ow) = resized_size, original_size
    ratio_h, ratio_w = oh / rh, ow / rw
    if one_ratio:
        ratio_w = ratio_h
    if inverted:
        ratio_h, ratio_w = 1 / ratio_h, 1 / ratio_w
    if swapped:
        ratio_h, ratio_w = ratio_w, ratio_h
    scale = torch.tensor([ratio_w, ratio_h, ratio_w, ratio_h], dtype=torch.float64)
    return (boxes.double() * scale).to(dtype)


def test_checkers_pass_correct_code(capsys):
    assert check_warmup_cosine(warmup_cosine)
    assert check_warmup_cosine(schedule)
    assert check_scaled_lr(scaled_lr)
    assert check_iterations_for(iterations_for)
    assert check_boxes_to_original(boxes_to_original)
    assert check_boxes_to_original(lambda b, resized, original: torchvision_resize_boxes(b, resized, original))
    out = capsys.readouterr().out
    assert out.count("✓") == 6 and "✓ check_boxes_to_original passed" in out


def test_unfilled_stub_raises_not_implemented():
    def stub(epochs, images, batch_size, processes):
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        check_iterations_for(stub)


def test_references_agree_with_the_training_command():
    # The number of steps and the rate that `train` settles on for a run given in epochs.
    for world_size in (1, 2, 8):
        options = TrainOptions(data=".", out=".", config="r50", epochs=2)
        settings = resolve_settings(options, None, dataset_size=1001, world_size=world_size)
        recipe = RECIPES["r50"]
        assert settings["iters"] == reference_iterations_for(2, 1001, recipe.batch_size, world_size)
        assert settings["lr"] == reference_scaled_lr(recipe.optimizer, recipe.lr, recipe.lr_batch, recipe.batch_size,
                                                     world_size)
    small = resolve_settings(TrainOptions(data=".", out=".", batch_size=4), None, dataset_size=2000, world_size=2)
    assert small["lr"] == RECIPES["small"].lr  # AdamW: not scaled


# ------------------------------------------------------------------------------- wrong answers

@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda i, w, t, s: schedule(i, w, t, s, warmup_from=0.0), '"the first step"'),
        (lambda i, w, t, s: schedule(i, w, t, s, multiply=False),
         '"half-way through the warm-up": the factor should be'),
        (lambda i, w, t, s: schedule(i, w, t, s, cosine_from_warmup=True), '"half-way through the warm-up"'),
        (lambda i, w, t, s: schedule(i, w, t, s, clamp=False), '"past the end"'),
        (lambda i, w, t, s: schedule(i + 1, w, t, s) if i < w else schedule(i, w, t, s), '"the first step"'),
        (lambda i, w, t, s: (s + (1 - s) * min(i / w, 1.0)) * 0.5 * (1 + math.cos(math.pi * min(i, t) / t)),
         '"no warm-up": your function raised ZeroDivisionError'),
        (lambda i, w, t, s: schedule(i, w, t, 1e-3), '"warmup_start = 0.1"'),
        (lambda i, w, t, s: torch.tensor(schedule(i, w, t, s)), "Python float"),
        (lambda i, w, t, s: math.cos(math.pi * min(i, t) / t) * (1.0 if i >= w else s + (1 - s) * i / w),
         '"half-way through the warm-up"'),
    ],
    ids=["warm-up from 0", "warm-up then cosine", "cosine after warm-up", "no clamp", "warm-up a step ahead",
         "divides by warmup_iters", "fixed warmup_start", "tensor", "cosine without 0.5(1 + ...)"],
)
def test_check_warmup_cosine_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_warmup_cosine(wrong)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda o, lr, lb, b, p: scaled_lr(o, lr, lb, b, p, count_processes=False), '"SGD, the paper'),
        (lambda o, lr, lb, b, p: scaled_lr(o, lr, lb, b, p, scale_adam=True), '"AdamW on one process"'),
        (lambda o, lr, lb, b, p: scaled_lr(o, lr, lb, b, p, sqrt=True), '"SGD on one GPU'),
        (lambda o, lr, lb, b, p: lr * lb / (b * p) if o == "sgd" else lr, '"SGD on one GPU'),
        (lambda o, lr, lb, b, p: lr * b * p / 16 if o == "sgd" else lr, '"SGD, a rate given for 8 images"'),
        (lambda o, lr, lb, b, p: lr, '"SGD on one GPU'),
        (lambda o, lr, lb, b, p: torch.tensor(scaled_lr(o, lr, lb, b, p)), "Python float"),
    ],
    ids=["processes ignored", "AdamW scaled", "square-root rule", "inverted", "fixed 16", "never scaled", "tensor"],
)
def test_check_scaled_lr_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_scaled_lr(wrong)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda e, n, b, p: iterations_for(e, n, b, p, rounding=math.floor), '"a partial last batch"'),
        (lambda e, n, b, p: iterations_for(e, n, b, p, per_epoch=False), '"3 epochs with a partial last batch"'),
        (lambda e, n, b, p: iterations_for(e, n, b, p, count_processes=False), '"2 processes"'),
        (lambda e, n, b, p: e * n / (b * p), "as an int"),
        (lambda e, n, b, p: round(e * n / (b * p)), '"a partial last batch"'),
        (lambda e, n, b, p: e * n // (b * p), '"a partial last batch"'),
    ],
    ids=["floor", "ceil over the run", "processes ignored", "float", "rounded", "floor division"],
)
def test_check_iterations_for_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_iterations_for(wrong)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda b, r, o: boxes_to_original(b, r, o, one_ratio=True), '"480×640 resized to 800×1066'),
        (lambda b, r, o: boxes_to_original(b, r, o, inverted=True), '"480×640 resized to 800×1066'),
        (lambda b, r, o: boxes_to_original(b, r, o, swapped=True), '"480×640 resized to 800×1066'),
        (lambda b, r, o: boxes_to_original(b, r, o, dtype=torch.float64), "dtype torch.float32"),
        (lambda b, r, o: b, '"480×640 resized to 800×1066'),
        (lambda b, r, o: boxes_to_original(b, r, o).round(), "wrong values"),
        (lambda b, r, o: b.mul_(torch.tensor([o[1] / r[1], o[0] / r[0]] * 2)), "changed its input"),
        (lambda b, r, o: boxes_to_original(b, r, o).reshape(-1) if len(b) == 0 else boxes_to_original(b, r, o),
         '"no detections"'),
    ],
    ids=["one ratio", "inverted", "height and width swapped", "float64", "unchanged", "rounded", "in place",
         "empty of shape [0]"],
)
def test_check_boxes_to_original_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_boxes_to_original(wrong)


# ------------------------------------------------------------------------------- the training step

def training_step(model, images, targets, optimizer, grad_clip, zero=True, clip=True, clip_after_step=False,
                  mean=False, zero_after_backward=False):
    """One training step; the keyword arguments make the usual mistakes."""
    losses = model(images, targets)
    if zero:
        optimizer.zero_grad()  # set_to_none or zeros: the same step
    total = sum(losses.values()) / (len(losses) if mean else 1)
    total.backward()
    if zero_after_backward:
        optimizer.zero_grad()
    if clip and not clip_after_step:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if clip and clip_after_step:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    return losses


def test_check_training_step_passes_the_engines_step_and_equivalent_code(capsys):
    assert check_training_step(reference_training_step)
    assert check_training_step(training_step)
    assert "✓ check_training_step passed 4 cases" in capsys.readouterr().out


def test_the_reference_step_is_the_engines():
    """The engine's step (engine/train.py) takes the same actions in the same order as the reference."""
    import inspect

    from mrcnn_from_scratch.engine.train import Training

    engine = inspect.getsource(Training._step)
    order = [engine.index(call) for call in ("zero_grad", ".backward()", "clip_grad_norm_(", ".step(self.optimizer)")]
    assert order == sorted(order)
    assert "self.recipe.grad_clip" in engine


@pytest.mark.parametrize(
    "mistake, message",
    [
        ({"clip": False}, "case 1 of 4.*weights differ"),
        ({"clip_after_step": True}, "case 1 of 4.*weights differ"),
        ({"zero": False}, '"three SGD steps"'),
        ({"mean": True}, "weights differ"),
        ({"zero_after_backward": True}, "weights differ"),
    ],
    ids=["no clip", "clip after step", "no zero_grad", "mean of the losses", "zero_grad after backward"],
)
def test_check_training_step_rejects(mistake, message):
    with pytest.raises(AssertionError, match=message):
        check_training_step(lambda *args: training_step(*args, **mistake))


def test_check_training_step_wants_the_loss_dict():
    def returns_total(*args):
        return sum(training_step(*args).values())

    with pytest.raises(AssertionError, match="return the model's loss dict"):
        check_training_step(returns_total)
