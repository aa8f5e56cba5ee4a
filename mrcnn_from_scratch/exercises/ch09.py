"""Checkers for chapter 09's exercises: the warm-up and cosine schedule, the linear scaling rule, the number
of iterations of a run measured in epochs, detections' boxes mapped back to the original image, and
one training step.

Each checker runs your function on fixed cases, compares it with the package's finished version (the
training recipe in `mrcnn_from_scratch.engine.recipe`, the data order in `engine.data_order` and the
transform in `mrcnn_from_scratch.transform`), and raises AssertionError on the first case it gets wrong,
showing that input. The functions it expects:

    warmup_cosine(iteration: int, warmup_iters: int, total_iters: int, warmup_start: float) -> float
        the learning rate's factor before step `iteration` (0-based): a linear warm-up from warmup_start
        to 1 over the first warmup_iters steps, times a cosine that falls from 1 at step 0 to 0 at
        total_iters and stays 0 after it.
    scaled_lr(optimizer: str, lr: float, lr_batch: int, batch_size: int, processes: int) -> float
        the learning rate for batch_size images per process on `processes` processes: for "sgd", `lr` is
        the rate for lr_batch images per step, scaled linearly to the total batch; for "adamw", `lr` as is.
    iterations_for(epochs: int, images: int, batch_size: int, processes: int) -> int
        the number of steps of `epochs` passes over `images` training images, as `train` counts them:
        every process takes ceil(images / processes) images of each epoch, in batches of batch_size
        (the epoch's last batch may be smaller), and every epoch starts with a fresh batch.
    boxes_to_original(boxes: Tensor[N, 4], resized_size: (h, w), original_size: (h, w)) -> Tensor[N, 4]
        boxes (x1, y1, x2, y2) in the pixels of the resized image the model saw, in the original image's.
    training_step(model, images: list[Tensor[3, H, W]], targets: list[dict], optimizer, grad_clip: float)
        -> the model's loss dict: one step as `engine/train.py` takes it (forward, the sum of the losses,
        zero_grad, backward, clip the gradients' total norm, step), compared weight by weight.
"""
import math
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ..engine.data_order import ShuffledBatches
from ..engine.recipe import Recipe, default_lr
from ..engine.recipe import warmup_cosine as package_warmup_cosine
from ..transform import resize_boxes
from ._checking import Case, run_cases, tensor_problem


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _number_problem(received: Any, expected: float, what: str, rtol: float = 1e-9, atol: float = 1e-12) -> str | None:
    """None if `received` is a Python (or NumPy) number within rtol/atol of `expected`, else what is wrong."""
    if isinstance(received, Tensor):
        return f"{what} should be a Python float (use .item() or the math module), got a Tensor"
    if not _is_number(received):
        return f"{what} should be a number, got {type(received).__name__} {received!r}"
    if not math.isclose(float(received), expected, rel_tol=rtol, abs_tol=atol):
        return f"{what} should be {expected:.10g}, got {float(received):.10g}"
    return None


# ---------------------------------------------------------------------------- warm-up and cosine

def _schedule_case(name: str, iteration: int, warmup_iters: int, total_iters: int, warmup_start: float = 1e-3,
                   hint: str = "") -> Case:
    return Case(name, {"iteration": iteration, "warmup_iters": warmup_iters, "total_iters": total_iters,
                       "warmup_start": warmup_start}, hint)


def check_warmup_cosine(fn: Callable) -> bool:
    """Check fn(iteration, warmup_iters, total_iters, warmup_start) -> the learning rate's factor, a float."""
    both = ("factor = warm-up · cosine, with warm-up = warmup_start + (1 - warmup_start) · iteration / warmup_iters "
            "during the warm-up and 1 after it, and cosine = 0.5 · (1 + cos(π · iteration / total_iters))")
    cases = [
        _schedule_case("the first step", 0, 20, 300,
                       hint="the warm-up starts at warmup_start, not at 0: a rate of 0 would waste the step"),
        _schedule_case("half-way through the warm-up", 10, 20, 300,
                       hint="during the warm-up the cosine already counts: multiply the two, from step 0"),
        _schedule_case("the first step after the warm-up", 20, 20, 300,
                       hint="the cosine runs from step 0 over the whole run, not from the end of the warm-up"),
        _schedule_case("half-way through the run", 150, 20, 300, hint=both),
        _schedule_case("the last step", 299, 20, 300, hint=both),
        _schedule_case("at total_iters", 300, 20, 300, hint="the cosine reaches 0 at total_iters"),
        _schedule_case("past the end", 350, 20, 300,
                       hint="clamp the iteration at total_iters: cos would rise again after π"),
        _schedule_case("no warm-up", 5, 0, 100,
                       hint="warmup_iters = 0 means no warm-up (a factor of 1): do not divide by it"),
        _schedule_case("warmup_start = 0.1", 3, 10, 100, warmup_start=0.1, hint="use the warmup_start you are given"),
        _schedule_case("the r50 recipe: 1000 warm-up steps of 88716", 500, 1000, 88716, hint=both),
    ]

    def compare(received, expected, case):
        return _number_problem(received, expected, "the factor")

    return run_cases("check_warmup_cosine", fn, package_warmup_cosine, cases, compare)


