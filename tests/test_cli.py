"""The command line: clear errors, torchvision's COCO weights in `predict`, and training under torchrun
with two CPU processes (gloo)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from mrcnn_from_scratch.__main__ import main
from mrcnn_from_scratch.engine.checkpoint import load_checkpoint
from mrcnn_from_scratch.engine.logbook import read_metrics

TINY_SET = ["--set", "min_size=64", "max_size=64", "width=8", "fpn_channels=16", "box_representation_size=32",
            "mask_channels=16"]


# What a rank prints when it aborts in C++ while tearing down (std::terminate on a joinable thread). Not
# retried: such a run fails here, named as such. benchmarks/teardown_runs.py measures how often it happens.
TEARDOWN_ABORT = "terminate called without an active exception"


@pytest.fixture(scope="module")
def ddp_run(shapes, tmp_path_factory):
    """2 iterations by 2 processes under torchrun, one image each per step; returns (run, stdout)."""
    run = tmp_path_factory.mktemp("ddp")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "mrcnn_from_scratch", "train", "--data", str(shapes), "--out", str(run), "--iters", "2",
               "--batch-size", "1", "--workers", "0", "--device", "cpu", *TINY_SET]
    # One thread per process: two processes on a small machine must not fight over its cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    aborted = "a rank aborted at teardown (see TEARDOWN_ABORT)\n" if TEARDOWN_ABORT in result.stderr else ""
    assert result.returncode == 0, aborted + result.stderr[-3000:]
    return run, result.stdout


def test_torchrun_with_two_cpu_processes(ddp_run):
    run, stdout = ddp_run
    assert stdout.count("training small (3 classes") == 1  # only rank 0 speaks
    assert "on cpu × 2" in stdout
    checkpoint = load_checkpoint(run / "last.pt")
    assert checkpoint["iteration"] == 2
    assert checkpoint["data_order"]["world_size"] == 2 and len(checkpoint["rng"]) == 2
    assert not any(key.startswith("module.") for key in checkpoint["model"])  # the bare model, not DDP's wrapper
    records = read_metrics(run / "metrics.jsonl")
    assert [(r["type"], r["iteration"]) for r in records] == [("train", 1), ("train", 2), ("val", 2)]


def test_resume_refuses_options_that_contradict_the_run(ddp_run, shapes, capsys):
    run, _ = ddp_run
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(shapes), "--out", str(run), "--resume", "--lr", "0.5"])
    assert exit_info.value.code == 2
    assert "lr 0.5 (the run has 0.001)" in capsys.readouterr().err


def test_an_existing_run_needs_resume(ddp_run, shapes, capsys):
    run, _ = ddp_run
    with pytest.raises(SystemExit):
        main(["train", "--data", str(shapes), "--out", str(run)])
    assert "last.pt exists: pass --resume" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    ["train", "--out", "{tmp}/run"],
    ["evaluate", "--checkpoint", "{tmp}/run/last.pt"],
])
def test_a_missing_dataset_names_the_expected_layout(command, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as exit_info:
        main([part.format(tmp=tmp_path) for part in command] + ["--data", str(missing)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    split = "train" if command[0] == "train" else "val"
    assert f"{missing}/annotations/instances_{split}.json" in error and f"{missing}/{split}/" in error
    assert "python -m mrcnn_from_scratch.data.shapes" in error


@pytest.mark.parametrize("arguments, message", [
    (["--amp", "--device", "cpu"], "--amp (mixed precision) needs a CUDA GPU"),
    (["--set", "colour=red"], "--set colour=red: expected FIELD=VALUE with a MaskRCNNConfig field"),
])
def test_bad_train_options_are_explained(arguments, message, shapes, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(shapes), "--out", str(tmp_path / "run"), *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_predict_with_a_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--checkpoint", str(tmp_path / "last.pt"), "image.png", "--out", str(tmp_path)])
    assert "checkpoint not found" in capsys.readouterr().err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert all(command in printed for command in ("train", "evaluate", "predict"))


def test_predict_with_torchvision_weights(tmp_path):
    # What a user does with torchvision's COCO checkpoint file, with random weights in its place.
    torch.manual_seed(0)
    reference = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    torch.save(reference.state_dict(), tmp_path / "maskrcnn_coco.pth")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see test_engine.py
    try:
        main(["predict", "--torchvision-weights", str(tmp_path / "maskrcnn_coco.pth"), str(tmp_path / "photo.jpg"),
              "--out", str(tmp_path / "pictures"), "--device", "cpu", "--score-thresh", "0"])
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "pictures" / "photo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------- evaluate and predict check values, not only keys and file headers

@pytest.fixture(scope="module")
def one_step_run(shapes, tmp_path_factory):
    """A real checkpoint of the tiny model after one training step: what evaluate and predict load."""
    run = tmp_path_factory.mktemp("one_step")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main(["train", "--data", str(shapes), "--out", str(run), "--iters", "1", "--batch-size", "2", "--workers", "0",
              "--val-every", "0", "--device", "cpu", *TINY_SET])
    finally:
        torch.set_num_threads(threads)
    return run


def _fake_detections(monkeypatch, answer):
    """Make the model in evaluation mode return answer(image) for each image, whatever its weights."""
    from mrcnn_from_scratch import MaskRCNN

    forward = MaskRCNN.forward

    def answering(self, images, targets=None):
        return forward(self, images, targets) if self.training else [answer(image) for image in images]

    monkeypatch.setattr(MaskRCNN, "forward", answering)


def test_evaluate_computes_the_ap_of_a_hand_made_case(shapes, one_step_run, tmp_path, monkeypatch):
    """Perfect detections on every val image but the first, which gets none: every object found with IoU 1,
    except the first image's. Per class, precision is 1 up to recall R = found / objects and 0 beyond, so
    COCO's 101-point AP is the share of the recall points 0, 0.01, ..., 1 at or below R, at every IoU
    threshold; the AP is its mean over the classes."""
    from mrcnn_from_scratch.data import CocoInstances

    val = CocoInstances(shapes / "val", shapes / "annotations" / "instances_val.json")
    truth = {val[i][0].numpy().tobytes(): val[i][1] for i in range(len(val))}
    first = val[0][0].numpy().tobytes()

    def answer(image):
        target = truth[image.numpy().tobytes()]
        keep = slice(0, 0) if image.numpy().tobytes() == first else slice(None)
        return {"boxes": target["boxes"][keep], "labels": target["labels"][keep],
                "scores": torch.ones(len(target["labels"]))[keep], "masks": target["masks"][keep, None].float()}

    _fake_detections(monkeypatch, answer)
    main(["evaluate", "--checkpoint", str(one_step_run / "last.pt"), "--data", str(shapes), "--device", "cpu",
          "--out", str(tmp_path / "eval.json")])
    metrics = json.loads((tmp_path / "eval.json").read_text())

    labels = [target["labels"] for _, target in val]
    expected = []
    for label in sorted(set(torch.cat(labels).tolist())):
        total = sum(int((l == label).sum()) for l in labels)
        found = total - int((labels[0] == label).sum())
        recall = found / total
        expected.append(sum(r <= recall + 1e-12 for r in np.linspace(0, 1, 101)) / 101)
    assert 0 < np.mean(expected) < 1  # the case is not trivial: the first image has objects
    for kind in ("bbox", "segm"):
        assert metrics[f"{kind}.AP"] == pytest.approx(np.mean(expected), abs=1e-6)
        assert metrics[f"{kind}.AP50"] == pytest.approx(np.mean(expected), abs=1e-6)


def test_predict_draws_the_box_where_the_detection_is(shapes, one_step_run, tmp_path, monkeypatch):
    """One detection with a known box: the picture differs from the empty picture along the box's edges and
    inside it, and nowhere far from it."""
    box = (32.0, 30.0, 56.0, 58.0)  # in the 64-pixel image's pixels
    mask = torch.zeros(1, 64, 64)
    mask[0, 36:52, 36:52] = 1.0
    detections = {
        "one": {"boxes": torch.tensor([box]), "labels": torch.tensor([2]), "scores": torch.tensor([0.9]),
                "masks": mask[None]},
        "none": {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0),
                 "masks": torch.zeros(0, 1, 64, 64)},
    }
    image = str(shapes / "val" / "000000.png")
    pictures = {}
    for name, detection in detections.items():
        _fake_detections(monkeypatch, lambda _, detection=detection: detection)
        main(["predict", "--checkpoint", str(one_step_run / "last.pt"), image, "--out", str(tmp_path / name),
              "--device", "cpu"])
        pictures[name] = np.asarray(Image.open(tmp_path / name / "000000.png").convert("RGB")).astype(int)
    one, none = pictures["one"], pictures["none"]
    assert one.shape == none.shape
    scale = one.shape[1] / 64  # the picture is the image enlarged
    changed = (np.abs(one - none).sum(axis=2) > 30)  # [H, W]: where the detection was drawn
    x1, y1, x2, y2 = (round(v * scale) for v in box)  # pixel edges: the box's outline lies on them
    near = 2  # the outline's width and antialiasing, in picture pixels: half a source pixel is 4.7
    for x, y in [((x1 + x2) // 2, y2), (x1, (y1 + y2) // 2), (x2, (y1 + y2) // 2)]:  # bottom, left, right edges
        assert changed[y - near:y + near + 1, x - near:x + near + 1].any(), f"no outline near ({x}, {y})"
        assert not changed[y - 3 * near:y + 3 * near + 1, x - 3 * near:x + 3 * near + 1].all()  # a line, not a fill
    inside = changed[round(40 * scale):round(48 * scale), round(40 * scale):round(48 * scale)]
    assert inside.mean() > 0.9  # the mask is filled
    far = changed.copy()
    far[max(y1 - 60, 0):y2 + near + 1, max(x1 - near, 0):] = False  # the box, its mask and its label above it
    assert not far.any(), f"{int(far.sum())} pixels changed far from the box"
