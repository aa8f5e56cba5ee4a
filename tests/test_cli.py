"""The command line: clear errors, torchvision's COCO weights in `predict`, and training under torchrun
with two CPU processes (gloo)."""
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
    assert result.returncode == 0, result.stderr[-3000:]
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
