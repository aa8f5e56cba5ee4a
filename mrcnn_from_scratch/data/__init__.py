"""Chapter 00's data: the synthetic shapes generator and a Dataset for any COCO-format instances file.

Augmentation lives in `mrcnn_from_scratch.data.transforms`. It needs torchvision, so it is not imported
here: the rest of the package works without torchvision.
"""
from .coco import CocoInstances, collate_fn

_SHAPES_NAMES = ("CATEGORIES", "generate_shapes_dataset", "generate_split", "image_rng", "make_shapes_image")


def __getattr__(name: str):
    # The shapes module is imported on first use, not above: `python -m mrcnn_from_scratch.data.shapes`
    # imports this package before running the module, and runpy warns if the package had imported it.
    if name in _SHAPES_NAMES:
        from . import shapes

        return getattr(shapes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CocoInstances", "collate_fn", *_SHAPES_NAMES]
