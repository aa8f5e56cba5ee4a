"""Time our Mask R-CNN against torchvision's maskrcnn_resnet50_fpn with identical weights.

    python benchmarks/model.py [--repeats 5] [--device cpu|cuda] [--amp] [--profile]

Two cases, each on the same inputs for both models in the same run:
- a training step (forward, backward, SGD step): batch 2, 512×512 images, 3 objects each;
- inference: batch 1, a 480×640 image.
Prints median times and the ratio ours / torchvision (below 1 means ours is faster). The RNG is
re-seeded before every call. Our model samples its training anchors and RoIs by ranks (its default,
config.sampler_draws), torchvision by randperm: other boxes, but the same numbers of them, so the same work.
"""
import argparse
import datetime

import torch
import torchvision

from mrcnn_from_scratch import load_torchvision_weights, maskrcnn_resnet50_fpn

from machine import cpu_name, median_seconds

NUM_CLASSES = 91


def make_models(device):
    torch.manual_seed(0)
    theirs = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                                num_classes=NUM_CLASSES)
    # Random weights score every class about 1/91, under the 0.05 threshold: nothing would be detected.
    # A wider spread of the class logits gives inference detections to filter and masks to paste.
    with torch.no_grad():
        theirs.roi_heads.box_predictor.cls_score.weight.normal_(std=0.2)
    # torchvision without pretrained weights: BatchNorm, every stage trainable. Ours the same.
    ours = maskrcnn_resnet50_fpn(num_classes=NUM_CLASSES, norm="bn", trainable_stages=5)
    load_torchvision_weights(ours, theirs.state_dict())
    return ours.to(device), theirs.to(device)


def training_batch(device, size=512):
    """Two size×size images with 3 box-shaped objects each, 40 to 160 px a side."""
    gen = torch.Generator().manual_seed(1)
    images, targets = [], []
    for _ in range(2):
        images.append(torch.rand(3, size, size, generator=gen).to(device))
        corners = torch.rand(3, 2, generator=gen) * (size - 162)
        sizes = 40 + torch.rand(3, 2, generator=gen) * 120
        boxes = torch.cat([corners, corners + sizes], dim=1)
        masks = torch.zeros(3, size, size, dtype=torch.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
            m[y1:y2, x1:x2] = 1
        targets.append({"boxes": boxes.to(device), "labels": torch.tensor([1, 2, 3], device=device),
                        "masks": masks.to(device)})
    return images, targets


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true", help="print where our model spends its time")
    parser.add_argument("--amp", action="store_true", help="float16 autocast for both models (CUDA)")
    args = parser.parse_args()
    device = torch.device(args.device)

    ours, theirs = make_models(device)
    images, targets = training_batch(device)
    test_image = [torch.rand(3, 480, 640, generator=torch.Generator().manual_seed(2)).to(device)]
    optimizers = {id(m): torch.optim.SGD(m.parameters(), lr=1e-5, momentum=0.9) for m in (ours, theirs)}

    def train_step(model):
        model.train()
        torch.manual_seed(3)
        with torch.autocast(device.type, dtype=torch.float16, enabled=args.amp):
            losses = model(images, targets)
        optimizers[id(model)].zero_grad()
        sum(losses.values()).backward()
        optimizers[id(model)].step()

    def infer(model):
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=args.amp):
            model(test_image)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"{datetime.date.today()}  {name}  torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{torch.get_num_threads()} threads{', float16 autocast' if args.amp else ''}")
    print(f"{'case':44s} {'ours (s)':>9s} {'torchvision':>12s} {'ratio':>7s}")
    for case, step in [("training step (2 × 512×512, 3 objects each)", train_step),
                       ("inference (1 × 480×640)", infer)]:
        synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        ours_s, theirs_s = median_seconds(lambda: step(ours), lambda: step(theirs), args.repeats, synchronize)
        print(f"{case:44s} {ours_s:9.3f} {theirs_s:12.3f} {ours_s / theirs_s:7.2f}")

    if args.profile:
        for case, step in [("training step", train_step), ("inference", infer)]:
            with torch.profiler.profile() as prof:
                step(ours)
            print(f"\nour {case}, by operator:")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
