"""On a CUDA GPU only: the equivalence cases on the GPU, and how often a training step makes the host wait.

Where CUDA is not available every test here is skipped, and the skip reason in pytest's summary says so.
"""
import warnings

import pytest
import torch
import torchvision

from mrcnn_from_scratch import load_torchvision_weights, maskrcnn_resnet50_fpn, ops

from conftest import assert_as_accurate_as
from test_model import NUM_CLASSES, assert_same_detections, detect, make_models, odd_images, redraw_weights

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU here: the GPU equivalence and sync-count tests did not run")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def full_float32():
    """TF32 convolutions and matmuls would round each model differently: compare at full float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def random_rois(gen, count=300, images=2):
    centre, size = torch.rand(count, 2, generator=gen) * 250, torch.rand(count, 2, generator=gen) * 120
    index = torch.randint(0, images, (count, 1), generator=gen).float()
    return torch.cat([index, centre - size / 2, centre + size / 2], 1)


@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_on_cuda_is_as_accurate_as_torchvision(sampling_ratio, aligned):
    gen = torch.Generator().manual_seed(0)
    features, rois = torch.randn(2, 16, 50, 68, generator=gen), random_rois(gen)
    args = (7, 0.25, sampling_ratio, aligned)
    truth = torchvision.ops.roi_align(features.double().to(CUDA), rois.double().to(CUDA), *args)
    ours = ops.roi_align(features.to(CUDA), rois.to(CUDA), *args)
    theirs = torchvision.ops.roi_align(features.to(CUDA), rois.to(CUDA), *args)
    assert_as_accurate_as(ours, theirs, truth, "roi_align on CUDA")


def test_roi_pool_on_cuda_matches_torchvision_exactly():
    gen = torch.Generator().manual_seed(1)
    features, rois = torch.randn(2, 16, 50, 68, generator=gen).to(CUDA), random_rois(gen).to(CUDA)
    assert torch.equal(ops.roi_pool(features, rois, 7, 0.25), torchvision.ops.roi_pool(features, rois, 7, 0.25))


@pytest.mark.parametrize("count", [0, 1, 300, 800, 6000])
def test_nms_on_cuda_keeps_what_torchvision_keeps(count):
    gen = torch.Generator().manual_seed(count)
    rois = random_rois(gen, count).to(CUDA)
    boxes, scores = rois[:, 1:], torch.rand(count, generator=gen).to(CUDA)
    categories = torch.randint(0, 5, (count,), generator=gen).to(CUDA)
    for threshold in (0.3, 0.5, 0.7):
        assert torch.equal(ops.nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold))
        # 6000 boxes: above torchvision's 5000 on a GPU, one NMS per category.
        assert torch.equal(ops.batched_nms(boxes, scores, categories, threshold),
                           torchvision.ops.batched_nms(boxes, scores, categories, threshold))


def test_model_on_cuda_matches_torchvision_in_float64():
    ours, theirs = make_models(min_size=320, max_size=533)
    ours, theirs = ours.to(CUDA), theirs.to(CUDA)
    images = [image.to(CUDA) for image in odd_images(torch.float64)]
    got, expected = detect(ours, images, torch.float64), detect(theirs, images, torch.float64)
    assert all(len(d["boxes"]) > 0 for d in expected), "the test input must give detections"
    assert_same_detections(got, expected)
    for a, b in zip(got, expected):
        for key in ["boxes", "scores", "masks"]:  # float64: see test_model.py for the 1e-8
            torch.testing.assert_close(a[key], b[key], atol=1e-8, rtol=0, msg=key)


def count_syncs(step) -> int:
    """How many times `step()` makes the host wait for the GPU, as CUDA's sync debug mode reports them."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def test_a_training_step_on_cuda_syncs_no_more_than_torchvision():
    """The target of issue 13: a training step waits for the GPU no more often than torchvision's."""
    torch.manual_seed(0)
    theirs = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                                num_classes=NUM_CLASSES, min_size=320, max_size=533)
    redraw_weights(theirs)
    ours = maskrcnn_resnet50_fpn(num_classes=NUM_CLASSES, norm="bn", trainable_stages=5, min_size=(320,), max_size=533)
    load_torchvision_weights(ours, theirs.state_dict())
    gen = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 320, 320, generator=gen).to(CUDA) for _ in range(2)]
    boxes = torch.tensor([[20.0, 30.0, 120.0, 150.0], [150.0, 40.0, 300.0, 200.0], [60.0, 200.0, 140.0, 300.0]])
    masks = torch.zeros(3, 320, 320, dtype=torch.uint8)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
        mask[y1:y2, x1:x2] = 1
    targets = [{"boxes": boxes.to(CUDA), "labels": torch.tensor([1, 2, 3]).to(CUDA), "masks": masks.to(CUDA)}] * 2

    def train_step(model):
        def step():
            losses = model(images, targets)
            sum(losses.values()).backward()
        return step

    ours, theirs = ours.to(CUDA).train(), theirs.to(CUDA).train()
    train_step(ours)(), train_step(theirs)()  # warm-up: lazy initialisation is not part of a step
    ours_syncs, their_syncs = count_syncs(train_step(ours)), count_syncs(train_step(theirs))
    print(f"host syncs in one training step on CUDA: ours {ours_syncs}, torchvision {their_syncs}")
    assert ours_syncs <= their_syncs
