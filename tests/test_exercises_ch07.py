"""Chapter 07's checkers pass correct code (ours and torchvision's) and reject plausible mistakes."""
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import roi_heads as tv_roi_heads

from mrcnn_from_scratch import mask_head, ops
from mrcnn_from_scratch.exercises import check_class_masks, check_mask_targets, check_paste_mask, check_roundtrip_iou


# ------------------------------------------------------------------ correct implementations pass

def test_checkers_pass_the_package_and_torchvision(capsys):
    assert check_mask_targets(mask_head.mask_targets)
    assert check_mask_targets(tv_roi_heads.project_masks_on_boxes)
    assert check_class_masks(lambda logits, labels: mask_head.masks_of_labels(logits, [labels])[0])
    assert check_paste_mask(lambda m, b, s: mask_head.paste_masks_in_image(m[None, None], b[None], s)[0, 0])
    assert check_paste_mask(lambda m, b, s: tv_roi_heads.paste_masks_in_image(m[None, None], b[None], s)[0, 0])
    assert check_roundtrip_iou(lambda g, b, s: roundtrip_iou(g, b, s))
    assert capsys.readouterr().out.count("✓") == 6


def test_unfilled_stub_raises_not_implemented():
    def stub(mask_logits, labels):
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        check_class_masks(stub)


# ---------------------------------------------------------------------------- wrong mask targets

def targets_by_roi_align(gt_masks, boxes, matched_gt, size, aligned=False, sampling_ratio=-1, index=None):
    index = matched_gt if index is None else index
    rois = torch.cat([index[:, None].to(boxes), boxes], dim=1)
    return ops.roi_align(gt_masks[:, None].float(), rois, (size, size), 1.0, sampling_ratio, aligned)[:, 0]


def crop_and_resize(gt_masks, boxes, matched_gt, size):
    """Crop whole pixels of the box, then resize: the obvious way, which rounds the box."""
    out = []
    for box, m in zip(boxes.round().int().tolist(), matched_gt.tolist()):
        x1, y1, x2, y2 = box
        crop = gt_masks[m, max(y1, 0):max(y2, y1 + 1), max(x1, 0):max(x2, x1 + 1)].float()
        out.append(F.interpolate(crop[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0])
    return torch.stack(out) if out else torch.zeros(0, size, size)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda g, b, m, s: targets_by_roi_align(g, b, m, s, aligned=True), "wrong values"),
        (lambda g, b, m, s: targets_by_roi_align(g, b, m, s, sampling_ratio=2), "wrong values"),
        (lambda g, b, m, s: targets_by_roi_align(g, b, m, s, index=torch.zeros_like(m)), "wrong values"),
        (lambda g, b, m, s: (targets_by_roi_align(g, b, m, s) >= 0.5).float(), "wrong values"),
        (lambda g, b, m, s: targets_by_roi_align(g, b, m, 28), '"the same box, size 14": .*shape'),
        (lambda g, b, m, s: targets_by_roi_align(g, b, m, s).double(), "dtype torch.float32"),
        (crop_and_resize, "wrong values"),
    ],
    ids=["aligned", "sampling ratio 2", "every RoI reads mask 0", "thresholded", "always 28", "float64",
         "crop and resize"],
)
def test_check_mask_targets_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_mask_targets(wrong)


# ------------------------------------------------------------------------------ wrong class masks

@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda l, c: l.softmax(dim=1)[torch.arange(len(c)), c][:, None], "softmax over the classes"),
        (lambda l, c: l[torch.arange(len(c)), c][:, None], "wrong values"),
        (lambda l, c: l[torch.arange(len(c)), c - 1].sigmoid()[:, None], "wrong values"),
        (lambda l, c: l[torch.arange(len(c)), c].sigmoid(), "should have shape"),
        (lambda l, c: l[:, c].sigmoid(), "should have shape"),
    ],
    ids=["softmax", "no sigmoid", "channel c - 1", "no channel dimension", "all labels for every detection"],
)
def test_check_class_masks_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_class_masks(wrong)


