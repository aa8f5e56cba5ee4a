"""Time mrcnn_from_scratch.ops against torchvision.ops on the same inputs, in the same run.

    python benchmarks/ops.py [--repeats 7] [--device cpu|cuda]

Prints the median time of each and the ratio ours / torchvision (below 1 means ours is faster).
Every pair is first checked to give the same result, so both sides do the same work.
"""
import argparse
import datetime
import platform

import torch
import torchvision

from mrcnn_from_scratch import ops

from machine import cpu_name, median_seconds

FEATURES = (2, 256, 200, 272)  # a batch of two stride-4 FPN maps of an 800×1088 image
STRIDE = 4
ROI_COUNT = 1000
NMS_COUNT = 4000


def random_boxes(gen: torch.Generator, count: int, height: float, width: float) -> torch.Tensor:
    """Tensor[count, 4]: centres anywhere in the image, sides from 16 to 256 pixels (typical proposals)."""
    centre = torch.rand(count, 2, generator=gen) * torch.tensor([width, height])
    size = 16 + torch.rand(count, 2, generator=gen) * 240
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def forward_backward(roi_op, features, rois, *args):
    def run():
        features.grad = None
        roi_op(features, rois, *args).sum().backward()

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    gen = torch.Generator().manual_seed(0)
    features = torch.rand(*FEATURES, generator=gen).to(device)
    height, width = FEATURES[2] * STRIDE, FEATURES[3] * STRIDE
    batch_index = torch.randint(0, FEATURES[0], (ROI_COUNT, 1), generator=gen).float()
    rois = torch.cat([batch_index, random_boxes(gen, ROI_COUNT, height, width)], dim=1).to(device)
    nms_boxes = random_boxes(gen, NMS_COUNT, height, width).to(device)
    nms_scores = torch.rand(NMS_COUNT, generator=gen).to(device)
    grad_features = features.clone().requires_grad_()
    align_args = ((7, 7), 1 / STRIDE, 2, False)
    pool_args = ((7, 7), 1 / STRIDE)

    cases = [
        ("roi_align forward", ops.roi_align, torchvision.ops.roi_align, features, align_args),
        ("roi_align forward+backward", ops.roi_align, torchvision.ops.roi_align, grad_features, align_args),
        ("roi_pool forward", ops.roi_pool, torchvision.ops.roi_pool, features, pool_args),
        ("roi_pool forward+backward", ops.roi_pool, torchvision.ops.roi_pool, grad_features, pool_args),
    ]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"{datetime.date.today()}  {platform.machine()}  {name}")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} threads")
    print(f"features {list(FEATURES)}, {ROI_COUNT} boxes, 7x7 output; nms on {NMS_COUNT} boxes")
    print(f"{'operation':34s} {'ours (ms)':>10s} {'torchvision':>12s} {'ratio':>7s}")

    results = []
    for name, ours, theirs, x, op_args in cases:
        # On a GPU both sum in a different order than on the CPU: allow a little more rounding.
        atol = 1e-5 if device.type == "cpu" else 1e-4
        torch.testing.assert_close(ours(features, rois, *op_args), theirs(features, rois, *op_args), atol=atol, rtol=0)
        if x.requires_grad:
            results.append((name, forward_backward(ours, x, rois, *op_args), forward_backward(theirs, x, rois, *op_args)))
        else:
            results.append((name, lambda o=ours, a=op_args: o(x, rois, *a), lambda t=theirs, a=op_args: t(x, rois, *a)))
    for iou_threshold in (0.5, 0.7):
        assert torch.equal(ops.nms(nms_boxes, nms_scores, iou_threshold), torchvision.ops.nms(nms_boxes, nms_scores, iou_threshold))
        results.append(
            (
                f"nms (IoU {iou_threshold})",
                lambda t=iou_threshold: ops.nms(nms_boxes, nms_scores, t),
                lambda t=iou_threshold: torchvision.ops.nms(nms_boxes, nms_scores, t),
            )
        )
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for name, ours, theirs in results:
        ours_s, theirs_s = median_seconds(ours, theirs, args.repeats, synchronize)
        print(f"{name:34s} {ours_s * 1e3:10.1f} {theirs_s * 1e3:12.1f} {ours_s / theirs_s:7.2f}")


if __name__ == "__main__":
    main()
