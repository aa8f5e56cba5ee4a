"""roi_pool against torchvision's C++ kernel: values, arg-max gradients, and rounding at exact halves.

Compared exactly (atol=0): a max-pooled bin is one of the input values, not a sum, so no rounding happens
and every CPU gives the same bits; a wrong bin edge picks another value and fails.
"""
import pytest
import torch
import torchvision

from mrcnn_from_scratch.ops import roi_pool

from conftest import make_rois


def features(seed, dtype, shape=(2, 3, 11, 14)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("spatial_scale", [1.0, 1 / 4, 1 / 32])
def test_matches_torchvision(dtype, spatial_scale):
    x = features(1, dtype)
    image_size = (x.shape[2] / spatial_scale, x.shape[3] / spatial_scale)
    rois = make_rois(2, n_images=2, image_size=image_size, per_image=30, dtype=dtype)
    for output_size in [(7, 7), (3, 5)]:
        ours = roi_pool(x, rois, output_size, spatial_scale)
        theirs = torchvision.ops.roi_pool(x, rois, output_size, spatial_scale)
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)


def test_rounds_exact_halves_away_from_zero():
    # torch.round would send 2.5 to 2 and -1.5 to -2; C's round, which torchvision uses, gives 3 and -2,
    # and 0.5 -> 1, -0.5 -> -1. A 1-pixel shift of the box changes which pixels each bin sees.
    x = features(3, torch.float64, shape=(1, 2, 9, 9))
    halves = torch.tensor([-1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5, 6.5], dtype=torch.float64)
    boxes = torch.cartesian_prod(halves, halves)
    rois = torch.cat([torch.zeros(len(boxes), 1, dtype=torch.float64), boxes, boxes + 3], dim=1)
    for scale in [1.0, 0.25]:
        torch.testing.assert_close(
            roi_pool(x, rois / torch.tensor([1, scale, scale, scale, scale]), 3, scale),
            torchvision.ops.roi_pool(x, rois / torch.tensor([1, scale, scale, scale, scale]), 3, scale),
            atol=0,
            rtol=0,
        )


def test_gradients_match_torchvision():
    x = features(4, torch.float64).requires_grad_()
    rois = make_rois(5, n_images=2, image_size=(44, 56), per_image=15)
    weight = torch.randn(len(rois), 3, 4, 5, dtype=torch.float64)
    ours = torch.autograd.grad((roi_pool(x, rois, (4, 5), 0.25) * weight).sum(), x)[0]
    theirs = torch.autograd.grad((torchvision.ops.roi_pool(x, rois, (4, 5), 0.25) * weight).sum(), x)[0]
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)


def test_ties_send_the_gradient_to_the_first_pixel():
    x = torch.ones(1, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.0, 0.0, 7.0, 7.0], [0, 1.0, 2.0, 6.0, 4.0]], dtype=torch.float64)
    ours = torch.autograd.grad(roi_pool(x, rois, 3).sum(), x)[0]
    theirs = torch.autograd.grad(torchvision.ops.roi_pool(x, rois, 3).sum(), x)[0]
    assert torch.equal(ours, theirs)


def test_gradcheck():
    x = features(6, torch.float64, shape=(2, 2, 6, 7)).requires_grad_()
    rois = make_rois(7, n_images=2, image_size=(12, 14), per_image=3)
    assert torch.autograd.gradcheck(lambda t: roi_pool(t, rois, (3, 2), 0.5), (x,))


def test_list_of_boxes_and_empty_boxes():
    x = features(8, torch.float32)
    rois = make_rois(9, n_images=2, image_size=(22, 28), per_image=6, dtype=torch.float32)
    per_image = [rois[rois[:, 0] == b, 1:] for b in range(2)]
    torch.testing.assert_close(roi_pool(x, per_image, 7, 0.5), roi_pool(x, rois, 7, 0.5), atol=0, rtol=0)
    for boxes in [torch.zeros(0, 5), [torch.zeros(0, 4), torch.zeros(0, 4)]]:
        assert roi_pool(x, boxes, (7, 6), 0.25).shape == torchvision.ops.roi_pool(x, boxes, (7, 6), 0.25).shape


@pytest.mark.parametrize("layout", ["non_contiguous", "channels_last"])
def test_memory_layouts(layout):
    x = features(10, torch.float32, shape=(2, 6, 11, 28))
    x = x[:, ::2, :, ::2] if layout == "non_contiguous" else x.contiguous(memory_format=torch.channels_last)
    rois = make_rois(11, n_images=2, image_size=(x.shape[2] * 4, x.shape[3] * 4), per_image=10, dtype=torch.float32)
    torch.testing.assert_close(roi_pool(x, rois, 7, 0.25), torchvision.ops.roi_pool(x, rois, 7, 0.25), atol=0, rtol=0)


def test_empty_boxes_give_a_zero_gradient():
    x = features(12, torch.float32).requires_grad_()
    roi_pool(x, torch.zeros(0, 5), 7).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
