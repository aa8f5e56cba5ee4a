"""The training engine on a tiny shapes dataset (8 + 4 images of 64 px, a very narrow small config): the
files a run writes, exact resumption after a crash, the NaN stop, and evaluate and predict on the result."""
import hashlib
import itertools
import json
import math

import pytest
import torch

from mrcnn_from_scratch import MaskRCNN
from mrcnn_from_scratch.__main__ import main
from mrcnn_from_scratch.engine import train as train_module
from mrcnn_from_scratch.engine.checkpoint import load_checkpoint, model_from_checkpoint
from mrcnn_from_scratch.engine.data_order import ShuffledBatches
from mrcnn_from_scratch.engine.evaluate import STAT_NAMES
from mrcnn_from_scratch.engine.logbook import LOSS_TERMS, read_metrics
from mrcnn_from_scratch.engine.recipe import warmup_cosine
from mrcnn_from_scratch.engine.train import TrainOptions, train

from conftest import TINY

TINY_SET = ["--set", "min_size=64", "max_size=64", "width=8", "fpn_channels=16", "box_representation_size=32",
            "mask_channels=16"]
CLASSES = ("square", "circle", "triangle")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # On a shared 2-core machine, two threads that wait on each other make a step 10 to 50 times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_options(shapes, out, **changes) -> TrainOptions:
    settings = {"iters": 4, "batch_size": 2, "workers": 0, "val_every": 0, "checkpoint_every": 2, "config_overrides": TINY}
    return TrainOptions(data=shapes, out=out, **{**settings, **changes})


def logged_losses(run) -> list[dict]:
    return [{k: v for k, v in r.items() if k == "iteration" or k.startswith("loss")}
            for r in read_metrics(run / "metrics.jsonl") if r["type"] == "train"]


@pytest.fixture(scope="module")
def trained_run(shapes, tmp_path_factory):
    """4 iterations straight, checkpoints at 2 and 4, validation at the end."""
    run = tmp_path_factory.mktemp("run")
    assert train(tiny_options(shapes, run)) == run / "last.pt"
    return run


