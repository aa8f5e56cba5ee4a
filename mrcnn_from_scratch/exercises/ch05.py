"""Checkers for chapter 05's exercises: bilinear sampling, RoIAlign for one box, RoIPool's bins,
multi-scale RoIAlign over the FPN levels, and RoIPool against RoIAlign in training (an experiment).

Each checker runs your function on fixed cases, compares it with the package's finished version
(`mrcnn_from_scratch.ops` and `mrcnn_from_scratch.poolers`), and raises AssertionError on the first
case it gets wrong, showing that input. The functions it expects:

    bilinear(feature: Tensor[C, H, W], x: Tensor[P], y: Tensor[P]) -> Tensor[C, P]
        the map read at P points by bilinear interpolation, with RoIAlign's rules at the border;
        pixel (row i, column j) sits at (x, y) = (j, i).
    roi_align_box(feature: Tensor[C, H, W], box: Tensor[4], output_size: int, spatial_scale: float,
                  sampling_ratio: int, aligned: bool) -> Tensor[C, output_size, output_size]
        RoIAlign of one (x1, y1, x2, y2) box, as torchvision.ops.roi_align.
    roi_pool_bins(x1: float, x2: float, spatial_scale: float, bins: int, size: int)
        -> (first: Tensor[bins] int64, end: Tensor[bins] int64)
        the cells [first, end) that each of RoIPool's bins max-pools along one axis, on a map `size` cells long.
    multiscale_roi_align(features: [P2, P3, P4, P5], boxes: [Tensor[K_i, 4] per image], image_size: (h, w))
        -> Tensor[sum K_i, C, 7, 7]
        each box pooled (RoIAlign, sampling ratio 2, aligned=False) from its own level, in the order of the boxes.

Exercise 5 is an experiment ("predict, then measure", see `_experiments.py`) on `mask_lab`'s tiny mask head:

    pool(features: Tensor[N, 3, 16, 16], rois: Tensor[K, 5]) -> Tensor[K, 3, 14, 14]
        RoIPool of every RoI from the stride-8 map; the checker trains the head on it and on RoIAlign.
"""
import math
from typing import Callable

import torch
from torch import Tensor

from .. import ops
from ..ops.roi_pool import _bin_edges
from ..poolers import MultiScaleRoIAlign
from . import mask_lab
from ._checking import Case, run_cases, tensor_problem
from ._experiments import judge_prediction, need_prediction


class FeatureMaps(list):
    """A list of feature maps that prints as their shapes, so that a failure message stays short."""

    def __repr__(self) -> str:
        return "[" + ", ".join(f"Tensor{list(t.shape)}" if isinstance(t, Tensor) else repr(t) for t in self) + "]"


def _map(seed: int, channels: int, height: int, width: int) -> Tensor:
    return torch.randn(channels, height, width, generator=torch.Generator().manual_seed(seed))


# -------------------------------------------------------------------------------------- bilinear

