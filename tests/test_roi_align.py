"""roi_align against torchvision's C++ kernel: values, gradients, and the edge cases."""
import pytest
import torch
import torchvision

from mrcnn_from_scratch.ops import roi_align

from conftest import assert_as_accurate_as, make_rois

# float64: a bin is a weighted sum of at most a few hundred samples of values below 5, so rounding moves it
# by less than 1e-13; 1e-10 leaves a margin of 1,000. float32 results are checked against that truth with
# assert_as_accurate_as (see conftest.py), not against a fixed number.
FLOAT64_TOLERANCE = 1e-10


def features(seed, dtype, shape=(2, 3, 11, 14)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("spatial_scale", [1.0, 1 / 4, 1 / 32])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2])
@pytest.mark.parametrize("aligned", [False, True])
def test_matches_torchvision(dtype, spatial_scale, sampling_ratio, aligned, jitter):
    x = jitter(features(1, dtype))
    image_size = (x.shape[2] / spatial_scale, x.shape[3] / spatial_scale)
    rois = make_rois(2, n_images=2, image_size=image_size, per_image=20, dtype=dtype)
    for output_size in [(7, 7), (3, 5)]:
        ours = roi_align(x, rois, output_size, spatial_scale, sampling_ratio, aligned)
        theirs = torchvision.ops.roi_align(x, rois, output_size, spatial_scale, sampling_ratio, aligned)
        assert ours.shape == theirs.shape
        if dtype == torch.float64:
            torch.testing.assert_close(ours, theirs, atol=FLOAT64_TOLERANCE, rtol=0)
        else:
            truth = torchvision.ops.roi_align(x.double(), rois.double(), output_size, spatial_scale,
                                              sampling_ratio, aligned)
            assert_as_accurate_as(ours, theirs, truth)


@pytest.mark.parametrize("aligned", [False, True])
def test_gradients_match_torchvision(aligned):
    x = features(3, torch.float64).requires_grad_()
    rois = make_rois(4, n_images=2, image_size=(44, 56), per_image=15)
    weight = torch.randn(len(rois), 3, 5, 4, dtype=torch.float64)
    for sampling_ratio in [-1, 2]:
        ours = torch.autograd.grad((roi_align(x, rois, (5, 4), 0.25, sampling_ratio, aligned) * weight).sum(), x)[0]
        theirs = torch.autograd.grad(
            (torchvision.ops.roi_align(x, rois, (5, 4), 0.25, sampling_ratio, aligned) * weight).sum(), x
        )[0]
        torch.testing.assert_close(ours, theirs, atol=FLOAT64_TOLERANCE, rtol=0)


@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("aligned", [False, True])
def test_gradcheck(sampling_ratio, aligned):
    x = features(5, torch.float64, shape=(2, 2, 6, 7)).requires_grad_()
    rois = make_rois(6, n_images=2, image_size=(12, 14), per_image=3)
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, (3, 2), 0.5, sampling_ratio, aligned), (x,))


def test_golden_values():
    # A 5×5 map holding 0..24, box [1, 1, 3, 3], 4×4 bins, one adaptive sample per bin: the samples
    # sit at 1.25, 1.75, 2.25, 2.75 (or half a pixel lower when aligned), so row 0 is easy to do by hand.
    x = torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5)
    box = torch.tensor([[0, 1.0, 1.0, 3.0, 3.0]])
    first_row = roi_align(x, box, 4, sampling_ratio=0, aligned=False)[0, 0, 0]
    assert first_row.tolist() == [7.5, 8.0, 8.5, 9.0]
    first_row = roi_align(x, box, 4, sampling_ratio=0, aligned=True)[0, 0, 0]
    assert first_row.tolist() == [4.5, 5.0, 5.5, 6.0]


def test_list_of_boxes_equals_tensor_form():
    x = features(7, torch.float64)
    rois = make_rois(8, n_images=2, image_size=(22, 28), per_image=6)
    per_image = [rois[rois[:, 0] == b, 1:] for b in range(2)]
    torch.testing.assert_close(roi_align(x, per_image, 7, 0.5, 2), roi_align(x, rois, 7, 0.5, 2), atol=0, rtol=0)
    torch.testing.assert_close(
        roi_align(x, per_image, 7, 0.5, 2), torchvision.ops.roi_align(x, per_image, 7, 0.5, 2), atol=FLOAT64_TOLERANCE, rtol=0
    )


def test_empty_boxes():
    x = features(9, torch.float32)
    for boxes in [torch.zeros(0, 5), [torch.zeros(0, 4), torch.zeros(0, 4)]]:
        out = roi_align(x, boxes, (7, 6), 0.25, 2)
        assert out.shape == (0, 3, 7, 6)
        assert out.shape == torchvision.ops.roi_align(x, boxes, (7, 6), 0.25, 2).shape
    x.requires_grad_()
    roi_align(x, torch.zeros(0, 5), 7).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_one_image_with_no_boxes_in_a_list():
    x = features(10, torch.float64)
    boxes = [torch.zeros(0, 4, dtype=torch.float64), torch.tensor([[1.0, 2.0, 9.0, 8.0]], dtype=torch.float64)]
    torch.testing.assert_close(roi_align(x, boxes, 3), torchvision.ops.roi_align(x, boxes, 3), atol=FLOAT64_TOLERANCE, rtol=0)


@pytest.mark.parametrize("layout", ["non_contiguous", "channels_last"])
def test_memory_layouts(layout, jitter):
    x = jitter(features(11, torch.float32, shape=(2, 6, 11, 28)))
    x = x[:, ::2, :, ::2] if layout == "non_contiguous" else x.contiguous(memory_format=torch.channels_last)
    rois = make_rois(12, n_images=2, image_size=(x.shape[2] * 4, x.shape[3] * 4), per_image=10, dtype=torch.float32)
    ours = roi_align(x, rois, 7, 0.25, 2)
    truth = torchvision.ops.roi_align(x.double(), rois.double(), 7, 0.25, 2)
    assert_as_accurate_as(ours, torchvision.ops.roi_align(x, rois, 7, 0.25, 2), truth)
    # The layout changes where values sit in memory, not which are added in which order: exactly equal.
    torch.testing.assert_close(ours, roi_align(x.contiguous(), rois, 7, 0.25, 2), atol=0, rtol=0)


def test_bad_input_is_rejected():
    x = features(13, torch.float32)
    with pytest.raises(ValueError, match=r"\[K, 5\]"):
        roi_align(x, torch.zeros(3, 4), 7)
    with pytest.raises(ValueError, match=r"boxes\[1\] must be \[L, 4\]"):
        roi_align(x, [torch.zeros(1, 4), torch.zeros(1, 5)], 7)
    with pytest.raises(TypeError, match="same dtype"):
        roi_align(x, torch.zeros(1, 5, dtype=torch.float64), 7)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        roi_align(x[0], torch.zeros(1, 5), 7)
