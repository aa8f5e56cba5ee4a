"""The dataset layout every command expects, COCO 2017's:

    DIR/annotations/instances_{split}.json     the instances of the split, in COCO format
    DIR/{split}/                               its images (file names as in the JSON)

The shapes generator writes the splits `train` and `val`; COCO itself has `train2017` and `val2017`.
"""
from pathlib import Path

from ..data import CocoInstances
from .errors import UsageError


def split_paths(data_dir: str | Path, split: str) -> tuple[Path, Path]:
    """(image folder, annotation file) of `split`; UsageError naming the layout if either is missing."""
    data_dir = Path(data_dir)
    image_dir, ann_file = data_dir / split, data_dir / "annotations" / f"instances_{split}.json"
    missing = [str(p) for p in (ann_file, image_dir) if not p.exists()]
    if missing:
        raise UsageError(
            f"dataset split {split!r} not found: missing {' and '.join(missing)}.\n"
            f"A dataset folder must look like COCO's: {data_dir}/annotations/instances_{split}.json with the "
            f"images in {data_dir}/{split}/ (other split names: --train-split, --val-split, --split).\n"
            f"To make the shapes dataset: python -m mrcnn_from_scratch.data.shapes --out {data_dir}"
        )
    return image_dir, ann_file


def open_split(data_dir: str | Path, split: str) -> CocoInstances:
    """The split as a CocoInstances dataset (no augmentation)."""
    image_dir, ann_file = split_paths(data_dir, split)
    return CocoInstances(image_dir, ann_file)


def class_names_of(dataset: CocoInstances) -> tuple[str, ...]:
    """Names of labels 1..K, in label order: what MaskRCNNConfig.class_names holds."""
    return tuple(dataset.categories[label] for label in sorted(dataset.categories))