def test_a_run_writes_checkpoint_metrics_and_loss_plot(trained_run):
    checkpoint = load_checkpoint(trained_run / "last.pt")  # the weights_only loader reads all of it
    assert checkpoint["iteration"] == 4
    assert checkpoint["class_names"] == list(CLASSES)
    assert checkpoint["config"]["class_names"] == CLASSES and checkpoint["config"]["num_classes"] == 4
    assert checkpoint["config"]["width"] == 8
    assert checkpoint["settings"]["iters"] == 4 and checkpoint["settings"]["config"] == "small"
    assert set(checkpoint["rng"][0]) == {"torch", "cuda", "numpy", "python"}
    assert checkpoint["data_order"] == {"seed": 0, "batch_size": 2, "world_size": 1, "next_step": 4}
    assert {"optimizer", "scheduler", "scaler", "model", "train_seconds"} <= set(checkpoint)
    model = model_from_checkpoint(trained_run / "last.pt")
    assert isinstance(model, MaskRCNN) and not model.training

    records = read_metrics(trained_run / "metrics.jsonl")
    steps = [r for r in records if r["type"] == "train"]
    assert [r["iteration"] for r in steps] == [1, 2, 3, 4]
    for r in steps:
        assert set(LOSS_TERMS) | {"loss", "lr", "grad_norm", "seconds"} <= set(r)
        assert r["loss"] == pytest.approx(sum(r[term] for term in LOSS_TERMS))
    assert steps[0]["lr"] < steps[1]["lr"]  # warming up
    (validation,) = [r for r in records if r["type"] == "val"]
    assert validation["iteration"] == 4 and "segm.AP" in validation and "bbox.AP50" in validation
    assert (trained_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(trained_run.glob("*.tmp"))  # the atomic writes left no temporary files


def test_resume_after_a_crash_gives_the_same_losses(shapes, trained_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    step = train_module.Training._step

    def crash_after_step_3(self, progress):
        step(self, progress)
        if self.iteration == 3:  # after its metrics line, before the next checkpoint (at 4)
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(train_module.Training, "_step", crash_after_step_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_options(shapes, run))
    monkeypatch.undo()
    assert load_checkpoint(run / "last.pt")["iteration"] == 2
    # Resumed with a data-loading worker, where the first run loaded in the main process: the data order
    # and the flips do not depend on who loads the images.
    train(tiny_options(shapes, run, resume=True, workers=1))
    # Step 3's line from the crashed run was dropped and rewritten: one line per iteration, each equal.
    assert logged_losses(run) == logged_losses(trained_run)


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(shapes, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    forward, steps, saved = MaskRCNN.forward, [], {}

    def nan_mask_loss_at_step_3(self, images, targets=None):
        losses = forward(self, images, targets)
        if self.training:
            steps.append(1)
            if len(steps) == 3:
                saved["hash"] = hashlib.sha256((run / "last.pt").read_bytes()).hexdigest()
                losses["loss_mask"] = losses["loss_mask"] * float("nan")
        return losses

    monkeypatch.setattr(MaskRCNN, "forward", nan_mask_loss_at_step_3)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(shapes), "--out", str(run), "--iters", "4", "--batch-size", "2", "--workers", "0",
              "--checkpoint-every", "2", "--val-every", "0", *TINY_SET])
    assert exit_info.value.code == 1
    message = capsys.readouterr().err
    assert "training stopped at iteration 3: loss_mask = nan" in message
    assert f"{run / 'last.pt'} still holds iteration 2" in message
    assert hashlib.sha256((run / "last.pt").read_bytes()).hexdigest() == saved["hash"]
    assert load_checkpoint(run / "last.pt")["iteration"] == 2
    assert [r["iteration"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2]
    assert (run / "loss.png").is_file()


def test_evaluate_writes_eval_json_beside_the_checkpoint(shapes, trained_run, capsys):
    main(["evaluate", "--checkpoint", str(trained_run / "last.pt"), "--data", str(shapes)])
    printed = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in printed
    assert "AP per class (segm)" in printed
    metrics = json.loads((trained_run / "eval.json").read_text())
    expected = {f"{t}.{s}" for t in ("bbox", "segm") for s in STAT_NAMES}
    expected |= {f"{t}.AP/{name}" for t in ("bbox", "segm") for name in CLASSES}
    assert set(metrics) == expected
    assert all(-1 <= v <= 1 for v in metrics.values())


def test_evaluate_to_another_file(shapes, trained_run, tmp_path):
    main(["evaluate", "--checkpoint", str(trained_run / "last.pt"), "--data", str(shapes), "--split", "train",
          "--out", str(tmp_path / "train_eval.json")])
    assert "segm.AP50" in json.loads((tmp_path / "train_eval.json").read_text())


def test_predict_writes_one_picture_per_image(shapes, trained_run, tmp_path):
    images = [str(shapes / "val" / "000000.png"), str(shapes / "val" / "000001.png")]
    main(["predict", "--checkpoint", str(trained_run / "last.pt"), *images, "--out", str(tmp_path / "pictures"),
          "--score-thresh", "0"])
    for name in ("000000.png", "000001.png"):
        assert (tmp_path / "pictures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_data_order_is_a_function_of_seed_and_step():
    def batches(start=0, rank=0, world_size=1, seed=0, count=12):
        return list(itertools.islice(ShuffledBatches(10, 3, seed, rank, world_size, start), count))

    straight = batches()
    assert batches(start=5, count=7) == straight[5:]  # resuming at step 5 picks up exactly there
    assert len(straight[3]) == 1  # 10 images in batches of 3: the fourth batch of an epoch has one
    first_epoch = [index for batch in straight[:4] for index, _ in batch]
    assert sorted(first_epoch) == list(range(10))
    assert first_epoch != [index for batch in straight[4:8] for index, _ in batch]  # reshuffled each epoch
    assert batches(seed=1) != straight
    # Two processes share each epoch: 10 images padded to 10, 5 each, in 2 batches per process.
    shards = [[index for batch in batches(rank=r, world_size=2, count=2) for index, _ in batch] for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == list(range(10))


def test_warmup_then_cosine():
    assert warmup_cosine(0, warmup_iters=10, total_iters=100) == pytest.approx(1e-3)
    assert warmup_cosine(5, warmup_iters=10, total_iters=100) < warmup_cosine(10, warmup_iters=10, total_iters=100)
    assert warmup_cosine(10, 10, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))
    assert warmup_cosine(50, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100) == pytest.approx(0.0)
