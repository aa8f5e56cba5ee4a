"""Chapter 05's checkers pass correct code (the package's, torchvision's, plain versions) and reject plausible mistakes."""
import math

import pytest
import torch
import torchvision

from mrcnn_from_scratch import ops
from mrcnn_from_scratch.exercises import (
    check_bilinear,
    check_multiscale_roi_align,
    check_roi_align_box,
    check_roi_pool_bins,
    check_roi_pool_experiment,
    mask_lab,
)
from mrcnn_from_scratch.exercises.ch05 import reference_bilinear, reference_roi_pool_bins
from mrcnn_from_scratch.poolers import box_levels


# ------------------------------------------------------------------------------ bilinear

def bilinear(feature, x, y, outside_zero=True, edge_rule=True, swap=False):
    """Vectorized bilinear sampling with RoIAlign's border rules; the switches make the usual mistakes."""
    if swap:
        x, y = y, x
    _, height, width = feature.shape
    inside = (x >= -1) & (x <= width) & (y >= -1) & (y <= height)
    if edge_rule:
        x, y = x.clamp(min=0), y.clamp(min=0)
        x0, y0 = x.floor().long().clamp(max=width - 1), y.floor().long().clamp(max=height - 1)
        x = torch.where(x0 >= width - 1, x0.to(x.dtype), x)
        y = torch.where(y0 >= height - 1, y0.to(y.dtype), y)
    else:  # another correct way: clamp the neighbours' indices, not the positions
        x0, y0 = x.floor().long(), y.floor().long()
    x1, y1 = (x0 + 1).clamp(0, width - 1), (y0 + 1).clamp(0, height - 1)
    lx, ly = x - x0, y - y0
    x0, y0 = x0.clamp(0, width - 1), y0.clamp(0, height - 1)
    value = ((1 - ly) * (1 - lx) * feature[:, y0, x0] + (1 - ly) * lx * feature[:, y0, x1]
             + ly * (1 - lx) * feature[:, y1, x0] + ly * lx * feature[:, y1, x1])
    return value * inside if outside_zero else value


def grid_sample_bilinear(feature, x, y):
    """torch's grid_sample with align_corners=True reads pixel j at x = j too; it differs only at the border."""
    _, height, width = feature.shape
    grid = torch.stack([2 * x / max(width - 1, 1) - 1, 2 * y / max(height - 1, 1) - 1], dim=-1)[None, None]
    return torch.nn.functional.grid_sample(feature[None], grid, align_corners=True)[0, :, 0]


def test_check_bilinear_passes_a_plain_version_and_the_reference(capsys):
    assert check_bilinear(bilinear)
    assert check_bilinear(lambda f, x, y: bilinear(f, x, y, edge_rule=False))
    assert check_bilinear(reference_bilinear)
    assert capsys.readouterr().out.count("✓ check_bilinear passed") == 3


def test_reference_bilinear_matches_grid_sample_inside_the_map():
    gen = torch.Generator().manual_seed(0)
    feature = torch.randn(3, 6, 9, generator=gen)
    x, y = torch.rand(50, generator=gen) * 8, torch.rand(50, generator=gen) * 5
    torch.testing.assert_close(reference_bilinear(feature, x, y), grid_sample_bilinear(feature, x, y))


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda f, x, y: bilinear(f, x, y, swap=True), "random points inside a 5×8 map"),
        (lambda f, x, y: bilinear(f, x, y, outside_zero=False), '"more than one pixel outside"'),
        (grid_sample_bilinear, "within one pixel"),
        (lambda f, x, y: bilinear(f, x, y).T, "should have shape"),
    ],
    ids=["x and y swapped", "no zero outside", "grid_sample's zero padding",
         "transposed"],
)
def test_check_bilinear_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_bilinear(wrong)


# ---------------------------------------------------------------------------- one-box RoIAlign

