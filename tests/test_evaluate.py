"""COCO evaluation on hand-built detections whose AP is known, and the conversion to COCO results."""
import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mrcnn_from_scratch.data import CocoInstances, generate_shapes_dataset
from mrcnn_from_scratch.engine.evaluate import STAT_NAMES, coco_metrics, detections_to_coco

SIZE = 40


def rectangle_mask(x1: int, y1: int, x2: int, y2: int) -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE)
    mask[y1:y2, x1:x2] = 1
    return mask


def ground_truth(boxes: list[tuple[int, int, int, int]], category_ids: list[int]) -> COCO:
    """One SIZE × SIZE image whose objects are the rectangles `boxes` (x1, y1, x2, y2); categories 1
    ("square") and 7 ("circle"), an id with a gap before it, as COCO has."""
    annotations = []
    for i, ((x1, y1, x2, y2), cat_id) in enumerate(zip(boxes, category_ids), start=1):
        rle = mask_utils.encode(np.asfortranarray(rectangle_mask(x1, y1, x2, y2).numpy().astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        annotations.append({"id": i, "image_id": 1, "category_id": cat_id, "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "area": (x2 - x1) * (y2 - y1), "segmentation": rle, "iscrowd": 0})
    coco = COCO()
    coco.dataset = {"images": [{"id": 1, "width": SIZE, "height": SIZE, "file_name": "a.png"}],
                    "annotations": annotations,
                    "categories": [{"id": 1, "name": "square"}, {"id": 7, "name": "circle"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


LABEL_TO_CAT_ID = {1: 1, 2: 7}


def detections(boxes: list[tuple[int, int, int, int]], labels: list[int], scores: list[float]) -> dict:
    """Model-style output: rectangles as boxes and as mask probabilities (1 inside, 0.2 outside)."""
    masks = [rectangle_mask(*box) * 0.8 + 0.2 for box in boxes]
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.int64),
            "scores": torch.tensor(scores), "masks": torch.stack(masks)[:, None] if masks else torch.zeros(0, 1, SIZE, SIZE)}


def test_conversion_to_coco_results():
    (result,) = detections_to_coco(detections([(3, 4, 13, 20)], [2], [0.75]), image_id=9, label_to_cat_id=LABEL_TO_CAT_ID)
    assert result["image_id"] == 9 and result["category_id"] == 7 and result["score"] == 0.75
    assert result["bbox"] == [3.0, 4.0, 10.0, 16.0]  # x, y, w, h
    assert isinstance(result["segmentation"]["counts"], str)  # JSON-ready
    # The mask is thresholded at 0.5: the 0.2 background is out, the rectangle in.
    decoded = mask_utils.decode({**result["segmentation"], "counts": result["segmentation"]["counts"].encode()})
    assert np.array_equal(decoded, rectangle_mask(3, 4, 13, 20).numpy().astype(np.uint8))
    assert detections_to_coco(detections([], [], []), 9, LABEL_TO_CAT_ID) == []


def test_perfect_predictions_score_1():
    gt_boxes = [(2, 2, 12, 12), (20, 20, 36, 30), (5, 25, 15, 38)]
    coco = ground_truth(gt_boxes, [1, 1, 7])
    results = detections_to_coco(detections(gt_boxes, [1, 1, 2], [1.0, 1.0, 1.0]), 1, LABEL_TO_CAT_ID)
    metrics = coco_metrics(coco, results, verbose=False)
    for iou_type in ("bbox", "segm"):
        for name in ("AP", "AP50", "AP75", "AR100", "AP/square", "AP/circle"):
            assert metrics[f"{iou_type}.{name}"] == pytest.approx(1.0)
        assert metrics[f"{iou_type}.APl"] == -1  # no object is large (over 96²): undefined, as COCO says


def test_perfect_predictions_on_shapes_data(tmp_path):
    # Real masks and boxes: the dataset's own targets, handed back as detections with score 1.
    generate_shapes_dataset(tmp_path, train=0, val=4, size=64, seed=0, progress=False)
    dataset = CocoInstances(tmp_path / "val", tmp_path / "annotations" / "instances_val.json")
    results = []
    for image, target in dataset:
        detection = {"boxes": target["boxes"], "labels": target["labels"], "scores": torch.ones(len(target["labels"])),
                     "masks": target["masks"][:, None].float()}
        results += detections_to_coco(detection, target["image_id"], dataset.label_to_cat_id)
    metrics = coco_metrics(dataset.coco, results, dataset.ids, verbose=False)
    assert metrics["segm.AP"] == pytest.approx(1.0) and metrics["bbox.AP"] == pytest.approx(1.0)


def test_one_hit_one_miss_and_a_higher_scored_false_positive():
    # Two squares; the detections, best score first: a false positive far from both (score 0.9), then
    # an exact match of the first square (0.6). The second square is never found.
    #   after detection 1: TP 0, FP 1 -> precision 0,   recall 0
    #   after detection 2: TP 1, FP 1 -> precision 1/2, recall 1/2
    # COCO first makes precision non-increasing from the right (so 1/2 at both), then reads it at the
    # 101 recall points 0, 0.01, ..., 1: the 51 points r <= 0.5 get 1/2, the 50 points above 0.5 get 0
    # (recall never gets there). AP = 51 · 0.5 / 101 = 25.5 / 101 ≈ 0.2525, at every IoU threshold
    # (the match is exact, the false positive overlaps nothing), so AP = AP50 = AP75.
    coco = ground_truth([(2, 2, 12, 12), (20, 20, 30, 30)], [1, 1])
    results = detections_to_coco(detections([(25, 2, 35, 12), (2, 2, 12, 12)], [1, 1], [0.9, 0.6]), 1, LABEL_TO_CAT_ID)
    metrics = coco_metrics(coco, results, verbose=False)
    expected = 25.5 / 101
    for iou_type in ("bbox", "segm"):
        for name in ("AP", "AP50", "AP75", "APs", "AP/square"):
            assert metrics[f"{iou_type}.{name}"] == pytest.approx(expected)
        assert metrics[f"{iou_type}.AR100"] == pytest.approx(0.5)
        assert metrics[f"{iou_type}.AP/circle"] == -1  # no circle in the ground truth


def test_no_detections_score_0_without_crashing(capsys):
    coco = ground_truth([(2, 2, 12, 12)], [7])
    metrics = coco_metrics(coco, [], verbose=True)
    assert set(metrics) == {f"{t}.{s}" for t in ("bbox", "segm") for s in STAT_NAMES} | {
        f"{t}.AP/{c}" for t in ("bbox", "segm") for c in ("square", "circle")}
    assert metrics["segm.AP"] == 0 and metrics["bbox.AP"] == 0 and metrics["segm.AP/circle"] == 0
    printed = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.000" in printed
    assert "AP per class (bbox)" in printed
