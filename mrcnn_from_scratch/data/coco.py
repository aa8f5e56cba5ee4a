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
118k images stays quick; a bad one raises an error naming the image and the annotation.
"""
import contextlib
import io
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO

# How far (in pixels) a box may stick out of its image: exporters round coordinates, so a box often ends
# a fraction of a pixel past the edge. Such boxes are clipped to the image.
BOX_TOLERANCE = 1.0


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
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            self.coco = COCO(str(ann_file))
        # Cheap checks of the whole file; every annotation is checked when its image is loaded.
        if not self.coco.cats:
            raise ValueError(f"{ann_file}: no categories")
        if len(self.coco.cats) != len(self.coco.dataset["categories"]):
            raise ValueError(f"{ann_file}: two categories share an id")
        image_ids = Counter(image["id"] for image in self.coco.dataset.get("images", []))
        repeated = sorted(image_id for image_id, count in image_ids.items() if count > 1)
        if repeated:
            raise ValueError(f"{ann_file}: image ids {repeated[:10]} are used by more than one image; "
                             "an image's annotations would be paired with another image's pixels")
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
            self._check(ann, info)
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
        path = self.image_dir / info["file_name"]
        if not path.is_file():
            raise FileNotFoundError(f"image {info['id']} ({info['file_name']}): file not found: {path}")
        try:
            with Image.open(path) as file:
                pixels = np.array(file.convert("RGB"))  # a writable copy, for torch.from_numpy
        except (OSError, SyntaxError, ValueError) as error:  # PIL's errors for empty, truncated, corrupt files
            raise ValueError(f"image {info['id']} ({info['file_name']}): cannot decode {path}: {error}") from None
        if pixels.shape[:2] != (info["height"], info["width"]):
            raise ValueError(
                f"image {info['id']} ({info['file_name']}): the file is {pixels.shape[1]}×{pixels.shape[0]} "
                f"but the JSON says {info['width']}×{info['height']}"
            )
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous().float() / 255

    def _check(self, ann: dict, info: dict) -> None:
        """Raise ValueError, naming the image and the annotation, if `ann` cannot become a target."""
        where = f"image {info['id']} ({info['file_name']}), annotation {ann.get('id')}"
        if ann.get("category_id") not in self.cat_id_to_label:
            known = sorted(self.cat_id_to_label)
            raise ValueError(f"{where}: unknown category id {ann.get('category_id')} (the file has {known})")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise ValueError(f"{where}: bbox must be [x, y, w, h], got {bbox}")
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            raise ValueError(f"{where}: box {ann['bbox']} has width or height <= 0")
        width, height = info["width"], info["height"]
        tol = BOX_TOLERANCE
        if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
            raise ValueError(f"{where}: box {ann['bbox']} (x, y, w, h) lies outside the {width}×{height} image")
        segmentation = ann.get("segmentation")
        if isinstance(segmentation, list):  # polygons [x1, y1, x2, y2, ...], one per part of the object
            if not segmentation:
                raise ValueError(f"{where}: empty list of polygons")
            for polygon in segmentation:
                if len(polygon) < 6 or len(polygon) % 2:
                    raise ValueError(f"{where}: a polygon needs at least 3 (x, y) points, got {len(polygon)} numbers")
        elif isinstance(segmentation, dict):  # run-length encoded, compressed (str) or not (list of counts)
            if list(segmentation.get("size", [])) != [height, width]:
                raise ValueError(f"{where}: RLE size {segmentation.get('size')} is not the image's [{height}, {width}]")
        else:
            raise ValueError(f"{where}: segmentation must be polygons or RLE, got {type(segmentation).__name__}")

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
