"""On a CUDA machine: do our ops and model give torchvision's results on the GPU too?

    python benchmarks/cuda_check.py

The tests run on the CPU; this script repeats the key equivalence checks with every tensor on the GPU,
where torchvision's own CUDA kernels are the reference. It prints one line per check.
"""
import torch
import torchvision

from mrcnn_from_scratch import load_torchvision_weights, maskrcnn_resnet50_fpn, ops


def report(name, ours, theirs, atol):
    error = (ours.double() - theirs.double()).abs().max().item() if ours.numel() else 0.0
    print(f"{name:48s} max |diff| {error:.2e}  {'ok' if error <= atol and ours.shape == theirs.shape else 'FAIL'}")


def main():
    device = torch.device("cuda")
    # TF32 convolutions and matmuls would round each model differently; compare at full float32.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    print(torch.cuda.get_device_name(device), "torch", torch.__version__, "torchvision", torchvision.__version__)
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(2, 16, 50, 68, generator=gen).to(device).requires_grad_()
    centre, size = torch.rand(300, 2, generator=gen) * 250, torch.rand(300, 2, generator=gen) * 120
    rois = torch.cat([torch.randint(0, 2, (300, 1), generator=gen).float(), centre - size / 2, centre + size / 2], 1)
    rois = rois.to(device)
    for sampling_ratio in (-1, 2):
        for aligned in (False, True):
            ours = ops.roi_align(features, rois, 7, 0.25, sampling_ratio, aligned)
            theirs = torchvision.ops.roi_align(features, rois, 7, 0.25, sampling_ratio, aligned)
            report(f"roi_align sr={sampling_ratio} aligned={aligned}", ours, theirs, 1e-4)
            weight = torch.randn_like(ours)
            grads = [torch.autograd.grad((o * weight).sum(), features)[0] for o in (ours, theirs)]
            report(f"roi_align gradient sr={sampling_ratio} aligned={aligned}", *grads, 1e-4)
    report("roi_pool", ops.roi_pool(features, rois, 7, 0.25), torchvision.ops.roi_pool(features, rois, 7, 0.25), 0)
    boxes, scores = rois[:, 1:], torch.rand(300, generator=gen).to(device)
    for threshold in (0.3, 0.7):
        same = torch.equal(ops.nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold))
        print(f"{'nms IoU ' + str(threshold):48s} {'ok' if same else 'FAIL'}")

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
            print(f"model image {i}: {len(a['boxes'])} vs {len(b['boxes'])} detections, labels "
                  f"{'equal' if torch.equal(a['labels'], b['labels']) else 'DIFFER'}")
            if len(a["boxes"]) == len(b["boxes"]):
                report(f"model image {i} boxes", a["boxes"], b["boxes"], 1e-3)
                report(f"model image {i} scores", a["scores"], b["scores"], 1e-4)


if __name__ == "__main__":
    main()
