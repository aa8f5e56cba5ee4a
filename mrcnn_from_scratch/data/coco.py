"""A Dataset over any COCO-format instances file: COCO 2017 itself, the shapes data, or an export from
an annotation tool (CVAT, labelme via labelme2coco, Roboflow, ...).

Each item is (image, target) in the form the model takes:
    image: float32 [3, H, W], RGB in [0, 1] (grayscale, palette and RGBA files are converted to RGB).
    target: boxes float32 [N, 4] (x1, y1, x2, y2) in pixels, labels int64 [N] in 1..K,
        masks uint8 [N, H, W], image_id int, area float32 [N], iscrowd int64 [N].

Crowd annotations (iscrowd = 1) mark a group of objects with one mask, such as a crowd of people. They
are left out of the targets: a crowd is not one instance to detect. (COCO's evaluation reads them from
the JSON itself, so leaving them out here does not change the scores.) `iscrowd` is therefore all zeros;
it is kept so that targets have the fields torchvision's detection models expect.

Annotations are checked when their image is loaded, not when the file is opened, so that opening COCO's
118k images stays quick; a bad one raises a DataError naming the image and the annotation. Boxes that
are empty once clipped to the image are dropped. The rules are those of `mrcnn_from_scratch.data.check`,
which applies them to a whole split at once (train does, before it starts).
"""
import contextlib
import io
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO

from .annotations import annotation_problem, empty_after_clipping, read_annotations
from .errors import DataError
from .images import load_image


class CocoInstances(torch.utils.data.Dataset):
    """Images and instance targets from a COCO-format JSON, read through pycocotools.

    Args:
        image_dir: the folder that the images' `file_name`s are relative to.
        ann_file: the instances JSON.
        transforms: optional callable (image, target) -> (image, target), applied last; see
            `mrcnn_from_scratch.data.transforms`.

    Category ids (which may have gaps, like COCO's 1..90) become contiguous labels 1..K in order of id;
    0 is the background. `categories` maps label -> name, `label_to_cat_id` and `cat_id_to_label` map
    between labels and the JSON's ids. Images without annotations are kept, with empty targets.
    """

    def __init__(self, image_dir: str | Path, ann_file: str | Path, transforms=None):
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.image_dir}")
        self.ann_file = Path(ann_file)
        dataset = read_annotations(ann_file)
        # Cheap checks of the whole file; every annotation is checked when its image is loaded.
        if not dataset["categories"]:
            raise DataError(f"{ann_file}: no categories")
        for key, noun in (("categories", "category"), ("images", "image")):
            ids = Counter(entry["id"] for entry in dataset[key])
            repeated = sorted(i for i, count in ids.items() if count > 1)
            if repeated:
                raise DataError(f"{ann_file}: {noun} ids {repeated[:10]} are used by more than one {noun}"
                                + ("; an image's annotations would be paired with another image's pixels"
                                   if key == "images" else ""))
        self.coco = COCO()
        self.coco.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            self.coco.createIndex()
        self.ids = sorted(self.coco.imgs)
        self.label_to_cat_id = {label: cat_id for label, cat_id in enumerate(sorted(self.coco.cats), start=1)}
        self.cat_id_to_label = {cat_id: label for label, cat_id in self.label_to_cat_id.items()}
        self.categories = {label: self.coco.cats[cat_id]["name"] for label, cat_id in self.label_to_cat_id.items()}
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        image = self._load_image(info)
        height, width = image.shape[1:]
        annotations = [ann for ann in self.coco.imgToAnns[image_id] if not ann.get("iscrowd", 0)]
        for ann in annotations:
            problem = annotation_problem(ann, info, self.cat_id_to_label.keys())
            if problem:
                raise DataError(f"image {image_id} ({info['file_name']}), annotation {ann.get('id')}: {problem}")
        annotations = [ann for ann in annotations if not empty_after_clipping(ann["bbox"], width, height)]
        target = {
            "boxes": self._boxes(annotations, height, width),
            "labels": torch.tensor([self.cat_id_to_label[a["category_id"]] for a in annotations], dtype=torch.int64),
            "masks": self._masks(annotations, height, width),
            "image_id": image_id,
            "area": torch.tensor([ann["area"] for ann in annotations], dtype=torch.float32),
            "iscrowd": torch.zeros(len(annotations), dtype=torch.int64),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _load_image(self, info: dict) -> torch.Tensor:
        """The image file as float32 [3, H, W] in [0, 1], checked against the JSON's height and width."""
        image = load_image(self.image_dir / info["file_name"], f"image {info['id']} ({info['file_name']})")
        if tuple(image.shape[1:]) != (info["height"], info["width"]):
            raise DataError(f"image {info['id']} ({info['file_name']}): the file is {image.shape[2]}×{image.shape[1]} "
                            f"but the JSON says {info['width']}×{info['height']}")
        return image

    @staticmethod
    def _boxes(annotations: list[dict], height: int, width: int) -> torch.Tensor:
        """COCO's [x, y, w, h] as float32 [N, 4] (x1, y1, x2, y2), clipped to the image."""
        boxes = torch.tensor([ann["bbox"] for ann in annotations], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        return boxes

    def _masks(self, annotations: list[dict], height: int, width: int) -> torch.Tensor:
        """uint8 [N, H, W] masks; pycocotools decodes polygons and both kinds of RLE."""
        if not annotations:
            return torch.zeros((0, height, width), dtype=torch.uint8)
        return torch.from_numpy(np.stack([self.coco.annToMask(ann) for ann in annotations]))


def collate_fn(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Batch (image, target) pairs as a list of images and a list of targets: images differ in size, so
    they cannot be stacked here (the model pads them into one tensor itself)."""
    images, targets = zip(*batch)
    return list(images), list(targets)