# ------------------------------------------------------------------------- the linear scaling rule

def reference_scaled_lr(optimizer: str, lr: float, lr_batch: int, batch_size: int, processes: int) -> float:
    """`recipe.default_lr` for a recipe with this optimizer, rate and reference batch."""
    recipe = Recipe(optimizer=optimizer, lr=lr, batch_size=batch_size, weight_decay=0.0, warmup_iters=0,
                    grad_clip=0.0, lr_batch=lr_batch)
    return default_lr(recipe, batch_size * processes)


def _lr_case(name: str, optimizer: str, lr: float, lr_batch: int, batch_size: int, processes: int,
             hint: str = "") -> Case:
    return Case(name, {"optimizer": optimizer, "lr": lr, "lr_batch": lr_batch, "batch_size": batch_size,
                       "processes": processes}, hint)


def check_scaled_lr(fn: Callable) -> bool:
    """Check fn(optimizer, lr, lr_batch, batch_size, processes) -> the learning rate for that total batch."""
    linear = "for SGD: lr · total batch / lr_batch, where the total batch is batch_size · processes"
    cases = [
        _lr_case("SGD, the paper's 8 GPUs × 2 images", "sgd", 0.02, 16, 2, 8, linear),
        _lr_case("SGD on one GPU, 2 images", "sgd", 0.02, 16, 2, 1,
                 "an eighth of the images per step, an eighth of the rate"),
        _lr_case("SGD, 2 processes × 4 images", "sgd", 0.02, 16, 4, 2,
                 "every process computes a batch_size-image gradient, and DDP averages them: the step is one "
                 "of batch_size · processes images"),
        _lr_case("SGD, 32 images", "sgd", 0.02, 16, 8, 4, linear),
        _lr_case("SGD, a rate given for 8 images", "sgd", 0.01, 8, 3, 1, "divide by lr_batch, not by 16"),
        _lr_case("AdamW on one process", "adamw", 1e-3, 16, 8, 1,
                 "Adam divides each step by the gradients' own size, so its rate does not scale with the batch"),
        _lr_case("AdamW on 4 processes", "adamw", 1e-3, 16, 8, 4, "AdamW's rate is used as it is, for any batch"),
    ]

    def compare(received, expected, case):
        return _number_problem(received, expected, "the learning rate")

    return run_cases("check_scaled_lr", fn, reference_scaled_lr, cases, compare)


# ------------------------------------------------------------------------- iterations in epochs

def reference_iterations_for(epochs: int, images: int, batch_size: int, processes: int) -> int:
    """Steps of `epochs` epochs, as `train` computes them from ShuffledBatches.batches_per_epoch."""
    return epochs * ShuffledBatches(images, batch_size, seed=0, rank=0, world_size=processes).batches_per_epoch


def _iters_case(name: str, epochs: int, images: int, batch_size: int, processes: int, hint: str = "") -> Case:
    return Case(name, {"epochs": epochs, "images": images, "batch_size": batch_size, "processes": processes}, hint)


def check_iterations_for(fn: Callable) -> bool:
    """Check fn(epochs, images, batch_size, processes) -> int, the number of training steps."""
    per_epoch = ("steps per epoch = ceil(ceil(images / processes) / batch_size); the run has epochs times that")
    cases = [
        _iters_case("one epoch of the shapes data", 1, 2000, 8, 1, per_epoch),
        _iters_case("3 epochs of the shapes data", 3, 2000, 8, 1, per_epoch),
        _iters_case("a partial last batch", 1, 2001, 8, 1,
                    "the last batch of an epoch may be smaller, but it is a step: round up, not down"),
        _iters_case("3 epochs with a partial last batch", 3, 2001, 8, 1,
                    "every epoch ends with its own partial batch: count the steps of one epoch, then multiply"),
        _iters_case("2 processes", 1, 2000, 8, 2,
                    "each process takes its share of every epoch, so a step covers batch_size · processes images"),
        _iters_case("COCO's 1x schedule: 12 epochs, 8 GPUs × 2 images", 12, 118287, 2, 8, per_epoch),
        _iters_case("COCO on one GPU", 12, 118287, 2, 1, per_epoch),
        _iters_case("fewer images than a batch", 2, 5, 8, 1, "a small dataset still takes one step per epoch"),
        _iters_case("7 images on 4 processes, 2 each", 2, 7, 2, 4,
                    "each process takes ceil(7 / 4) = 2 images per epoch (the last process repeats one)"),
    ]

    def compare(received, expected, case):
        if not _is_int(received):
            return f"return the number of steps as an int, got {type(received).__name__} {received!r}"
        if received != expected:
            return f"expected {expected} steps, got {received}"
        return None

    return run_cases("check_iterations_for", fn, reference_iterations_for, cases, compare)


