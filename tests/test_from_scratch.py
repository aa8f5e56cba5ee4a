"""The package computes with PyTorch alone: it must work where torchvision cannot be imported.

One subprocess, with `import torchvision` made to fail, imports every module and then uses the model the way a
learner does: the ops, one training step (the five losses, backward, an optimizer step) and one inference. A
torchvision call hidden in a function that only runs in the forward pass (a pooler, the mask pasting) fails it
with ImportError, where importing the modules alone would not.
"""
import subprocess
import sys
import textwrap

from conftest import TINY


def test_package_runs_without_torchvision():
    script = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        sys.modules["torchvision"] = None  # any `import torchvision` now raises ImportError
        import torch
        import mrcnn_from_scratch
        for module in pkgutil.walk_packages(mrcnn_from_scratch.__path__, "mrcnn_from_scratch."):
            # Data augmentation is torchvision.transforms.v2's job, kept in its own module.
            if module.name != "mrcnn_from_scratch.data.transforms":
                importlib.import_module(module.name)
        from mrcnn_from_scratch import MaskRCNN, ops, small_config
        x = torch.rand(1, 2, 8, 8)
        boxes = torch.tensor([[0.0, 1.0, 1.0, 6.0, 5.0]])
        ops.roi_align(x, boxes, 2, sampling_ratio=2); ops.roi_pool(x, boxes, 2)
        ops.nms(boxes[:, 1:], torch.ones(1), 0.5)

        # The model: one training step, then one inference, on two images of different sizes.
        torch.manual_seed(0)
        model = MaskRCNN(small_config(4).replace(**TINY)).train()
        images = [torch.rand(3, 64, 80), torch.rand(3, 72, 64)]
        targets = []
        for image, (x1, y1, x2, y2), label in zip(images, [(8, 10, 40, 50), (20, 4, 60, 30)], [1, 3]):
            mask = torch.zeros(1, *image.shape[1:], dtype=torch.uint8)
            mask[0, y1:y2, x1:x2] = 1
            targets.append({"boxes": torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32),
                            "labels": torch.tensor([label]), "masks": mask})
        losses = model(images, targets)
        assert sorted(losses) == ["loss_box_reg", "loss_classifier", "loss_mask", "loss_objectness",
                                  "loss_rpn_box_reg"], sorted(losses)
        total = sum(losses.values())
        assert torch.isfinite(total), losses
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        moved = {name.split(".")[0] for name, p in model.named_parameters() if not torch.equal(p, before[name])}
        assert moved == {"backbone", "rpn", "roi_heads"}, moved

        model.eval()
        with torch.no_grad():
            detections = model(images)
        for image, found in zip(images, detections):
            assert sorted(found) == ["boxes", "labels", "masks", "scores"], sorted(found)
            assert len(found["boxes"]) > 0  # random class scores (about 1/4) pass 0.05: the masks are pasted
            assert found["masks"].shape == (len(found["boxes"]), 1, *image.shape[1:]), found["masks"].shape
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", f"TINY = {TINY!r}\n" + script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
