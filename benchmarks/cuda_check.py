"""On a CUDA machine: do our ops and model give torchvision's results on the GPU too?

    python benchmarks/cuda_check.py

The tests run on the CPU; this script repeats the key equivalence checks with every tensor on the GPU,
where torchvision's own CUDA kernels are the reference. It prints one line per check and exits with
status 1 if any check fails. (tests/test_cuda.py runs the same kind of checks under pytest.)
"""
import sys

import torch
import torchvision

from mrcnn_from_scratch import load_torchvision_weights, maskrcnn_resnet50_fpn, ops

failures = []


def report(name: str, ok: bool, detail: str = "") -> None:
    print(f"{name:48s} {detail:28s} {'ok' if ok else 'FAIL'}")
    if not ok:
        failures.append(name)


def compare(name: str, ours: torch.Tensor, theirs: torch.Tensor, atol: float) -> None:
    """Shapes must agree; then the largest difference must be within atol."""
    if ours.shape != theirs.shape:
        report(name, False, f"shapes {list(ours.shape)} vs {list(theirs.shape)}")
        return
    error = (ours.double() - theirs.double()).abs().max().item() if ours.numel() else 0.0
    report(name, error <= atol, f"max |diff| {error:.2e}")


def check_ops(device, gen):
    features = torch.randn(2, 16, 50, 68, generator=gen).to(device).requires_grad_()
    centre, size = torch.rand(300, 2, generator=gen) * 250, torch.rand(300, 2, generator=gen) * 120
    rois = torch.cat([torch.randint(0, 2, (300, 1), generator=gen).float(), centre - size / 2, centre + size / 2], 1)
    rois = rois.to(device)
    for sampling_ratio in (-1, 2):
        for aligned in (False, True):
            ours = ops.roi_align(features, rois, 7, 0.25, sampling_ratio, aligned)
            theirs = torchvision.ops.roi_align(features, rois, 7, 0.25, sampling_ratio, aligned)
            compare(f"roi_align sr={sampling_ratio} aligned={aligned}", ours, theirs, 1e-4)
            weight = torch.randn_like(ours)
            grads = [torch.autograd.grad((o * weight).sum(), features)[0] for o in (ours, theirs)]
            compare(f"roi_align gradient sr={sampling_ratio} aligned={aligned}", *grads, 1e-4)
    compare("roi_pool", ops.roi_pool(features, rois, 7, 0.25), torchvision.ops.roi_pool(features, rois, 7, 0.25), 0)
    boxes, scores = rois[:, 1:], torch.rand(300, generator=gen).to(device)
    for threshold in (0.3, 0.7):
        ours, theirs = ops.nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold)
        report(f"nms IoU {threshold}", torch.equal(ours, theirs), f"{len(ours)} vs {len(theirs)} kept")
    # More boxes than torchvision's 5000 on a GPU: batched NMS one category at a time.
    many = torch.cat([torch.rand(6000, 2, generator=gen) * 500, torch.rand(6000, 2, generator=gen) * 100], 1)
    many = torch.cat([many[:, :2], many[:, :2] + many[:, 2:]], 1).to(device)
    many_scores, categories = torch.rand(6000, generator=gen).to(device), torch.randint(0, 5, (6000,), generator=gen).to(device)
    for count in (800, 6000):
        ours = ops.batched_nms(many[:count], many_scores[:count], categories[:count], 0.5)
        theirs = torchvision.ops.batched_nms(many[:count], many_scores[:count], categories[:count], 0.5)
        report(f"batched_nms {count} boxes", torch.equal(ours, theirs), f"{len(ours)} vs {len(theirs)} kept")


def check_model(device, gen):
    torch.manual_seed(0)
    reference = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=7)
    with torch.no_grad():
        for p in reference.roi_heads.box_predictor.parameters():
            p.normal_(std=0.2)
    model = maskrcnn_resnet50_fpn(num_classes=7, norm="bn", trainable_stages=5)
    load_torchvision_weights(model, reference.state_dict())
    model, reference = model.to(device).eval(), reference.to(device).eval()
    images = [torch.rand(3, 300, 451, generator=gen).to(device), torch.rand(3, 517, 333, generator=gen).to(device)]
    with torch.no_grad():
        for i, (a, b) in enumerate(zip(model(images), reference(images))):
            report(f"model image {i}: detections", len(a["boxes"]) == len(b["boxes"]),
                   f"{len(a['boxes'])} vs {len(b['boxes'])}")
            # Compare the common rows even when the counts differ: it shows where the two part ways.
            common = min(len(a["boxes"]), len(b["boxes"]))
            report(f"model image {i}: labels", torch.equal(a["labels"][:common], b["labels"][:common]))
            compare(f"model image {i}: boxes", a["boxes"][:common], b["boxes"][:common], 1e-3)
            compare(f"model image {i}: scores", a["scores"][:common], b["scores"][:common], 1e-4)
            compare(f"model image {i}: masks", a["masks"][:common], b["masks"][:common], 1e-3)


def main():
    device = torch.device("cuda")
    # TF32 convolutions and matmuls would round each model differently; compare at full float32.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    print(torch.cuda.get_device_name(device), "torch", torch.__version__, "torchvision", torchvision.__version__)
    gen = torch.Generator().manual_seed(0)
    check_ops(device, gen)
    check_model(device, gen)
    print(f"{len(failures)} check(s) failed: {', '.join(failures)}" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
