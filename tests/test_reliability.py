"""No command destroys a user's file, and interrupted runs leave nothing that stops the next one."""
import json

import pytest
import torch

from mrcnn_from_scratch.__main__ import main
from mrcnn_from_scratch.data import CocoInstances
from mrcnn_from_scratch.engine.checkpoint import load_checkpoint
from mrcnn_from_scratch.engine.logbook import read_metrics
from mrcnn_from_scratch.engine.outputs import picture_paths
from mrcnn_from_scratch.engine.train import TrainOptions, train

from conftest import TINY


@pytest.fixture(scope="module")
def run(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(TrainOptions(data=shapes, out=out, iters=2, batch_size=2, workers=0, val_every=0,
                       config_overrides=TINY))
    return out


def run_cli(arguments, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("target", ["checkpoint", "annotations", "image", "folder", "unwritable"])
def test_evaluate_refuses_an_output_that_is_an_input_before_evaluating(shapes, run, capsys, target):
    checkpoint = run / "last.pt"
    before = checkpoint.read_bytes()
    out = {"checkpoint": checkpoint, "annotations": shapes / "annotations" / "instances_val.json",
           "image": shapes / "val" / "000000.png", "folder": run, "unwritable": run / "missing" / "eval.json"}[target]
    code, message = run_cli(["evaluate", "--checkpoint", str(checkpoint), "--data", str(shapes), "--out", str(out)],
                            capsys)
    assert code == 2 and "--out" in message and len(message.strip().splitlines()) == 1
    assert "evaluating" not in message  # refused before the work
    assert checkpoint.read_bytes() == before


def test_predict_keeps_inputs_and_pictures_apart(shapes, run, tmp_path, capsys):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    image = (shapes / "val" / "000000.png").read_bytes()
    first, second = tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"
    first.write_bytes(image), second.write_bytes(image)
    main(["predict", "--checkpoint", str(run / "last.pt"), str(first), str(second), "--out", str(tmp_path / "a")])
    assert first.read_bytes() == image and second.read_bytes() == image  # inputs untouched
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.png", "x_2.png", "x_3.png"]
    assert picture_paths([first, second], tmp_path / "a") == [tmp_path / "a" / "x_2.png", tmp_path / "a" / "x_3.png"]


def test_a_kill_during_a_checkpoint_write_leaves_nothing_after_the_next_start(shapes, run, tmp_path):
    stale = run / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    train(TrainOptions(data=shapes, out=run, resume=True, workers=0))  # already done: only starts and stops
    assert not stale.exists()


def test_a_corrupt_checkpoint_gets_one_line(shapes, tmp_path, capsys):
    (tmp_path / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    code, message = run_cli(["train", "--data", str(shapes), "--out", str(tmp_path), "--resume"], capsys)
    assert code == 2 and "damaged" in message and str(tmp_path / "last.pt") in message
    with pytest.raises(Exception, match="damaged"):
        load_checkpoint(tmp_path / "last.pt")


def test_resume_drops_a_half_written_last_metrics_line(shapes, run):
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()  # train 1, train 2, val 2
    metrics.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])  # killed while writing the last line
    with pytest.warns(UserWarning, match="last line was cut off"):
        assert len(read_metrics(metrics)) == 2
    with pytest.warns(UserWarning, match="last line was cut off"):
        train(TrainOptions(data=shapes, out=run, resume=True, workers=0))  # the run is done: it only starts
    assert metrics.read_text().splitlines() == lines[:2]  # the cut line is gone, the rest kept
    metrics.write_text("{broken\n" + "\n".join(lines) + "\n")
    with pytest.raises(Exception, match="line 1: not a JSON record"):
        read_metrics(metrics)
    metrics.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("setting, message", [("min_size=abc", "expected positive numbers"),
                                              ("width=0", "at least 1"), ("depth=20", "depth must be one of"),
                                              ("norm=ln", "norm")])
def test_bad_config_values_fail_in_one_line_before_training(shapes, tmp_path, capsys, setting, message):
    code, printed = run_cli(["train", "--data", str(shapes), "--out", str(tmp_path / "run"), "--set", setting], capsys)
    assert code == 2 and message in printed and len(printed.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # no run folder for a run that never started


def test_cuda_without_a_gpu_fails_in_one_line(shapes, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, printed = run_cli(["train", "--data", str(shapes), "--out", str(tmp_path / "run"), "--device", "cuda"],
                            capsys)
    assert code == 2 and "no CUDA GPU" in printed and not (tmp_path / "run").exists()


def test_duplicate_image_ids_and_undecodable_images_are_named(shapes, tmp_path):
    dataset = json.loads((shapes / "annotations" / "instances_val.json").read_text())
    dataset["images"][1]["id"] = dataset["images"][0]["id"]
    (tmp_path / "dup.json").write_text(json.dumps(dataset))
    with pytest.raises(ValueError, match=r"dup.json: image ids \[\d+\] are used by more than one image"):
        CocoInstances(shapes / "val", tmp_path / "dup.json")
    (tmp_path / "val").mkdir()
    good = CocoInstances(shapes / "val", shapes / "annotations" / "instances_val.json")
    first = good.coco.imgs[good.ids[0]]["file_name"]
    (tmp_path / "val" / first).write_bytes((shapes / "val" / first).read_bytes()[:100])  # truncated
    broken = CocoInstances(tmp_path / "val", shapes / "annotations" / "instances_val.json")
    with pytest.raises(ValueError, match=rf"image {good.ids[0]} \({first}\): cannot decode"):
        broken[0]


def test_a_training_split_without_objects_is_refused(shapes, tmp_path, capsys):
    data = tmp_path / "data"
    (data / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (data / split).symlink_to(shapes / split)
        dataset = json.loads((shapes / "annotations" / f"instances_{split}.json").read_text())
        if split == "train":
            dataset["annotations"] = [{**ann, "iscrowd": 1} for ann in dataset["annotations"]]
        (data / "annotations" / f"instances_{split}.json").write_text(json.dumps(dataset))
    code, printed = run_cli(["train", "--data", str(data), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "no object to learn from" in printed and not (tmp_path / "run").exists()
