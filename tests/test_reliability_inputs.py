"""Model inputs: every wrong value is refused naming the image (and box), and checking costs one host sync."""
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mrcnn_from_scratch import MaskRCNN, small_config
from mrcnn_from_scratch.checks import check_inputs

NUM_CLASSES = 4
CONFIG = small_config(NUM_CLASSES)  # min_size 128, max_size 128


def target(boxes=((4.0, 5.0, 30.0, 40.0),), labels=(1,), h=64, w=80):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {"boxes": boxes, "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.zeros(len(boxes), h, w, dtype=torch.uint8)}


def image(fill=None, h=64, w=80, dtype=torch.float32):
    pixels = torch.rand(3, h, w, dtype=dtype)
    if fill is not None:
        pixels[1, 10, 20] = fill
    return pixels


@pytest.mark.parametrize("bad, error, message", [
    (image(math.nan), ValueError, r"images\[1\] holds 1 NaN or Inf values"),
    (image(math.inf), ValueError, r"images\[1\] holds 1 NaN or Inf values"),
    (image() * 255, ValueError, r"images\[1\] has values up to 2\d\d.*pass image / 255"),
    (image(-1.8), ValueError, r"images\[1\] has values down to -1.8.*normalizes itself"),
    (image(dtype=torch.float64), TypeError, r"images\[1\] is torch.float64 but the model's weights are torch.float32: "
                                            r"pass image.to\(torch.float32\)"),
    (image(dtype=torch.float16), TypeError, r"images\[1\] is torch.float16"),
    (image(h=8, w=2000), ValueError, r"images\[1\] is 8×2000: .* short side would be 0.51 pixels"),
])
def test_bad_images_are_refused_with_their_index(bad, error, message):
    with pytest.raises(error, match=message):
        check_inputs([image(), bad], None, CONFIG, torch.float32)


@pytest.mark.parametrize("bad, message", [
    (target(boxes=((4.0, 5.0, math.inf, 40.0),)),
     r"targets\[1\]\['boxes'\]\[0\] = \[4.0, 5.0, inf, 40.0\] is not finite"),
    (target(boxes=((1.0, 1.0, 2.0, 2.0), (math.nan, 5.0, 30.0, 40.0)), labels=(1, 2)),
     r"targets\[1\]\['boxes'\]\[1\] = \[nan, .* is not finite"),
    (target(boxes=((-3e38, 5.0, 3e38, 40.0),)), r"targets\[1\]\['boxes'\]\[0\] .* is too large: its size overflows"),
    (target(boxes=((40.0, 5.0, 30.0, 40.0),)), r"targets\[1\]\['boxes'\]\[0\] .* has no area"),
    (target(labels=(NUM_CLASSES,)), r"targets\[1\]\['labels'\]\[0\] = 4 is outside 1..3"),
    ({**target(), "labels": torch.tensor([1], device="meta")},
     r"targets\[1\]\['labels'\] is on meta but image 1 is on cpu"),
])
def test_bad_targets_are_refused_with_their_index(bad, message):
    with pytest.raises(ValueError, match=message):
        check_inputs([image(), image()], [target(), bad], CONFIG, torch.float32)


def test_extreme_aspect_ratios_work_while_the_short_side_keeps_a_pixel():
    model = MaskRCNN(CONFIG).eval()
    long_and_thin = [torch.rand(3, 16, 2000), torch.rand(3, 2000, 16)]  # 1 pixel by 128 after resizing
    with torch.no_grad():
        detections = model(long_and_thin)
    assert [d["masks"].shape[-2:] for d in detections] == [(16, 2000), (2000, 16)]
    check_inputs(long_and_thin, None, CONFIG, torch.float32)


def test_a_float64_model_takes_float64_images():
    check_inputs([image(dtype=torch.float64)], [target()], CONFIG, torch.float64)


def test_the_model_refuses_nan_images_and_inf_boxes():
    model = MaskRCNN(CONFIG)
    with pytest.raises(ValueError, match=r"images\[0\] holds 1 NaN"):
        model.eval()([image(math.nan)])
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\]\[0\] .* is not finite"):
        model.train()([image()], [target(boxes=((0.0, 0.0, math.inf, 9.0),))])


class SyncCounter(TorchDispatchMode):
    """Counts the operators that make the host wait for a GPU: reading a value (item, bool, tolist),
    nonzero (and so torch.where(cond) and boolean-mask indexing, whose output size depends on values)."""
    SYNCING = ("aten._local_scalar_dense", "aten.nonzero", "aten.is_nonzero", "aten.equal", "aten.masked_select")

    def __init__(self):
        super().__init__()
        self.syncs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func).startswith(self.SYNCING) or (str(func).startswith("aten.index.Tensor")
                                                  and any(t is not None and t.dtype == torch.bool for t in args[1])):
            self.syncs.append(str(func))
        return func(*args, **(kwargs or {}))


def test_checking_valid_inputs_reads_from_the_device_once(monkeypatch):
    # Tensor.tolist reads values without passing through the dispatcher, so it is counted separately.
    reads = []
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(self.shape) or tolist(self))
    images = [image(), image(h=32, w=48), image()]
    two_boxes = target(boxes=((1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 70.0, 60.0)), labels=(1, 3))
    targets = [target(), target(h=32, w=48), two_boxes]
    with SyncCounter() as counter:
        check_inputs(images, targets, CONFIG, torch.float32)
    assert counter.syncs == [] and reads == [torch.Size([6])]  # one read of all six flags


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_checking_valid_inputs_syncs_once_on_a_gpu():
    images = [image().cuda(), image().cuda()]
    targets = [{k: v.cuda() for k, v in target().items()} for _ in images]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with pytest.warns(UserWarning, match="synchroniz") as warned:
            check_inputs(images, targets, CONFIG, torch.float32)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(warned) == 1
