"""What defines a training run, and what its model starts from.

The options of `train` (TrainOptions) become the run's settings (RUN_SETTINGS): a new run takes them from
the options, then the recipe (recipe.py); --resume takes them from the checkpoint. The settings then give
the model's config (the named config, or the architecture of the --init file) and its first weights
(random, the --init file's, or an ImageNet backbone's; see pretrained.py).
"""
from dataclasses import dataclass
from pathlib import Path

from ..config import CONFIGS, MaskRCNNConfig
from ..model import MaskRCNN
from ..pretrained import load_backbone_weights, load_pretrained, pretrained_config
from .data_order import ShuffledBatches
from .errors import UsageError
from .recipe import RECIPES, default_lr

# The settings that define a run. A new run takes them from the options, then the recipe; --resume takes
# them from the checkpoint, and refuses options that contradict them.
RUN_SETTINGS = ("config", "config_overrides", "iters", "epochs", "batch_size", "lr", "seed", "train_split", "init",
                "backbone_weights", "photometric")


@dataclass
class TrainOptions:
    """The command's options; None means "the recipe's default" (or, when resuming, "the run's")."""

    data: str | Path
    out: str | Path
    config: str | None = None  # "small" (the default) or "r50"; with `init`, the architecture is the file's
    init: str | None = None  # start from this checkpoint of ours or torchvision COCO state dict (fine-tuning)
    backbone_weights: str | None = None  # start the ResNet body from torchvision's ImageNet weights
    photometric: bool | None = None  # colour augmentation for real photographs (data/transforms.py)
    config_overrides: dict | None = None  # MaskRCNNConfig fields to change, e.g. {"min_size": (64,)}
    device: str = "auto"
    amp: bool = False  # mixed precision (float16 autocast and a GradScaler), CUDA only
    compile: bool = False  # torch.compile the model's dense parts (MaskRCNN.compile_dense_parts)
    iters: int | None = None
    epochs: int | None = None
    batch_size: int | None = None  # per process
    lr: float | None = None
    workers: int = 2  # data-loading processes
    # PyTorch's CPU threads during training. One by default: the small model's operators are too small to
    # gain much from a second thread (0.55 -> 0.42 s per step of 8 images on a quiet 2-core CPU), and when
    # any other program keeps a core busy, threads that wait for each other make every step many times
    # slower (11.4 s per step, against 0.62 s on one thread, on that machine with a notebook running).
    threads: int = 1
    seed: int | None = None  # 0 by default
    resume: bool = False
    train_split: str | None = None  # "train" by default
    val_split: str = "val"
    val_every: int | None = None  # 0: validate only at the end
    checkpoint_every: int | None = None
    log_every: int = 1  # write a metrics line every so many iterations


def resolve_settings(options: TrainOptions, stored: dict | None, dataset_size: int, world_size: int) -> dict:
    """The run's settings (RUN_SETTINGS): from the checkpoint when resuming, else options and recipe."""
    if stored is not None:
        conflicts = [f"{name} {getattr(options, name)!r} (the run has {stored.get(name)!r})" for name in RUN_SETTINGS
                     if getattr(options, name) is not None and getattr(options, name) != stored.get(name)]
        if conflicts:
            raise UsageError("--resume continues a run with its own settings, but these options differ: "
                             + "; ".join(conflicts))
        return {name: stored.get(name) for name in RUN_SETTINGS}  # older runs lack the newer settings
    if options.init and options.config:
        raise UsageError("--init takes the architecture from its file: leave out --config (use --set to change "
                         "sizes and thresholds)")
    if options.init and options.backbone_weights:
        raise UsageError("--init loads the whole model, backbone included: give --init or --backbone-weights")
    config = "finetune" if options.init else options.config or "small"
    if config not in RECIPES:
        raise UsageError(f"unknown config {config!r} (known: {', '.join(CONFIGS)})")
    if options.iters is not None and options.epochs is not None:
        raise UsageError("give --iters or --epochs, not both")
    recipe = RECIPES[config]
    batch_size = options.batch_size or recipe.batch_size
    batches_per_epoch = ShuffledBatches(dataset_size, batch_size, 0, 0, world_size).batches_per_epoch
    epochs = options.epochs or (recipe.epochs if options.iters is None else None)
    iters = options.iters or (epochs * batches_per_epoch if epochs else recipe.iters)
    return {"config": config, "config_overrides": dict(options.config_overrides or {}), "iters": iters,
            "epochs": epochs, "batch_size": batch_size, "lr": options.lr or default_lr(recipe, batch_size * world_size),
            "seed": 0 if options.seed is None else options.seed, "train_split": options.train_split or "train",
            "init": str(options.init) if options.init else None,
            "backbone_weights": str(options.backbone_weights) if options.backbone_weights else None,
            "photometric": bool(options.photometric)}


def build_config(settings: dict, class_names: tuple[str, ...]) -> MaskRCNNConfig:
    """The config for these classes: the --init file's architecture, else the named config; then the
    settings' overrides. Refuses a config that cannot learn from random weights."""
    try:
        if settings["init"]:
            config = pretrained_config(settings["init"], class_names)
        else:
            config = CONFIGS[settings["config"]](len(class_names) + 1, class_names)
    except (OSError, ValueError) as error:
        raise UsageError(str(error)) from None
    try:
        config = config.replace(**settings["config_overrides"])
    except TypeError:
        fields = ", ".join(f for f in config.to_dict() if f not in ("num_classes", "class_names"))
        raise UsageError(f"unknown config field in {settings['config_overrides']}; the fields are: {fields}") from None
    except ValueError as error:  # a value the config refuses, such as two switches that do not combine
        raise UsageError(f"--set: {error}") from None
    random_body = not settings["init"] and not settings["backbone_weights"]
    if random_body and (config.norm == "frozen_bn" or config.trainable_stages < 5):
        raise UsageError(
            f"the {settings['config']} config freezes part of the backbone (norm={config.norm}, trainable_stages="
            f"{config.trainable_stages}), which only makes sense with pretrained weights. Frozen BatchNorm keeps the "
            "statistics it was given; from random weights those are mean 0 and variance 1, so it does nothing, and "
            "frozen stages stay random forever. Either start from weights (--backbone-weights resnet50-*.pth, or "
            "--init FILE) or train everything from scratch with --set norm=gn trainable_stages=5")
    return config


def load_initial_weights(model: MaskRCNN, settings: dict, verbose: bool) -> None:
    """Load --init or --backbone-weights into a new run's model; print what was loaded if `verbose`."""
    try:
        if settings["init"]:
            report = load_pretrained(model, settings["init"])
        elif settings["backbone_weights"]:
            report = load_backbone_weights(model, settings["backbone_weights"])
        else:
            return
    except (OSError, KeyError, ValueError) as error:
        raise UsageError(str(error)) from None
    if verbose:
        print(report)