# ---------------------------------------------------------------------- boxes back to the image

def reference_boxes_to_original(boxes: Tensor, resized_size: tuple[int, int], original_size: tuple[int, int]) -> Tensor:
    """What the transform's postprocess does to the detections' boxes."""
    return resize_boxes(boxes, resized_size, original_size)


def _boxes_case(name: str, boxes: list[list[float]], resized_size: tuple[int, int], original_size: tuple[int, int],
                hint: str = "") -> Case:
    return Case(name, {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                       "resized_size": resized_size, "original_size": original_size}, hint)


def check_boxes_to_original(fn: Callable) -> bool:
    """Check fn(boxes Tensor[N, 4], resized_size (h, w), original_size (h, w)) -> Tensor[N, 4], in the original
    image's pixels."""
    ratios = "x1 and x2 scale by original width / resized width, y1 and y2 by original height / resized height"
    cases = [
        _boxes_case("480×640 resized to 800×1066 by the default transform",
                    [[100.0, 200.0, 400.5, 600.25], [0.0, 0.0, 1066.0, 800.0], [12.3, 45.6, 78.9, 101.1]],
                    (800, 1066), (480, 640),
                    "each side has its own ratio: 1066 is floor(640 · 800 / 480), so 640 / 1066 is not 480 / 800"),
        _boxes_case("a shapes image, unchanged at 128 px", [[10.0, 20.0, 50.0, 60.0], [64.5, 3.25, 127.0, 40.75]],
                    (128, 128), (128, 128), ratios),
        _boxes_case("a 192×256 image shown to the small model at 96×128",
                    [[10.0, 20.0, 50.0, 60.0], [64.5, 3.25, 127.0, 95.75]], (96, 128), (192, 256),
                    "the boxes are in the resized image's pixels: multiply by original / resized, "
                    "not resized / original"),
        _boxes_case("a portrait image, 640×480 seen at 1066×800",
                    [[100.0, 200.0, 400.0, 900.0], [5.0, 1000.0, 795.5, 1066.0]], (1066, 800), (640, 480),
                    "sizes are (height, width): x goes with the width, the second number"),
        _boxes_case("a 193×257 image seen at 799×1064", [[1.0, 2.0, 1063.0, 798.0], [500.0, 400.0, 520.5, 410.25]],
                    (799, 1064), (193, 257), ratios),
        _boxes_case("no detections", [], (800, 1066), (480, 640),
                    "an image without detections gives Tensor[0, 4]: keep the shape [N, 4]"),
    ]

    def compare(received, expected, case):
        return tensor_problem(received, expected, "the box tensor", rtol=1e-6, atol=1e-4)

    return run_cases("check_boxes_to_original", fn, reference_boxes_to_original, cases, compare)


# ---------------------------------------------------------------------------------- the training step

# A model small enough that a few steps take a fraction of a second: the small config, narrower, on 64 px.
_TINY = {"min_size": (64,), "max_size": 64, "width": 8, "fpn_channels": 16, "box_representation_size": 32,
         "mask_channels": 16}


class _AfterSteps(tuple):
    """(the losses each step returned, the parameters after the last step); prints short."""

    def __repr__(self) -> str:
        losses, parameters = self
        return f"losses {[_shown(step) for step in losses]}, then {len(parameters)} parameter tensors"


def _shown(losses: Any) -> Any:
    if isinstance(losses, dict):
        return {name: round(float(value.detach() if isinstance(value, Tensor) else value), 6)
                for name, value in losses.items()}
    return losses


