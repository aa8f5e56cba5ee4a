"""The comparison of ranked outputs up to near-ties (tests/near_ties.py) lets through exactly what rounding
can do, and nothing a bug would do."""
import pytest
import torch

from near_ties import assert_detections_as_accurate_as, assert_same_binary_masks

COUNT, SIZE = 30, 64


def detections(gen_seed=0):
    """A float64 truth of COUNT detections, best first, with scores 0.01 apart and rows 10 and 11 tied to
    3e-9, and torchvision's float32 output: the truth off by about one float32 rounding."""
    gen = torch.Generator().manual_seed(gen_seed)
    scores = torch.linspace(0.9, 0.6, COUNT, dtype=torch.float64)
    scores[11] = scores[10] - 3e-9
    corner = torch.rand(COUNT, 2, generator=gen, dtype=torch.float64) * 40
    boxes = torch.cat([corner, corner + 8 + torch.rand(COUNT, 2, generator=gen, dtype=torch.float64) * 16], dim=1)
    labels = torch.full((COUNT,), 3)  # all of one class: the labels cannot tell rows apart
    ys, xs = torch.meshgrid(torch.arange(SIZE, dtype=torch.float64), torch.arange(SIZE, dtype=torch.float64),
                            indexing="ij")
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    masks = torch.sigmoid(6 - ((xs - centres[:, None, None, 0]) ** 2 + (ys - centres[:, None, None, 1]) ** 2).sqrt())
    truth = {"boxes": boxes, "scores": scores, "labels": labels, "masks": masks[:, None]}
    # float32 rounding of every value, plus about one ulp more of noise: torchvision's own float32 error.
    noise = {k: 1 + torch.randn(v.shape, generator=gen, dtype=torch.float64) * 6e-8 for k, v in truth.items()}
    expected = {k: (v * noise[k]).float() if v.is_floating_point() else v for k, v in truth.items()}
    return expected, truth


def swapped(output, first, second):
    """The output with rows first and second exchanged, as a sort that saw their scores the other way."""
    order = torch.arange(COUNT)
    order[[first, second]] = order[[second, first]]
    return {k: v[order] for k, v in output.items()}


def compare(got, expected, truth):
    assert_detections_as_accurate_as([got], [expected], [truth], score_thresh=0.05, capacity=100)


def test_an_exact_copy_passes():
    expected, truth = detections()
    compare({k: v.clone() for k, v in expected.items()}, expected, truth)


def test_two_detections_of_one_label_swapped_inside_the_tie_band_pass():
    """The AMD EPYC failure: rows 62 and 63 of one label, 4e-7 apart in float64, tied exactly in our float32."""
    expected, truth = detections()
    compare(swapped(expected, 10, 11), expected, truth)


def test_the_same_swap_across_a_clear_score_gap_fails():
    """A sort or a score that belongs to another box: two rows 0.01 apart in the other order."""
    expected, truth = detections()
    with pytest.raises(AssertionError, match="other order"):
        compare(swapped(expected, 20, 21), expected, truth)


def test_a_box_paired_with_the_wrong_score_fails():
    """Boxes exchanged between two rows 0.01 apart while the scores stay sorted: a box decoded with
    another RoI's deltas."""
    expected, truth = detections()
    got = {k: v.clone() for k, v in expected.items()}
    got["boxes"][[20, 21]] = got["boxes"][[21, 20]]
    with pytest.raises(AssertionError, match="other order"):
        compare(got, expected, truth)


def test_one_mask_one_pixel_off_fails():
    expected, truth = detections()
    got = {k: v.clone() for k, v in expected.items()}
    got["masks"][7] = got["masks"][7].roll(1, dims=-1)
    with pytest.raises(AssertionError, match="masks"):
        compare(got, expected, truth)


def test_mask_pixels_are_compared_detection_by_detection():
    """Each mask at p > 0.5, pixel for pixel: one mask of many moved by one pixel fails, and names it."""
    expected, _ = detections()
    shifted = expected["masks"].clone()
    shifted[2] = shifted[2].roll(1, dims=-1)
    with pytest.raises(AssertionError, match="detection 2"):
        assert_same_binary_masks(shifted, expected["masks"])


def test_a_lost_detection_fails_unless_it_lies_at_a_cut():
    """A detection dropped from the middle of the list is a real difference; the last one of a full list,
    tied within the band with the first one left out, is rounding."""
    expected, truth = detections()
    dropped = {k: torch.cat([v[:15], v[16:]]) for k, v in expected.items()}
    with pytest.raises(AssertionError, match="no partner"):
        compare(dropped, expected, truth)
    last_dropped = {k: v[:-1] for k, v in expected.items()}
    with pytest.raises(AssertionError, match="no partner"):
        compare(last_dropped, expected, truth)  # the list is not full: its last score is no cut
    assert_detections_as_accurate_as([last_dropped], [expected], [truth], score_thresh=0.05, capacity=COUNT)


def test_a_detection_at_the_score_threshold_may_be_missing():
    expected, truth = detections()
    last_dropped = {k: v[:-1] for k, v in expected.items()}
    threshold = truth["scores"][-1].item() - 1e-9
    assert_detections_as_accurate_as([last_dropped], [expected], [truth], score_thresh=threshold, capacity=100)
    with pytest.raises(AssertionError, match="no partner"):
        assert_detections_as_accurate_as([last_dropped], [expected], [truth], score_thresh=0.5, capacity=100)
