"""How each config is trained by default: optimizer, learning rate, batch, schedule and budget.

Every default of `python -m mrcnn_from_scratch train` that is a choice of recipe lives here, so that
tuning the recipe means editing this file only. Command-line options override single fields.
"""
import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

# The default budget of the small config on a CPU: `make train` trains this many iterations, sized to
# fit its 10 minutes on a 2-core CPU with room to spare. docs/benchmarks.md has the measured times of
# this budget and of the longer and shorter ones tried. Steps get slower as a run goes on: the trained
# RPN finds the objects, so more RoIs are positive and the mask branch has more to do.
DEFAULT_ITERS = 1500


@dataclass(frozen=True)
class Recipe:
    optimizer: str  # "adamw" or "sgd"
    lr: float  # for sgd: at `lr_batch` images per step, scaled linearly to the real batch
    batch_size: int  # images per step and per process
    weight_decay: float
    warmup_iters: int  # linear warm-up from 0.1% of the rate, then a cosine decay to 0
    grad_clip: float  # the gradients' total L2 norm is clipped to this
    iters: int | None = None  # default length, in iterations ...
    epochs: int | None = None  # ... or in passes over the training set
    val_every: int = 0  # validate every so many iterations (0: only at the end)
    checkpoint_every: int = 100  # write RUN/last.pt every so many iterations (and at the end)
    lr_batch: int = 16


RECIPES = {
    # AdamW: training from random init for a few hundred steps, with no pretrained weights to keep,
    # needs an optimizer that gives every parameter a sensible step size at once; Adam's per-parameter
    # normalization does that without tuning a rate per head. Its rate does not scale with the batch.
    # 4 images per step: with a fixed budget of CPU time, more, smaller steps beat fewer, larger ones,
    # although a step of 4 costs a little more per image (docs/benchmarks.md, "Steps of 4 beat steps of 8").
    "small": Recipe(optimizer="adamw", lr=1e-3, batch_size=4, weight_decay=1e-4, warmup_iters=20,
                    grad_clip=10.0, iters=DEFAULT_ITERS, val_every=500, checkpoint_every=100),
    # SGD with momentum at the paper's rate for ResNet-50-FPN, 0.02 at 16 images per step (8 GPUs × 2),
    # for 12 epochs of COCO, the length of the paper's "1x" schedule. The schedule is not the paper's: the
    # paper divides the rate by 10 at two fixed iterations (steps), this recipe warms up for 1,000 steps
    # and then follows a cosine to 0. SGD keeps the least optimizer state (one buffer per parameter
    # against Adam's two), which matters for a large model on a GPU. It needs a pretrained backbone
    # (--backbone-weights or --init): its frozen BatchNorm and frozen stem and C2 learn nothing.
    "r50": Recipe(optimizer="sgd", lr=0.02, batch_size=2, weight_decay=1e-4, warmup_iters=1000,
                  grad_clip=10.0, epochs=12, val_every=10000, checkpoint_every=1000),
    # Fine-tuning (train --init): the weights already work, so a short schedule is enough, a few hundred
    # steps on a small dataset. The rate stays the small recipe's: on 50 polygon images, 100 steps from a
    # shapes model reached mask AP 0.252 at 1e-3, 0.175 at 3e-4 and 0.087 at 1e-4 (docs/benchmarks.md);
    # the re-made class layers start from scratch and need the larger steps. For a large model trained
    # on much data, such as torchvision's COCO weights, a lower rate (--lr 1e-4) is the usual choice.
    "finetune": Recipe(optimizer="adamw", lr=1e-3, batch_size=4, weight_decay=1e-4, warmup_iters=20,
                       grad_clip=10.0, iters=300, val_every=100, checkpoint_every=100),
}


def default_lr(recipe: Recipe, total_batch: int) -> float:
    """The learning rate for `total_batch` images per step (all processes together).

    SGD follows the linear scaling rule (Goyal et al., 2017): twice the images, twice the rate. AdamW
    normalizes its steps by the gradients' own size, so its rate is used as it is.
    """
    if recipe.optimizer == "sgd":
        return recipe.lr * total_batch / recipe.lr_batch
    return recipe.lr


def build_optimizer(recipe: Recipe, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """The recipe's optimizer over the trainable parameters (frozen stages have requires_grad=False)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r} (known: adamw, sgd)")


def warmup_cosine(iteration: int, warmup_iters: int, total_iters: int, warmup_start: float = 1e-3) -> float:
    """The learning rate's factor before step `iteration` (0-based): a linear warm-up times a cosine.

    Warm-up: the factor grows linearly from `warmup_start` to 1 over `warmup_iters` steps, so the first
    steps, whose gradients from random heads are large and erratic, do not throw the weights far.
    Cosine: the factor then falls smoothly to 0 at `total_iters`, so the last steps fine-tune.
    """
    warmup = 1.0 if iteration >= warmup_iters else warmup_start + (1 - warmup_start) * iteration / warmup_iters
    return warmup * 0.5 * (1 + math.cos(math.pi * min(iteration, total_iters) / total_iters))


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, total_iters: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR with `warmup_cosine`: call `.step()` once after each optimizer step."""
    factor = partial(warmup_cosine, warmup_iters=recipe.warmup_iters, total_iters=total_iters)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
