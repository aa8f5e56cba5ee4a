"""The command line: `python -m mrcnn_from_scratch {train,evaluate,predict} ...` (--help on each).

Datasets follow COCO's layout: DIR/annotations/instances_{split}.json and the images in DIR/{split}/.
"""
import argparse
import ast
import math

from .config import CHOICES, CONFIGS, MaskRCNNConfig
from .data.errors import DataError
from .engine.distributed import ProcessLost
from .engine.errors import TrainingDiverged, UsageError
from .engine.evaluate import evaluate_checkpoint
from .engine.outputs import check_output_folder
from .engine.predict import predict_images
from .engine.recipe import DEFAULT_ITERS, RECIPES
from .engine.train import TrainOptions, train

EXAMPLES = """examples:
  python -m mrcnn_from_scratch.data.shapes --out datasets/shapes     # make the shapes dataset
  python -m mrcnn_from_scratch train --data datasets/shapes --out runs/shapes
  python -m mrcnn_from_scratch evaluate --checkpoint runs/shapes/last.pt --data datasets/shapes
  python -m mrcnn_from_scratch predict --checkpoint runs/shapes/last.pt datasets/shapes/val/000000.png --out pictures
  python -m mrcnn_from_scratch train --data datasets/mine --out runs/mine --init runs/shapes/last.pt   # fine-tune
  python -m mrcnn_from_scratch train --data DIR --out RUN --config r50 --backbone-weights resnet50-0676ba61.pth
  torchrun --standalone --nproc_per_node=2 -m mrcnn_from_scratch train --data DIR --out RUN   # DDP
  torchrun --nnodes=2 --nproc-per-node=N --rdzv-backend=c10d --rdzv-endpoint=HOST:29400 --rdzv-id=RUN \\
      -m mrcnn_from_scratch train --data DIR --out RUN --resume         # on each of 2 machines (README)
  python -m mrcnn_from_scratch.data.check DIR --split train                     # list a dataset's problems
"""


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_overrides(pairs: list[str]) -> dict:
    """["min_size=(64,)", "norm=gn", ...] -> {"min_size": (64,), "norm": "gn"}: MaskRCNNConfig fields.

    Values are read as Python literals (a word that is not one is a string); lists become tuples, and a
    single number given for a tuple field (min_size=64) becomes a tuple of one.
    """
    defaults = MaskRCNNConfig().to_dict()
    overrides = {}
    for pair in pairs:
        name, equals, text = pair.partition("=")
        if not equals or name not in defaults or name in ("num_classes", "class_names"):
            fields = ", ".join(f for f in defaults if f not in ("num_classes", "class_names"))
            raise UsageError(f"--set {pair}: expected FIELD=VALUE with a MaskRCNNConfig field: {fields}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        if isinstance(value, list):
            value = tuple(value)
        if isinstance(defaults[name], tuple) and not isinstance(value, tuple):
            value = (value,)
        problem = value_problem(name, value, defaults[name])
        if problem:
            raise UsageError(f"--set {pair}: {problem}")
        overrides[name] = value
    return overrides


def value_problem(name: str, value, default) -> str | None:
    """What is wrong with `value` for the config field `name` whose default is `default`, or None.

    Checked before anything runs, so that a typo fails in a second rather than at the first step.
    """
    def is_number(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if isinstance(default, tuple):
        wrong = [x for x in value if not (is_number(x) and x > 0)]
        if wrong or not value:
            return f"expected positive numbers, such as {default}"
        # One anchor size per pyramid level (P2–P6), one mean and std per colour channel.
        if name in ("anchor_sizes", "image_mean", "image_std") and len(value) != len(default):
            return f"expected {len(default)} numbers, such as {default}"
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "expected True or False"
    if isinstance(default, int):
        least = 0 if name == "trainable_stages" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            return f"expected a whole number of at least {least}, such as {default}"
        return None
    if isinstance(default, float):
        if name.endswith(("_thresh", "_fraction")):  # IoUs, scores and fractions
            return None if is_number(value) and 0 <= value <= 1 else f"expected a number from 0 to 1, such as {default}"
        return None if is_number(value) and value >= 0 else f"expected a number of at least 0, such as {default}"
    if name in CHOICES:
        return None if value in CHOICES[name] else f"expected one of {', '.join(CHOICES[name])}"
    return None if isinstance(value, str) else f"expected a word, such as {default}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mrcnn_from_scratch", epilog=EXAMPLES,
                                     description="Train, evaluate and run Mask R-CNN from scratch.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,predict}")
    small, r50, finetune = RECIPES["small"], RECIPES["r50"], RECIPES["finetune"]
    devices = ["auto", "cpu", "cuda"]

    train = commands.add_parser(
        "train", help="train a model, writing RUN/last.pt, metrics.jsonl and loss.png",
        description="Train Mask R-CNN on a COCO-layout dataset. Options left out take the config's recipe "
                    "(mrcnn_from_scratch/engine/recipe.py), or with --resume the run's own settings.")
    train.add_argument("--data", required=True, help="dataset folder: DIR/annotations/instances_{split}.json, DIR/{split}/")
    train.add_argument("--out", required=True, help="run folder for last.pt, metrics.jsonl, loss.png")
    train.add_argument("--config", choices=list(CONFIGS),
                       help="small: ResNet-18-GN for 128-px images on a CPU (default); r50: torchvision's ResNet-50-FPN "
                            "(needs --backbone-weights)")
    start = train.add_mutually_exclusive_group()
    start.add_argument("--init", metavar="FILE",
                       help="fine-tune: start from RUN/last.pt or torchvision's COCO maskrcnn_resnet50_fpn weights, "
                            "with their architecture; class layers are re-made if the classes differ "
                            f"(recipe: AdamW {finetune.lr}, {finetune.iters} iterations)")
    start.add_argument("--backbone-weights", metavar="FILE",
                       help="start the ResNet body from torchvision's ImageNet weights (resnet18/34/50/101-*.pth)")
    train.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                       help="change config fields, e.g. --set min_size=256 max_size=256")
    train.add_argument("--device", choices=devices, default="auto", help="default: cuda if there is a GPU")
    train.add_argument("--amp", action="store_true", help="mixed precision (float16 autocast), CUDA only")
    train.add_argument("--compile", action="store_true",
                       help="torch.compile the backbone and the heads (pays on a GPU; the first steps compile)")
    length = train.add_mutually_exclusive_group()
    length.add_argument("--iters", type=positive_int, help=f"iterations (small: {DEFAULT_ITERS})")
    length.add_argument("--epochs", type=positive_int, help=f"passes over the training set (r50: {r50.epochs})")
    train.add_argument("--batch-size", type=positive_int,
                       help=f"images per step and process (small: {small.batch_size}, r50: {r50.batch_size})")
    train.add_argument("--lr", type=positive_float,
                       help=f"peak learning rate (small: AdamW, {small.lr}; r50: SGD, {r50.lr} per {r50.lr_batch} images)")
    train.add_argument("--photometric", action="store_true", default=None,
                       help="colour augmentation (brightness, contrast, saturation, hue) for real photographs")
    train.add_argument("--workers", type=non_negative_int, default=2,
                       help="data-loading processes (default: 2)")
    train.add_argument("--threads", type=positive_int, default=1,
                       help="CPU threads for PyTorch's operators (default: 1; see TrainOptions.threads)")
    train.add_argument("--seed", type=non_negative_int,
                       help="seed of the weights, data order and sampling (default: 0)")
    train.add_argument("--resume", action="store_true", help="continue RUN/last.pt exactly (or start, if there is none)")
    train.add_argument("--train-split", help="default: train (COCO: train2017)")
    train.add_argument("--val-split", default="val", help="default: val (COCO: val2017)")
    train.add_argument("--val-every", type=non_negative_int,
                       help=f"validate every N iterations, 0: only at the end (small: {small.val_every})")
    train.add_argument("--checkpoint-every", type=positive_int,
                       help=f"write last.pt every N iterations and at the end (small: {small.checkpoint_every})")
    train.add_argument("--log-every", type=positive_int, default=1, help="a metrics.jsonl line every N iterations")

    evaluate = commands.add_parser("evaluate", help="COCO AP (bbox and segm) of a checkpoint on a split",
                                   description="Print pycocotools' tables and AP per class; write them as JSON.")
    evaluate.add_argument("--checkpoint", required=True, help="RUN/last.pt")
    evaluate.add_argument("--data", required=True, help="dataset folder (COCO layout)")
    evaluate.add_argument("--split", default="val", help="default: val")
    evaluate.add_argument("--out", help="JSON file (default: eval.json beside the checkpoint)")
    evaluate.add_argument("--device", choices=devices, default="auto")
    evaluate.add_argument("--batch-size", type=positive_int, default=8)
    evaluate.add_argument("--workers", type=non_negative_int, default=0)

    predict = commands.add_parser("predict", help="draw a model's detections on images, one PNG each",
                                  description="Draw masks, boxes, class names and scores into OUT/<image name>.png.")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    weights = predict.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="RUN/last.pt")
    weights.add_argument("--torchvision-weights", metavar="FILE", help="torchvision's COCO maskrcnn_resnet50_fpn "
                         "weights, e.g. maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth")
    predict.add_argument("--out", required=True, help="folder for the pictures")
    predict.add_argument("--score-thresh", type=float, default=0.5, help="draw detections scoring at least this")
    predict.add_argument("--device", choices=devices, default="auto")
    for command in (train, evaluate, predict):
        command.add_argument("--debug", action="store_true",
                             help="show the traceback of an error, not just its one-line message")
    return parser


def run(args: argparse.Namespace) -> None:
    if args.command == "train":
        options = {k: v for k, v in vars(args).items() if k not in ("command", "set", "debug")}
        check_output_folder(args.out)
        train(TrainOptions(**options, config_overrides=parse_overrides(args.set) or None))
    elif args.command == "evaluate":
        evaluate_checkpoint(args.checkpoint, args.data, args.split, args.out, args.device, args.batch_size,
                            args.workers)
    else:
        predict_images(args.images, args.out, args.checkpoint, args.torchvision_weights, args.score_thresh,
                       args.device)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run(args)
    except (UsageError, DataError) as error:
        if args.debug:
            raise
        message = error.line if isinstance(error, DataError) else error
        parser.exit(2, f"{parser.prog} {args.command}: error: {message}\n")
    except (TrainingDiverged, ProcessLost) as error:
        if args.debug:
            raise
        parser.exit(1, f"{parser.prog} {args.command}: {error}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{parser.prog} {args.command}: interrupted"
                    + (" (train --resume continues from the last checkpoint)\n" if args.command == "train" else "\n"))


if __name__ == "__main__":
    main()