def reference_bilinear(feature: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Tensor[C, H, W] read at P points -> Tensor[C, P], by ops.roi_align on one-point boxes.

    A box of zero size at (x + 0.5, y + 0.5) with aligned=True and one sample per bin puts its one
    sample exactly at (x, y): RoIAlign's own bilinear interpolation, border rules included.
    """
    points = torch.stack([x, y], dim=1).double() + 0.5
    rois = torch.cat([torch.zeros(len(x), 1, dtype=torch.float64), points, points], dim=1).to(feature.dtype)
    pooled = ops.roi_align(feature[None], rois, 1, 1.0, sampling_ratio=1, aligned=True)  # [P, C, 1, 1]
    return pooled[:, :, 0, 0].T.contiguous()


def _points(*xy: tuple[float, float]) -> tuple[Tensor, Tensor]:
    x, y = zip(*xy) if xy else ((), ())
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)


def _bilinear_case(name: str, feature: Tensor, points: tuple[Tensor, Tensor], hint: str = "") -> Case:
    return Case(name, {"feature": feature, "x": points[0], "y": points[1]}, hint)


def check_bilinear(fn: Callable) -> bool:
    """Check fn(feature Tensor[C, H, W], x Tensor[P], y Tensor[P]) -> Tensor[C, P] against RoIAlign's sampling."""
    formula = ("with x0 = floor(x), lx = x - x0 (and the same in y): (1-ly)(1-lx)·f[y0, x0] + (1-ly)·lx·f[y0, x0+1] "
               "+ ly·(1-lx)·f[y0+1, x0] + ly·lx·f[y0+1, x0+1]; x indexes columns (the last dim), y rows")
    g = torch.Generator().manual_seed(0)
    inside = (torch.rand(12, generator=g) * 7, torch.rand(12, generator=g) * 4)  # x in [0, 7), y in [0, 4) of a 5×8 map
    cases = [
        _bilinear_case("random points inside a 5×8 map", _map(0, 2, 5, 8), inside, formula),
        _bilinear_case("points on whole pixels", _map(1, 2, 5, 8), _points((0, 0), (3, 2), (7, 4), (5, 1)),
                       "at whole coordinates the weights are 1 and 0: you get the pixel itself, f[y, x]"),
        _bilinear_case("halfway between pixels", _map(2, 1, 4, 4), _points((0.5, 0), (1, 1.5), (2.5, 2.5)),
                       "halfway between two pixels is their mean; in the middle of four, the mean of the four"),
        _bilinear_case("within one pixel past the last row and column", _map(3, 2, 4, 6),
                       _points((5.5, 1.0), (2.0, 3.7), (5.9, 3.9), (6.0, 4.0)),
                       "past the last pixel (x >= W - 1) read the last column alone, with weight 1, and the same in y"),
        _bilinear_case("within one pixel before the first row and column", _map(4, 2, 4, 6),
                       _points((-0.5, 1.0), (2.0, -0.9), (-1.0, -1.0)),
                       "a coordinate in [-1, 0) is moved to 0: it reads the first pixel with weight 1"),
        _bilinear_case("more than one pixel outside", _map(5, 2, 4, 6),
                       _points((-1.5, 1.0), (2.0, 4.5), (6.2, 2.0), (3.0, -3.0), (7.0, 5.0)),
                       "a point with x < -1 or x > W (or y < -1 or y > H) reads nothing: its value is 0"),
        _bilinear_case("a map one pixel wide", _map(6, 3, 5, 1), _points((0.0, 1.5), (0.4, 3.2), (-0.5, 0.0))),
        _bilinear_case("no points", _map(7, 2, 3, 3), _points(), "the result is Tensor[C, 0]"),
    ]

    def compare(received, expected, case):
        return tensor_problem(received, expected, "the sampled values", rtol=1e-5, atol=1e-5)

    return run_cases("check_bilinear", fn, reference_bilinear, cases, compare)


# --------------------------------------------------------------------------------- one-box RoIAlign

def reference_roi_align_box(feature: Tensor, box: Tensor, output_size: int, spatial_scale: float,
                            sampling_ratio: int, aligned: bool) -> Tensor:
    """RoIAlign of one box: Tensor[C, H, W] and Tensor[4] -> Tensor[C, output_size, output_size]."""
    return ops.roi_align(feature[None], [box[None]], output_size, spatial_scale, sampling_ratio, aligned)[0]


def _box(*coords: float) -> Tensor:
    return torch.tensor(coords, dtype=torch.float32)


def _align_case(name: str, feature: Tensor, box: Tensor, output_size: int = 2, spatial_scale: float = 1.0,
                sampling_ratio: int = 2, aligned: bool = False, hint: str = "") -> Case:
    args = {"feature": feature, "box": box, "output_size": output_size, "spatial_scale": spatial_scale,
            "sampling_ratio": sampling_ratio, "aligned": aligned}
    return Case(name, args, hint)


def check_roi_align_box(fn: Callable) -> bool:
    """Check fn(feature Tensor[C, H, W], box Tensor[4], output_size, spatial_scale, sampling_ratio, aligned)
    -> Tensor[C, output_size, output_size] against ops.roi_align."""
    samples = ("bin (i, j) spans bin_h = h / output_size rows from y1 + i·bin_h; its samples sit at "
               "y1 + i·bin_h + (s + 0.5)·bin_h / sampling_ratio, s = 0 .. sampling_ratio - 1 (the same in x); average them")
    adaptive = "sampling_ratio <= 0 means ceil(bin_h) samples along y and ceil(bin_w) along x, for each box"
    legacy = "with aligned=False, a box narrower (or shorter) than one cell is widened to 1 cell: w = max(x2 - x1, 1)"
    half = "aligned=True moves the box by -0.5 cell after scaling: x1 = x1·spatial_scale - 0.5, and skips the 1-cell minimum"
    cases = [
        _align_case("a 2×2 output, 2×2 samples per bin", _map(0, 2, 6, 7), _box(1.3, 0.7, 5.2, 4.9), hint=samples),
        _align_case("one sample per bin", _map(1, 2, 6, 7), _box(0.4, 1.1, 6.3, 5.0), 3, sampling_ratio=1, hint=samples),
        _align_case("spatial_scale 1/4", _map(2, 2, 8, 8), _box(5.0, 3.0, 27.0, 30.0), 3, 0.25,
                    hint="multiply the box by spatial_scale first: it is in image pixels, the map in cells"),
        _align_case("adaptive sampling (sampling_ratio = -1)", _map(3, 1, 12, 12), _box(0.5, 1.0, 11.0, 6.5), 2,
                    sampling_ratio=-1, hint=adaptive),
        _align_case("aligned=True", _map(4, 2, 6, 7), _box(1.3, 0.7, 5.2, 4.9), aligned=True, hint=half),
        _align_case("a box smaller than a cell, aligned=False", _map(5, 1, 6, 6), _box(2.2, 3.1, 2.6, 3.3),
                    hint=legacy),
        _align_case("a box smaller than a cell, aligned=True", _map(5, 1, 6, 6), _box(2.2, 3.1, 2.6, 3.3),
                    aligned=True, hint=half),
        _align_case("a box partly outside the map", _map(6, 2, 5, 5), _box(-2.5, 3.0, 4.0, 7.5), 3,
                    hint="samples in [-1, 0) read the first pixel, samples beyond -1 or the size read 0"),
        _align_case("7×7 output, adaptive, aligned=True", _map(7, 3, 10, 12), _box(0.3, 0.2, 11.6, 9.1), 7,
                    sampling_ratio=-1, aligned=True, hint=adaptive),
    ]

    def compare(received, expected, case):
        problem = tensor_problem(received, expected, "the pooled box", rtol=1e-4, atol=1e-5)
        if problem and isinstance(received, Tensor) and received.shape == expected.shape:
            grid = case.args["sampling_ratio"] if case.args["sampling_ratio"] > 0 else None
            if grid and torch.allclose(received, expected * grid * grid, rtol=1e-4, atol=1e-5):
                problem += " (by a factor sampling_ratio²: average the samples of a bin, do not add them)"
        return problem

    return run_cases("check_roi_align_box", fn, reference_roi_align_box, cases, compare)


# ------------------------------------------------------------------------------------ RoIPool's bins

def reference_roi_pool_bins(x1: float, x2: float, spatial_scale: float, bins: int, size: int) -> tuple[Tensor, Tensor]:
    """The cells [first, end) of each of RoIPool's bins along one axis, as torchvision's kernel makes them."""
    scaled = torch.tensor([x1, x2], dtype=torch.float64) * spatial_scale
    start, end = (torch.sign(scaled) * torch.floor(scaled.abs() + 0.5)).long()  # round half away from zero
    length = (end - start + 1).clamp(min=1)
    first, last = _bin_edges(start[None], length[None], bins, size, torch.float32)
    return first[0], last[0]


def _bins_case(name: str, x1: float, x2: float, spatial_scale: float, bins: int, size: int, hint: str = "") -> Case:
    return Case(name, {"x1": x1, "x2": x2, "spatial_scale": spatial_scale, "bins": bins, "size": size}, hint)


def check_roi_pool_bins(fn: Callable) -> bool:
    """Check fn(x1, x2, spatial_scale, bins, size) -> (first Tensor[bins] int64, end Tensor[bins] int64)."""
    rounding = ("round the scaled corners to whole cells (half away from zero); the box covers cells x1 .. x2 "
                "*including* x2, so its length is x2 - x1 + 1 (at least 1)")
    edges = "bin i spans floor(i·L / bins) .. ceil((i + 1)·L / bins) cells from x1, with L the length as a float"
    half = "round half away from zero, as C's round(): 2.5 -> 3 and -2.5 -> -3 (torch.round and Python's round give 2)"
    cases = [
        _bins_case("the seed's box: 665 pixels at stride 32", 0.0, 665.0, 1 / 32, 7, 25, rounding),
        _bins_case("a box from 50 to 300 pixels at stride 16", 50.0, 300.0, 1 / 16, 7, 40, edges),
        _bins_case("corners exactly half a cell past a whole cell", 80.0, 400.0, 1 / 32, 7, 25, half),
        _bins_case("a box that fits in one cell", 33.0, 38.0, 1 / 16, 7, 10,
                   "a box of one cell gives 7 bins that all read that cell"),
        _bins_case("14 bins, stride 4", 10.0, 131.0, 1 / 4, 14, 40, edges),
        _bins_case("a box partly outside, left", -80.0, 100.0, 1 / 16, 7, 20,
                   "clip every bin's first and end cell to [0, size]: bins wholly outside become empty (first == end)"),
        _bins_case("a box partly outside, right", 200.0, 420.0, 1 / 16, 7, 20,
                   "clip every bin's first and end cell to [0, size]"),
        _bins_case("negative corners, half a cell", -40.0, 56.0, 1 / 16, 3, 10, half),
    ]

    def compare(received, expected, case):
        if not isinstance(received, (tuple, list)) or len(received) != 2:
            return "return two tensors: (first cell of each bin, end cell of each bin), each Tensor[bins] int64"
        return (tensor_problem(received[0], expected[0], "the bins' first cells")
                or tensor_problem(received[1], expected[1], "the bins' end cells (one past the last cell)"))

    return run_cases("check_roi_pool_bins", fn, reference_roi_pool_bins, cases, compare)


# ----------------------------------------------------------------------------- multi-scale RoIAlign

def reference_multiscale_roi_align(features: list[Tensor], boxes: list[Tensor], image_size: tuple[int, int]) -> Tensor:
    """[P2, ..., P5] and boxes per image -> Tensor[sum K_i, C, 7, 7], by the package's MultiScaleRoIAlign."""
    names = [str(i) for i in range(len(features))]
    pooler = MultiScaleRoIAlign(names, 7, 2)
    return pooler(dict(zip(names, features)), list(boxes), [tuple(image_size)] * len(boxes))


def _pyramid(seed: int, batch: int, height: int, width: int, channels: int = 2) -> FeatureMaps:
    """P2..P5 for a padded batch of height × width: sides ceil(side / stride)."""
    g = torch.Generator().manual_seed(seed)
    return FeatureMaps(torch.randn(batch, channels, math.ceil(height / s), math.ceil(width / s), generator=g)
                       for s in (4, 8, 16, 32))


def _boxes_of_sizes(seed: int, sides: list[float], height: int, width: int) -> Tensor:
    """Square-ish boxes with these sqrt(area)s, at random places (partly outside the image at times)."""
    g = torch.Generator().manual_seed(seed)
    sides_t = torch.tensor(sides, dtype=torch.float32)
    aspect = 2 ** (torch.rand(len(sides), generator=g) - 0.5)
    w, h = sides_t * aspect, sides_t / aspect
    cx, cy = torch.rand(len(sides), generator=g) * width, torch.rand(len(sides), generator=g) * height
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


def check_multiscale_roi_align(fn: Callable) -> bool:
    """Check fn([P2, P3, P4, P5], boxes per image, image_size) -> Tensor[sum K_i, C, 7, 7] against MultiScaleRoIAlign."""
    levels = "k = floor(4 + log2(sqrt(w·h) / 224) + 1e-6) clamped to [2, 5]; pool the box from P_k"
    scale = ("each level's spatial_scale is 2 ** round(log2(feature height / image height)): 1/4, 1/8, 1/16, 1/32, "
             "not the exact ratio of the sizes")
    order = "the output keeps the order of the boxes: image 0's boxes first, each in its own order, whatever its level"
    every_level = [12, 40, 100, 111.9, 112, 150, 223.9, 224, 300, 448, 700, 1000]
    cases = [
        Case("one image, boxes for every level", {"features": _pyramid(0, 1, 256, 320),
             "boxes": FeatureMaps([_boxes_of_sizes(0, every_level, 256, 320)]), "image_size": (256, 320)}, levels),
        Case("an image whose sides are not multiples of 32", {"features": _pyramid(1, 1, 200, 300),
             "boxes": FeatureMaps([_boxes_of_sizes(1, [20, 90, 130, 260, 500], 200, 300)]), "image_size": (200, 300)},
             scale),
        Case("two images, levels mixed up", {"features": _pyramid(2, 2, 224, 256),
             "boxes": FeatureMaps([_boxes_of_sizes(2, [500, 30, 200, 60], 224, 256),
                                   _boxes_of_sizes(3, [120, 480, 16], 224, 256)]), "image_size": (224, 256)}, order),
        Case("two images, the first without boxes", {"features": _pyramid(3, 2, 128, 128),
             "boxes": FeatureMaps([torch.zeros(0, 4), _boxes_of_sizes(4, [30, 60, 250], 128, 128)]),
             "image_size": (128, 128)}, "an image without boxes adds no rows; the second image's boxes still use batch index 1"),
        Case("no boxes at all", {"features": _pyramid(4, 1, 64, 64), "boxes": FeatureMaps([torch.zeros(0, 4)]),
             "image_size": (64, 64)}, "the result is Tensor[0, C, 7, 7]"),
    ]

    def compare(received, expected, case):
        return tensor_problem(received, expected, "the pooled features", rtol=1e-4, atol=1e-5)

    def with_copies(features, boxes, image_size):
        return fn(FeatureMaps(f.clone() for f in features), FeatureMaps(b.clone() for b in boxes), image_size)

    return run_cases("check_multiscale_roi_align", with_copies, reference_multiscale_roi_align, cases, compare)


# ------------------------------------------------------- predict, then measure: RoIPool against RoIAlign

def _roi_align_crops(features: Tensor, rois: Tensor) -> Tensor:
    """The bench's reference pooling: RoIAlign to 14 × 14, sampling ratio 2, aligned=False."""
    return ops.roi_align(features, rois, 14, 1 / mask_lab.STRIDE, 2)


def check_roi_pool_experiment(pool: Callable, prediction, baseline: dict | None = None, steps: int = 400,
                              train_count: int = 200, test_count: int = 50) -> dict:
    """Exercise 5: pool(features Tensor[N, 3, 16, 16], rois Tensor[K, 5]) -> Tensor[K, 3, 14, 14] by RoIPool.

    Checks the pooling against ops.roi_pool, trains mask_lab's tiny head on it (and on RoIAlign, unless
    `baseline` gives that result), and holds `prediction`, the share of test RoIs whose mask reaches
    IoU 0.75 with RoIPool, against the measurement, ± 0.05 (the share is a few tenths: 0.1 would accept
    a prediction of no effect at all).
    """
    what = "the share of test masks at IoU >= 0.75 with RoIPool"
    prediction = need_prediction(prediction, what)
    features, rois, _ = mask_lab.rois_of("val", 8)
    try:
        received = pool(features.clone(), rois.clone())
    except NotImplementedError:
        raise
    except Exception as error:
        raise AssertionError(f"check_roi_pool_experiment: your pooling raised {type(error).__name__}: {error}") from error
    expected = ops.roi_pool(features, rois, 14, 1 / mask_lab.STRIDE)
    problem = tensor_problem(received, expected, "the pooled RoIs", rtol=1e-6, atol=1e-6)
    if problem:
        raise AssertionError(f"check_roi_pool_experiment: {problem}\nHint: ops.roi_pool(features, rois, 14, "
                             f"1 / mask_lab.STRIDE): 14 × 14 bins, and a spatial scale of 1/8 for a stride-8 map")
    print(f"✓ check_roi_pool_experiment: your pooling is RoIPool's. Training the head on it for {steps} steps...")
    measured = mask_lab.experiment(pool, steps, train_count, test_count)
    if baseline is None:
        baseline = mask_lab.experiment(_roi_align_crops, steps, train_count, test_count)
    print(f"{test_count} test images: {'':10s}" + "".join(f"{name:>14s}" for name in measured))
    for name, result in (("RoIAlign", baseline), ("RoIPool", measured)):
        print(f"{'':24s}{name:10s}" + "".join(f"{value:14.3f}" for value in result.values()))
    why = ("RoIPool rounds the box to whole cells, 8 pixels here, and the bins again; the head then learns masks "
           "from features shifted by up to a cell. A shift of a few pixels hardly changes whether the mask is "
           "roughly right (compare the mean IoU), but it decides whether it is precise.")
    within = judge_prediction("check_roi_pool_experiment", prediction, measured["IoU >= 0.75"], 0.05, what, why)
    return {"measured": measured, "baseline": baseline, "prediction": prediction, "within": within}