# ------------------------------------------------------------------------------- wrong pasting

def paste(mask, box, image_size, padding=1, grow=True, floor=False, inclusive=True, align_corners=False):
    """One mask pasted with switches for the usual mistakes."""
    height, width = image_size
    size = mask.shape[-1]
    padded = F.pad(mask, (padding,) * 4)
    scale = (size + 2 * padding) / size if grow else 1.0
    centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2 * scale
    grown = torch.cat([centre - half, centre + half])
    x1, y1, x2, y2 = (grown.floor() if floor else grown).to(torch.int64).tolist()
    extra = 1 if inclusive else 0
    box_w, box_h = max(x2 - x1 + extra, 1), max(y2 - y1 + extra, 1)
    resized = F.interpolate(padded[None, None], size=(box_h, box_w), mode="bilinear", align_corners=align_corners)[0, 0]
    out = mask.new_zeros(height, width)
    left, top, right, bottom = max(x1, 0), max(y1, 0), min(x1 + box_w, width), min(y1 + box_h, height)
    if right > left and bottom > top:
        out[top:bottom, left:right] = resized[top - y1:bottom - y1, left - x1:right - x1]
    return out


def test_check_paste_mask_passes_the_switchable_version():
    assert check_paste_mask(paste)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda m, b, s: paste(m, b, s, padding=0), '"a box inside the image"'),
        (lambda m, b, s: paste(m, b, s, grow=False), '"a box inside the image"'),
        (lambda m, b, s: paste(m, b, s, floor=True), '"a box over the top-left corner"'),
        (lambda m, b, s: paste(m, b, s, inclusive=False), "wrong values"),
        (lambda m, b, s: paste(m, b, s, align_corners=True), "wrong values"),
        (lambda m, b, s: paste(m, b, s) > 0.5, "dtype torch.float32"),
    ],
    ids=["no padding", "padding without growing the box", "floor instead of truncation", "x2 exclusive",
         "align_corners", "thresholded"],
)
def test_check_paste_mask_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_paste_mask(wrong)


# ----------------------------------------------------------------------------- wrong round trip

def roundtrip_iou(gt_mask, box, size, padding=1, soft=False, crop_box=None):
    crop_box = box if crop_box is None else crop_box
    target = mask_head.mask_targets(gt_mask[None].to(torch.uint8), crop_box[None], torch.zeros(1, dtype=torch.int64), size)
    pasted = mask_head.paste_masks_in_image(target[:, None], crop_box[None], tuple(gt_mask.shape), padding)[0, 0]
    if soft:
        truth = gt_mask.float()
        return ((pasted * truth).sum() / (pasted + truth - pasted * truth).sum()).item()
    back = pasted > 0.5
    return ((back & gt_mask).sum() / (back | gt_mask).sum()).item()


def tight(mask):
    rows, cols = torch.where(mask.any(dim=1))[0], torch.where(mask.any(dim=0))[0]
    return torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda g, b, s: roundtrip_iou(g, b, s, padding=0), "the IoU should be"),
        (lambda g, b, s: roundtrip_iou(g, b, s, soft=True), "the IoU should be"),
        (lambda g, b, s: roundtrip_iou(g, b, 28), '"the same disc at 14 × 14"'),
        (lambda g, b, s: roundtrip_iou(g, b, s, crop_box=tight(g)), '"a box larger than the disc"'),
        (lambda g, b, s: str(roundtrip_iou(g, b, s)), "as a number"),
    ],
    ids=["no padding", "soft IoU", "always 28", "tight box instead of the given one", "string"],
)
def test_check_roundtrip_iou_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_roundtrip_iou(wrong)


def test_check_roundtrip_iou_accepts_a_tensor_scalar():
    assert check_roundtrip_iou(lambda g, b, s: torch.tensor(roundtrip_iou(g, b, s)))
