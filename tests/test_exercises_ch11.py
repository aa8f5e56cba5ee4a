"""Chapter 11's checkers pass correct code and reject plausible mistakes."""
import math
import statistics

import pytest
import torch

from mrcnn_from_scratch.exercises import check_gap, check_rounding_shift, check_softmax_pixel_gradient


def rounding_shift(boxes, stride, rounding="nearest"):
    scaled = boxes / stride
    rounded = {"nearest": torch.sign(scaled) * torch.floor(scaled.abs() + 0.5), "floor": torch.floor(scaled),
               "none": scaled}[rounding]
    return (rounded * stride - boxes).abs().amax(dim=1) if len(boxes) else boxes.new_zeros(0)


def softmax_pixel_gradient(logits, target, label, background=True):
    p = torch.softmax(logits, dim=0)
    y = torch.zeros_like(p)
    y[label] = target
    if background:
        y[0] += 1 - target
    return p - y


def gap(ours, reference, ddof=1):
    def std(values):
        return statistics.stdev(values) if ddof and len(values) > 1 else (statistics.pstdev(values) if not ddof else 0.0)
    difference = 100 * (statistics.fmean(ours) - statistics.fmean(reference))
    error = 100 * math.sqrt(std(ours) ** 2 / len(ours) + std(reference) ** 2 / len(reference))
    return difference, error


def test_checkers_pass_correct_code(capsys):
    assert check_rounding_shift(rounding_shift)
    assert check_softmax_pixel_gradient(softmax_pixel_gradient)
    assert check_gap(gap)
    assert capsys.readouterr().out.count("✓") == 3


@pytest.mark.parametrize("rounding", ["floor", "none"])
def test_rounding_shift_rejects_the_wrong_rounding(rounding):
    with pytest.raises(AssertionError):
        check_rounding_shift(lambda boxes, stride: rounding_shift(boxes, stride, rounding))


def test_softmax_gradient_rejects_a_loss_without_background():
    with pytest.raises(AssertionError, match="outside the object"):
        check_softmax_pixel_gradient(lambda l, t, c: softmax_pixel_gradient(l, t, c, background=False))


def test_softmax_gradient_rejects_the_sigmoid_gradient():
    def sigmoid_gradient(logits, target, label):
        grad = torch.zeros_like(logits)
        grad[label] = torch.sigmoid(logits[label]) - target
        return grad
    with pytest.raises(AssertionError):
        check_softmax_pixel_gradient(sigmoid_gradient)


def test_gap_rejects_the_population_standard_deviation_and_fractions():
    with pytest.raises(AssertionError, match="standard error"):
        check_gap(lambda o, r: gap(o, r, ddof=0))
    with pytest.raises(AssertionError, match="the gap"):
        check_gap(lambda o, r: tuple(x / 100 for x in gap(o, r)))