def reference_training_step(model: torch.nn.Module, images: list[Tensor], targets: list[dict],
                            optimizer: torch.optim.Optimizer, grad_clip: float) -> dict[str, Tensor]:
    """One step as the engine takes it (`engine/train.py`, without DDP and AMP): forward in training mode,
    the sum of the five losses, gradients from zero, backward, the total gradient norm clipped to
    `grad_clip`, the optimizer's step. Returns the loss dict of the forward pass."""
    losses = model(images, targets)
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return losses


def _run_steps(step: Callable, steps: int, grad_clip: float, optimizer: str, lr: float, seed: int) -> _AfterSteps:
    """A fresh tiny model, its optimizer and two shapes images; `step` called `steps` times on them, all seeded."""
    from .. import MaskRCNN, small_config  # imported here: the model imports the whole package
    from ..data import image_rng, make_shapes_image

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MaskRCNN(small_config(4).replace(**_TINY)).train()
        # SGD's step is proportional to the gradient, so a missing clip or zero_grad shows in every weight;
        # AdamW, the small recipe's optimizer, normalizes the gradient away on the first step.
        if optimizer == "sgd":
            optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
        else:
            optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        images, targets = [], []
        for index in range(2):
            image, masks, labels = make_shapes_image(image_rng(seed, "train", index), 64)
            masks = torch.from_numpy(masks)
            rows, cols = masks.any(dim=2), masks.any(dim=1)
            boxes = torch.stack([torch.stack([c.nonzero().min(), r.nonzero().min(), c.nonzero().max() + 1,
                                              r.nonzero().max() + 1]) for r, c in zip(rows, cols)]).float()
            images.append(torch.from_numpy(image).permute(2, 0, 1).float() / 255)
            targets.append({"boxes": boxes, "labels": torch.from_numpy(labels).long(), "masks": masks})
        returned = []
        for _ in range(steps):
            torch.manual_seed(seed + len(returned))  # the samplers draw from it: the same draws for both
            returned.append(step(model, images, targets, optimizer, grad_clip))
    return _AfterSteps((returned, [p.detach().clone() for p in model.parameters()]))


def check_training_step(fn: Callable) -> bool:
    """Check fn(model, images, targets, optimizer, grad_clip) -> loss dict: one training step, as the engine's.

    Each case trains a fresh tiny model from a fixed seed for one or more steps with your function and
    with the engine's step, and compares the losses returned and every parameter afterwards.
    """
    order = ("losses = model(images, targets); optimizer.zero_grad(); sum(losses.values()).backward(); "
             "torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip); optimizer.step(); return losses")
    cases = [
        Case("one SGD step, clipping at 10 (the recipe's)",
             {"steps": 1, "grad_clip": 10.0, "optimizer": "sgd", "lr": 0.01, "seed": 0}, order),
        Case("one SGD step, clipping at 0.1: the clip decides the step",
             {"steps": 1, "grad_clip": 0.1, "optimizer": "sgd", "lr": 0.01, "seed": 1},
             "clip the gradients' total norm after backward() and before optimizer.step()"),
        Case("three SGD steps", {"steps": 3, "grad_clip": 10.0, "optimizer": "sgd", "lr": 0.01, "seed": 2},
             "zero the gradients every step, before backward(): otherwise each step adds the previous ones' in"),
        Case("three AdamW steps (the small recipe's optimizer), clipping at 1",
             {"steps": 3, "grad_clip": 1.0, "optimizer": "adamw", "lr": 1e-3, "seed": 3}, order),
    ]

    def run_learner(steps, grad_clip, optimizer, lr, seed):
        return _run_steps(fn, steps, grad_clip, optimizer, lr, seed)

    def run_reference(steps, grad_clip, optimizer, lr, seed):
        return _run_steps(reference_training_step, steps, grad_clip, optimizer, lr, seed)

    def compare(received, expected, case):
        losses, parameters = received
        for step, (got, want) in enumerate(zip(losses, expected[0]), start=1):
            if not isinstance(got, dict) or set(got) != set(want):
                return f"step {step}: return the model's loss dict {sorted(want)}, got {type(got).__name__}"
            for name in want:
                problem = tensor_problem(got[name].detach() if isinstance(got[name], Tensor) else got[name],
                                         want[name].detach(), f"step {step}'s {name}", rtol=1e-5, atol=1e-6)
                if problem:
                    return problem
        for index, (got, want) in enumerate(zip(parameters, expected[1])):
            if not torch.allclose(got, want, rtol=1e-4, atol=1e-6):
                return (f"after {len(losses)} step(s) the weights differ from the engine's (parameter tensor {index} "
                        f"of {len(parameters)}, largest difference {(got - want).abs().max().item():.3g})")
        return None

    return run_cases("check_training_step", run_learner, run_reference, cases, compare)