def roi_align_box(feature, box, output_size, spatial_scale, sampling_ratio, aligned, min_one=True, offset=True,
                  adaptive_round=math.ceil, reduce="mean"):
    """RoIAlign for one box with tensor ops; the keyword arguments make the usual mistakes."""
    shift = 0.5 if aligned and offset else 0.0
    x1, y1, x2, y2 = (box.double() * spatial_scale - shift).tolist()
    w, h = x2 - x1, y2 - y1
    if not aligned and min_one:
        w, h = max(w, 1.0), max(h, 1.0)
    bin_w, bin_h = w / output_size, h / output_size
    grid_h = sampling_ratio if sampling_ratio > 0 else adaptive_round(bin_h)
    grid_w = sampling_ratio if sampling_ratio > 0 else adaptive_round(bin_w)
    if grid_h == 0 or grid_w == 0:
        return feature.new_zeros(feature.shape[0], output_size, output_size)
    bins = torch.arange(output_size, dtype=torch.float64)[:, None]
    ys = y1 + bins * bin_h + (torch.arange(grid_h, dtype=torch.float64) + 0.5) * bin_h / grid_h  # [out, grid_h]
    xs = x1 + bins * bin_w + (torch.arange(grid_w, dtype=torch.float64) + 0.5) * bin_w / grid_w
    y = ys[:, None, :, None].expand(output_size, output_size, grid_h, grid_w).reshape(-1).float()
    x = xs[None, :, None, :].expand(output_size, output_size, grid_h, grid_w).reshape(-1).float()
    samples = bilinear(feature, x, y).view(-1, output_size, output_size, grid_h * grid_w)
    return samples.mean(-1) if reduce == "mean" else samples.sum(-1)


def test_check_roi_align_box_passes_torchvision_and_a_plain_version():
    assert check_roi_align_box(roi_align_box)
    assert check_roi_align_box(lambda f, b, o, s, r, a: torchvision.ops.roi_align(f[None], [b[None]], o, s, r, a)[0])


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda *args: roi_align_box(*args, reduce="sum"), "average the samples of a bin"),
        (lambda *args: roi_align_box(*args, min_one=False), '"a box smaller than a cell, aligned=False"'),
        (lambda *args: roi_align_box(*args, offset=False), '"aligned=True"'),
        (lambda *args: roi_align_box(*args, adaptive_round=round), "adaptive"),
        (lambda f, b, o, s, r, a: roi_align_box(f, b, o, 1.0, r, a), '"spatial_scale 1/4"'),
        (lambda f, b, o, s, r, a: ops.roi_pool(f[None], [b[None]], o, s)[0], "2×2 samples per bin"),
    ],
    ids=["sum", "no 1-cell minimum", "no half-cell offset", "round not ceil", "ignores spatial_scale", "roi_pool"],
)
def test_check_roi_align_box_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_roi_align_box(wrong)


# ----------------------------------------------------------------------------- RoIPool's bins

def roi_pool_bins(x1, x2, spatial_scale, bins, size, rounding="c", plus_one=True, clip=True):
    """Bin edges along one axis; the keyword arguments make the usual mistakes."""
    rounder = {"c": lambda v: int(math.copysign(math.floor(abs(v) + 0.5), v)), "python": round,
               "floor": math.floor}[rounding]
    start, end = rounder(x1 * spatial_scale), rounder(x2 * spatial_scale)
    length = max(end - start + (1 if plus_one else 0), 1)
    index = torch.arange(bins, dtype=torch.float32)
    bin_size = torch.tensor(length, dtype=torch.float32) / bins
    first = torch.floor(index * bin_size).long() + start
    last = torch.ceil((index + 1) * bin_size).long() + start
    return (first.clamp(0, size), last.clamp(0, size)) if clip else (first, last)


def pool_bins_measured(x1, x2, spatial_scale, bins, size):
    """The bins read off torchvision's roi_pool itself: max-pool a map of column indices (and of minus them)."""
    columns = torch.arange(size, dtype=torch.float32) + 1  # + 1 so that an empty bin (0) shows
    feature = torch.stack([columns, size + 1 - columns])[None, :, None, :]  # [1, 2, 1, size]
    box = torch.tensor([[0.0, x1, 0.0, x2, 0.0]])
    pooled = torchvision.ops.roi_pool(feature, box, (1, bins), spatial_scale)[0, :, 0]
    empty = pooled[0] == 0
    last, first = pooled[0].long(), (size + 1 - pooled[1]).long() - 1
    end = torch.where(empty, 0, last)
    first = torch.where(empty, 0, first)
    # An empty bin's edges are clipped to one side; take them from the formula (the test checks the others).
    ref_first, ref_end = reference_roi_pool_bins(x1, x2, spatial_scale, bins, size)
    return torch.where(empty, ref_first, first), torch.where(empty, ref_end, end)


def test_check_roi_pool_bins_passes_plain_and_measured_versions():
    assert check_roi_pool_bins(roi_pool_bins)
    assert check_roi_pool_bins(pool_bins_measured)


