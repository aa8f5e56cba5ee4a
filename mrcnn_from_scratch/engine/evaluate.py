"""COCO evaluation: the model's detections become COCO results, and pycocotools' COCOeval scores them.

    python -m mrcnn_from_scratch evaluate --checkpoint RUN/last.pt --data DIR [--split val] [--out FILE]

COCO AP averages precision over recall (101 points, each taking the best precision at that recall or
above), then over 10 IoU thresholds 0.50:0.05:0.95, then over the classes that have ground truth. The
same detections are scored twice: by box IoU ("bbox") and by mask IoU ("segm").

The JSON written (RUN/eval.json by default) has the keys "{bbox,segm}.{AP,AP50,AP75,APs,APm,APl,AR1,
AR10,AR100,ARs,ARm,ARl}" and "{bbox,segm}.AP/{class name}". As in COCOeval, -1 means "not defined":
no ground truth of that size or class.
"""
import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from ..data import CocoInstances, collate_fn
from ..data.check import validate_split
from .checkpoint import model_from_checkpoint
from .distributed import pick_device
from .errors import UsageError
from .layout import class_names_of, open_split, split_paths
from .outputs import check_output_file

# COCOeval.stats, in order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")


def detections_to_coco(detection: dict[str, torch.Tensor], image_id: int, label_to_cat_id: dict[int, int],
                       mask_threshold: float = 0.5) -> list[dict]:
    """One image's detections as COCO result dicts.

    Args:
        detection: the model's output for the image: boxes [D, 4] (x1, y1, x2, y2), labels [D], scores [D],
            masks [D, 1, H, W] probabilities.
        image_id: the image's id in the COCO file.
        label_to_cat_id: the dataset's contiguous label -> COCO category id.

    Returns one dict per detection: {"image_id", "category_id", "score", "bbox": [x, y, w, h],
    "segmentation": compressed RLE with "counts" as str}. A mask is the pixels whose probability is
    above `mask_threshold`.
    """
    boxes = detection["boxes"].detach().cpu().double()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    masks = (detection["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)
    # pycocotools encodes a Fortran-ordered [H, W, D] stack, column by column.
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0))) if len(masks) else []
    results = []
    for box, label, score, rle in zip(xywh, detection["labels"].tolist(), detection["scores"].tolist(), rles):
        segmentation = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
        results.append({"image_id": image_id, "category_id": label_to_cat_id[label], "score": score,
                        "bbox": box, "segmentation": segmentation})
    return results


def coco_metrics(coco_gt: COCO, results: list[dict], image_ids: list[int] | None = None,
                 verbose: bool = True) -> dict[str, float]:
    """Run COCOeval for bbox and segm on `results` (from detections_to_coco) and return the metrics.

    Args:
        coco_gt: the ground truth (CocoInstances.coco).
        results: the detections of the images in `image_ids`.
        image_ids: the images that were evaluated (default: all of coco_gt's); images without results
            count as images where nothing was detected.
        verbose: print COCOeval's tables and the AP per class.
    """
    image_ids = sorted(coco_gt.getImgIds()) if image_ids is None else sorted(image_ids)
    metrics = {}
    for iou_type in IOU_TYPES:
        # Each type gets only its own field: if a result has a box, loadRes takes the box's area as the
        # object's area, which would put masks in the wrong small/medium/large bins.
        other = "segmentation" if iou_type == "bbox" else "bbox"
        typed = [{k: v for k, v in copy.deepcopy(r).items() if k != other} for r in results]
        printing = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
        with printing:
            if verbose:
                print(f"\n{iou_type}:")
            evaluator = COCOeval(coco_gt, load_results(coco_gt, typed), iou_type)
            evaluator.params.imgIds = image_ids
            with contextlib.redirect_stdout(io.StringIO()):  # its progress messages, not its table
                evaluator.evaluate()
                evaluator.accumulate()
            evaluator.summarize()
            metrics.update({f"{iou_type}.{name}": float(v) for name, v in zip(STAT_NAMES, evaluator.stats)})
            per_class = ap_per_class(evaluator, coco_gt)
            metrics.update({f"{iou_type}.AP/{name}": ap for name, ap in per_class.items()})
            if verbose:
                print(f" AP per class ({iou_type}):")
                for name, ap in per_class.items():
                    print(f"   {name:<24} {ap:0.3f}")
    return metrics


def load_results(coco_gt: COCO, results: list[dict]) -> COCO:
    """COCO.loadRes, which fails on an empty list: with no detections, an empty result set instead,
    which COCOeval scores as AP 0 wherever there is ground truth."""
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes(results)
    empty = COCO()
    empty.dataset = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"],
                     "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        empty.createIndex()
    return empty


def ap_per_class(evaluator: COCOeval, coco_gt: COCO) -> dict[str, float]:
    """AP@[.5:.95] of each category (all areas, 100 detections), by name; -1 if it has no ground truth.

    evaluator.eval["precision"] is [T IoU thresholds, R recall points, K classes, A areas, M max-dets].
    """
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k]
        values = values[values > -1]
        per_class[coco_gt.cats[cat_id]["name"]] = float(values.mean()) if values.size else -1.0
    return per_class


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, dataset: CocoInstances, indices: list[int], device: torch.device,
                    batch_size: int = 8, workers: int = 0, progress: bool = False) -> list[dict]:
    """The model's detections on dataset[i] for i in `indices`, as COCO results. Leaves the model in
    eval mode."""
    model.eval()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size,
                                         num_workers=workers, collate_fn=collate_fn)
    results = []
    for images, targets in tqdm(loader, desc="evaluating", disable=not progress, leave=False):
        detections = model([image.to(device) for image in images])
        for detection, target in zip(detections, targets):
            results += detections_to_coco(detection, target["image_id"], dataset.label_to_cat_id)
    return results


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, split: str = "val", out: str | Path | None = None,
                        device: str = "auto", batch_size: int = 8, workers: int = 0) -> dict[str, float]:
    """The `evaluate` command: score a checkpoint on a split, print the tables, write the JSON.

    Returns the metrics; writes them to `out` (default: eval.json beside the checkpoint).
    """
    dataset = open_split(data, split)
    validate_split(dataset, training=False)  # a bad annotation stops it now, not after the predictions
    out = Path(out) if out is not None else Path(checkpoint).parent / "eval.json"
    check_output_file(out, inputs=[Path(checkpoint), *split_paths(data, split)])
    torch_device = pick_device(device)
    model = model_from_checkpoint(checkpoint, torch_device)
    if model.config.class_names != class_names_of(dataset):
        raise UsageError(f"the checkpoint was trained on the classes {list(model.config.class_names)}, "
                         f"but {data} ({split}) has {list(class_names_of(dataset))}")
    everything = list(range(len(dataset)))
    results = predict_dataset(model, dataset, everything, torch_device, batch_size, workers, progress=True)
    print(f"{len(results)} detections on {len(dataset)} images of {data} ({split})")
    metrics = coco_metrics(dataset.coco, results, dataset.ids)
    out.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"\nmask AP {metrics['segm.AP']:.3f} (AP50 {metrics['segm.AP50']:.3f}), "
          f"box AP {metrics['bbox.AP']:.3f}; written to {out}")
    return metrics
