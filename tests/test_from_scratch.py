"""The package computes with PyTorch alone: it must work where torchvision cannot be imported."""
import subprocess
import sys
import textwrap


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
        from mrcnn_from_scratch import ops
        x = torch.rand(1, 2, 8, 8)
        boxes = torch.tensor([[0.0, 1.0, 1.0, 6.0, 5.0]])
        ops.roi_align(x, boxes, 2, sampling_ratio=2); ops.roi_pool(x, boxes, 2)
        ops.nms(boxes[:, 1:], torch.ones(1), 0.5)
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