def test_the_seeds_box_gives_22_cells_in_overlapping_bins():
    first, end = reference_roi_pool_bins(0.0, 665.0, 1 / 32, 7, 25)
    assert first.tolist() == [0, 3, 6, 9, 12, 15, 18] and end.tolist() == [4, 7, 10, 13, 16, 19, 22]


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda *args: roi_pool_bins(*args, rounding="floor"), "665 pixels"),
        (lambda *args: roi_pool_bins(*args, rounding="python"), '"corners exactly half a cell past a whole cell"'),
        (lambda *args: roi_pool_bins(*args, plus_one=False), "665 pixels"),
        (lambda *args: roi_pool_bins(*args, clip=False), "partly outside"),
        (lambda *args: [t.tolist() for t in roi_pool_bins(*args)], "should be a torch.Tensor"),
        (lambda *args: roi_pool_bins(*args)[0], "return two tensors"),
    ],
    ids=["floor", "banker's rounding", "no +1", "no clip", "lists", "one tensor"],
)
def test_check_roi_pool_bins_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_roi_pool_bins(wrong)


# ------------------------------------------------------------------------- multi-scale RoIAlign

def multiscale(features, boxes, image_size, canonical=224.0, exact_scale=False, keep_order=True):
    """Each box from its level; the keyword arguments make the usual mistakes."""
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], dim=1) for i, b in enumerate(boxes)])
    level = box_levels(rois[:, 1:], 2, 5, canonical_scale=canonical)
    pooled, order = [], []
    for k, feature in enumerate(features):
        ratio = feature.shape[-2] / image_size[0]
        scale = ratio if exact_scale else 2.0 ** round(math.log2(ratio))
        index = torch.where(level == k)[0]
        pooled.append(ops.roi_align(feature, rois[index], 7, scale, 2, False))
        order.append(index)
    pooled = torch.cat(pooled)
    if not keep_order:
        return pooled
    return pooled[torch.argsort(torch.cat(order))]


def torchvision_multiscale(features, boxes, image_size):
    names = [str(i) for i in range(len(features))]
    pooler = torchvision.ops.MultiScaleRoIAlign(names, 7, 2)
    return pooler(dict(zip(names, features)), list(boxes), [tuple(image_size)] * len(boxes))


def test_check_multiscale_roi_align_passes_torchvision_and_a_plain_version():
    assert check_multiscale_roi_align(torchvision_multiscale)
    assert check_multiscale_roi_align(multiscale)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda f, b, s: multiscale(f, b, s, canonical=112.0), "boxes for every level"),
        (lambda f, b, s: multiscale(f, b, s, exact_scale=True), "not multiples of 32"),
        (lambda f, b, s: multiscale(f, b, s, keep_order=False), "boxes for every level|levels mixed up"),
        (lambda f, b, s: multiscale([f[0]] * 4, b, s), "boxes for every level"),
    ],
    ids=["level off by one", "exact scale", "grouped by level", "all from P2"],
)
def test_check_multiscale_roi_align_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_multiscale_roi_align(wrong)


# ------------------------------------------------------ the experiment: RoIPool against RoIAlign in training

TINY_BUDGET = dict(steps=2, train_count=4, test_count=4)  # the protocol, not the result, is under test


def roi_pool_crops(features, rois):
    return ops.roi_pool(features, rois, 14, 1 / mask_lab.STRIDE)


def test_roi_pool_experiment_measures_both_poolings(capsys):
    result = check_roi_pool_experiment(roi_pool_crops, 0.2, **TINY_BUDGET)
    out = capsys.readouterr().out
    assert "✓ check_roi_pool_experiment: your pooling is RoIPool's" in out and "RoIAlign" in out
    assert set(result["measured"]) == set(result["baseline"]) == {"mean IoU", "IoU >= 0.75"}
    assert result["within"] == (abs(0.2 - result["measured"]["IoU >= 0.75"]) <= 0.05)
    # Seeded: the same pooling measures the same, so the verdict follows the distance alone.
    again = check_roi_pool_experiment(roi_pool_crops, result["measured"]["IoU >= 0.75"] + 0.3,
                                      baseline=result["baseline"], **TINY_BUDGET)
    assert again["measured"] == result["measured"] and not again["within"]


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda f, r: ops.roi_align(f, r, 14, 1 / mask_lab.STRIDE, 2), "wrong values"),
        (lambda f, r: ops.roi_pool(f, r, 14, 1.0), "wrong values"),
        (lambda f, r: ops.roi_pool(f, r, 7, 1 / mask_lab.STRIDE), "should have shape"),
        (lambda f, r: ops.roi_pool(f, r[:, 1:], 14, 1 / mask_lab.STRIDE), "your pooling raised"),
    ],
    ids=["RoIAlign", "scale 1", "7 x 7", "boxes without image index"],
)
def test_roi_pool_experiment_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_roi_pool_experiment(wrong, 0.2, **TINY_BUDGET)


def test_roi_pool_experiment_wants_a_prediction_first():
    with pytest.raises(NotImplementedError, match="prediction first"):
        check_roi_pool_experiment(roi_pool_crops, None, **TINY_BUDGET)
