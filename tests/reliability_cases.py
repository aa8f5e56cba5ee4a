"""The cases of the reliability catalogue (run by test_reliability_catalogue.py): one problem each, the
exit code it must end with, and a regular expression that the message must match, naming the culprit."""
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from conftest import TINY

TINY_SET = ["--set", *(f"{k}={v[0] if isinstance(v, tuple) else v}" for k, v in TINY.items())]


class Setup:
    """What a case needs: a scratch folder, the tiny shapes dataset, a finished 2-step run."""

    def __init__(self, tmp: Path, shapes: Path, run: Path, monkeypatch):
        self.tmp, self.shapes, self.run, self.monkeypatch = tmp, shapes, run, monkeypatch

    def data(self, edit=None, image=None, split="train") -> Path:
        """A copy of the shapes data whose `split` JSON went through edit(json) (which returns the new JSON,
        or text for a broken file), and whose first `split` image went through image(path)."""
        data = self.tmp / "data"
        (data / "annotations").mkdir(parents=True)
        for name in ("train", "val"):
            if name == split and image:
                shutil.copytree(self.shapes / name, data / name)
                image(sorted((data / name).iterdir())[0])
            else:
                (data / name).symlink_to(self.shapes / name)
            source = json.loads((self.shapes / "annotations" / f"instances_{name}.json").read_text())
            result = edit(source) if name == split and edit else source
            (data / "annotations" / f"instances_{name}.json").write_text(
                result if isinstance(result, str) else json.dumps(result))
        return data

    def train(self, data, *options) -> list[str]:
        """One step of 8 images (the whole tiny training split), then a validation."""
        return ["train", "--data", str(data), "--out", str(self.tmp / "out"), "--iters", "1", "--batch-size", "8",
                "--val-every", "0", "--workers", "0", *TINY_SET, *options]

    def train_on(self, edit=None, image=None, *options) -> list[str]:
        return self.train(self.data(edit, image), *options)

    def resume(self) -> list[str]:
        return ["train", "--data", str(self.shapes), "--out", str(self.run), "--resume"]

    def evaluate(self, out) -> list[str]:
        return ["evaluate", "--checkpoint", str(self.run / "last.pt"), "--data", str(self.shapes), "--out", str(out)]

    def predict(self, *images, out) -> list[str]:
        return ["predict", "--checkpoint", str(self.run / "last.pt"), *map(str, images), "--out", str(out)]

    def val_image(self, number: int = 0) -> Path:
        return self.shapes / "val" / f"{number:06d}.png"


@dataclass
class Case:
    group: str
    name: str  # what goes wrong
    argv: Callable[[Setup], list[str]]
    code: int  # the exit status
    says: str  # a regular expression the output must match: it names the culprit
    after: Callable[[Setup], bool] = lambda s: True  # what must hold afterwards
    lines: int | None = 1  # lines printed by an expected failure; None: argparse's usage, then one line
    note: str = ""  # what else the outcome includes, for the page


# Edits of the train split's JSON.
def first_annotation(**change):
    return lambda d: d["annotations"][0].update(change) or d


def extra_image(**change):
    return lambda d: {**d, "images": d["images"] + [{**d["images"][1], **change}]}


def each_annotation(edit):
    return lambda d: {**d, "annotations": [a for a in map(edit, d["annotations"]) if a]}


def without(key, count=1):
    return lambda d: [a.pop(key) for a in d["annotations"][:count]] and d


# Edits of the first train image.
def write(content):
    return lambda path: path.write_bytes(content(path) if callable(content) else content)


def shrink(path: Path) -> None:
    from PIL import Image
    with Image.open(path) as image:
        small = image.resize((32, 32))
    small.save(path)


def annotations_as_folder(s: Setup) -> list[str]:
    data = s.data()
    (data / "annotations" / "instances_train.json").unlink()
    (data / "annotations" / "instances_train.json").mkdir()
    return s.train(data)


def damaged_checkpoint(s: Setup) -> list[str]:
    (s.tmp / "out").mkdir()
    (s.tmp / "out" / "last.pt").write_bytes(b"PK\x03\x04 cut short")
    return s.train(s.shapes, "--resume")


def resnet_weights(s: Setup) -> Path:
    import torchvision
    torch.save(torchvision.models.resnet18().state_dict(), s.tmp / "resnet18.pth")
    return s.tmp / "resnet18.pth"


def stale_temporary(s: Setup) -> list[str]:
    (s.run / ".last.pt.x1.tmp").write_bytes(b"half a checkpoint")
    return s.resume()


def cut_metrics_line(s: Setup) -> list[str]:
    metrics = s.run / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"type": "train", "iter')
    return s.resume()


def full_disk(s: Setup) -> list[str]:
    import mrcnn_from_scratch.engine.checkpoint as checkpoint

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")
    s.monkeypatch.setattr(checkpoint.torch, "save", no_space)
    return s.train(s.shapes)


def no_gpu(s: Setup) -> list[str]:
    s.monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return s.train(s.shapes, "--device", "cuda")


NO_RUN_FOLDER = {"after": lambda s: not (s.tmp / "out").exists(), "note": "no run folder is made"}
IMAGE = r"image \d+ \(000000.png\)"
ANNOTATION = rf"{IMAGE}, annotation \d+"

CASES = [
    # Never write over a file the command reads; check outputs before the work.
    Case("outputs", "evaluate --out is the checkpoint", lambda s: s.evaluate(s.run / "last.pt"), 2,
         r"--out .*last.pt would overwrite an input"),
    Case("outputs", "evaluate --out is the annotation file",
         lambda s: s.evaluate(s.shapes / "annotations" / "instances_val.json"), 2, r"would overwrite an input"),
    Case("outputs", "evaluate --out is an image", lambda s: s.evaluate(s.val_image()), 2,
         r"--out .*000000.png would overwrite an input"),
    Case("outputs", "evaluate --out is a folder", lambda s: s.evaluate(s.tmp), 2, r"is a folder: give a file name"),
    Case("outputs", "evaluate --out cannot be written", lambda s: s.evaluate(s.tmp / "no" / "eval.json"), 2,
         r"cannot write into .*no \(missing, or not writable\)"),
    Case("outputs", "predict --out is the images' own folder",
         lambda s: s.predict(s.val_image(1), out=s.shapes / "val"),
         0, r"-> .*000001_2.png", lambda s: (s.shapes / "val" / "000001_2.png").unlink() is None,
         note="the input is kept"),
    Case("outputs", "predict: two images share a name",
         lambda s: s.predict(s.val_image(), s.shapes / "train" / "000000.png", out=s.tmp), 0, r"-> .*000000_2.png"),
    Case("outputs", "train --out is a file", lambda s: s.train(s.shapes, "--out", str(s.val_image())), 2,
         r"--out .*000000.png is a file, not a folder"),
    Case("outputs", "predict --out is a file", lambda s: s.predict(s.val_image(), out=s.val_image(1)), 2,
         r"--out .*000001.png is a file, not a folder"),
    # The dataset is checked before training.
    Case("dataset", "two images share an id", lambda s: s.train_on(extra_image(id=1)), 2,
         r"instances_train.json: image ids \[1\] are used by more than one image"),
    Case("dataset", "two annotations share an id",
         lambda s: s.train_on(lambda d: {**d, "annotations": d["annotations"] + d["annotations"][:1]}), 2,
         r"instances_train.json: 1 duplicate annotation ids: annotation \d+ \(2 times\)"),
    Case("dataset", "an annotation of an image not in the file", lambda s: s.train_on(first_annotation(image_id=999)),
         2, r"1 annotations of images not in the file: annotation \d+ \(image_id 999\)"),
    Case("dataset", "an image without its file", lambda s: s.train_on(extra_image(id=77, file_name="gone.png")), 2,
         r"1 image files missing: image 77: .*gone.png"),
    Case("dataset", "an unknown category", lambda s: s.train_on(first_annotation(category_id=99)), 2,
         rf"{ANNOTATION}: unknown category id 99"),
    Case("dataset", "bbox values as strings", lambda s: s.train_on(first_annotation(bbox=["1", "2", "3", "4"])), 2,
         rf"{ANNOTATION}: bbox must be \[x, y, w, h\], four numbers"),
    Case("dataset", "a missing area", lambda s: s.train_on(without("area", 2)), 2,
         rf"2 unusable annotations: {ANNOTATION}: area must be a number, got None"),
    Case("dataset", "garbage RLE",
         lambda s: s.train_on(first_annotation(segmentation={"size": [64, 64], "counts": "PPPP0"})), 2,
         rf"{ANNOTATION}: RLE counts do not decode to the 64×64 image's 4096 pixels"),
    Case("dataset", "a polygon of two points", lambda s: s.train_on(first_annotation(segmentation=[[1, 1, 9, 9]])), 2,
         rf"{ANNOTATION}: a polygon needs at least 3 \(x, y\) points"),
    Case("dataset", "a box outside its image", lambda s: s.train_on(first_annotation(bbox=[60, 2, 20, 20])), 2,
         rf"{ANNOTATION}: box \[60, 2, 20, 20\] .* lies outside the 64×64 image"),
    Case("dataset", "invalid JSON", lambda s: s.train_on(lambda d: json.dumps(d).replace('"annotations":', '"x"')), 2,
         r"instances_train.json: not valid JSON: .* at line 1, column \d+$"),
    Case("dataset", "truncated JSON", lambda s: s.train_on(lambda d: json.dumps(d)[:500]), 2,
         r"instances_train.json: not valid JSON: .*the file ends too soon"),
    Case("dataset", "the annotation file is a folder", annotations_as_folder, 2,
         r"instances_train.json: is a folder, not an annotation file"),
    Case("dataset", "an annotation without image_id", lambda s: s.train_on(without("image_id")), 2,
         r"annotations\[0\] must be an object with the whole numbers id, image_id, category_id"),
    Case("dataset", "a training split with only crowd annotations",
         lambda s: s.train_on(each_annotation(lambda a: {**a, "iscrowd": 1})), 2,
         r"1 splits with no object to learn from"),
    Case("dataset", "a box that clipping empties", lambda s: s.train_on(first_annotation(bbox=[64, 10, 0.5, 5])), 0,
         rf"warning: .*instances_train.json: 1 boxes empty once clipped to their image \(dropped\): {ANNOTATION}",
         note="trains without the box"),
    Case("dataset", "images without objects", lambda s: s.train_on(each_annotation(lambda a: a["image_id"] != 1 and a)),
         0, r"warning: .*instances_train.json: 1 images without objects: image 1", note="trains"),
    Case("dataset", "evaluate: a val annotation with an unknown category",
         lambda s: ["evaluate", "--checkpoint", str(s.run / "last.pt"), "--out", str(s.tmp / "eval.json"),
                    "--data", str(s.data(first_annotation(category_id=99), split="val"))], 2,
         r"instances_val.json: 1 unusable annotations: .*unknown category id 99",
         lambda s: not (s.tmp / "eval.json").exists(), note="before any prediction"),
    Case("dataset", "no dataset at the path", lambda s: s.train(s.tmp / "nothing"), 2,
         r"dataset split 'train' not found",
         lines=3, note="the message shows the layout and how to make the shapes data"),
    # Images are decoded in one place, which names the file and the image id.
    Case("images", "a 0-byte image (read in a DataLoader worker)",
         lambda s: s.train_on(None, write(b""), "--workers", "1"),
         2, rf"{IMAGE}: the file is empty \(0 bytes\)"),
    Case("images", "a truncated image",
         lambda s: s.train_on(None, write(lambda p: p.read_bytes()[:300]), "--workers", "1"),
         2, rf"{IMAGE}: cannot decode .*000000.png"),
    Case("images", "a corrupt image", lambda s: s.train_on(None, write(b"\x89PNG not really" * 20)), 2,
         rf"{IMAGE}: cannot decode .*000000.png"),
    Case("images", "an image of another size than the JSON says", lambda s: s.train_on(None, shrink), 2,
         rf"{IMAGE}: the file is 32×32 but the JSON says 64×64"),
    Case("images", "predict: an image that does not decode",
         lambda s: s.predict(s.data(None, write(b"x")) / "train" / "000000.png", out=s.tmp / "pictures"), 2,
         r"cannot decode .*000000.png"),
    Case("images", "predict: an image that does not exist", lambda s: s.predict(s.tmp / "gone.png", out=s.tmp), 2,
         r"file not found: .*gone.png"),
    # Options are checked before anything runs, and no run folder is left behind.
    Case("options", "--set min_size=abc", lambda s: s.train(s.shapes, "--set", "min_size=abc"), 2,
         r"--set min_size=abc: expected positive numbers", **NO_RUN_FOLDER),
    Case("options", "--set width=0", lambda s: s.train(s.shapes, "--set", "width=0"), 2,
         r"--set width=0: expected a whole number of at least 1"),
    Case("options", "--set depth=20", lambda s: s.train(s.shapes, "--set", "depth=20"), 2, r"depth must be one of",
         **NO_RUN_FOLDER),
    Case("options", "--set anchor_sizes with a size too few",
         lambda s: s.train(s.shapes, "--set", "anchor_sizes=(16,32)"), 2, r"--set anchor_sizes=\(16,32\): expected 5 numbers, such as \(32, 64, 128, 256, 512\)"),
    Case("options", "--set an IoU threshold above 1", lambda s: s.train(s.shapes, "--set", "box_fg_iou_thresh=5"), 2,
         r"--set box_fg_iou_thresh=5: expected a number from 0 to 1"),
    Case("options", "--set with an unknown field", lambda s: s.train(s.shapes, "--set", "colour=red"), 2,
         r"--set colour=red: expected FIELD=VALUE with a MaskRCNNConfig field"),
    Case("options", "--set an ablation switch to an unknown value", lambda s: s.train(s.shapes, "--set", "roi_op=warp"),
         2, r"--set roi_op=warp: expected one of align, pool", **NO_RUN_FOLDER),
    Case("options", "--set two ablation switches that do not combine",
         lambda s: s.train(s.shapes, "--set", "mask_loss=softmax", "class_agnostic_mask=True"), 2,
         r"--set: mask_loss='softmax' needs a mask per class .* class_agnostic_mask=True", **NO_RUN_FOLDER),
    Case("options", "--workers -1", lambda s: s.train(s.shapes, "--workers", "-1"), 2,
         r"argument --workers: must be at least 0, got -1", lines=None, note="after the usage"),
    Case("options", "--lr nan", lambda s: s.train(s.shapes, "--lr", "nan"), 2,
         r"argument --lr: must be a positive number, got nan", lines=None, note="after the usage"),
    Case("options", "--device cuda without a GPU", no_gpu, 2, r"--device cuda: PyTorch sees no CUDA GPU",
         **NO_RUN_FOLDER),
    Case("options", "--amp on a CPU", lambda s: s.train(s.shapes, "--device", "cpu", "--amp"), 2,
         r"--amp \(mixed precision\) needs a CUDA GPU"),
    # Checkpoints and resumption.
    Case("resume", "train into a finished run without --resume", lambda s: s.resume()[:-1], 2,
         r"last.pt exists: pass --resume"),
    Case("resume", "a damaged last.pt", damaged_checkpoint, 2, r"cannot read the checkpoint .*last.pt: it is damaged"),
    Case("resume", "a temporary file left by a kill during a checkpoint write", stale_temporary, 0,
         r"has already done all 2 iterations", lambda s: not list(s.run.glob("*.tmp")), note="the file is removed"),
    Case("resume", "metrics.jsonl's last line cut by a kill", cut_metrics_line, 0, r"has already done all",
         lambda s: (s.run / "metrics.jsonl").read_text().endswith("}\n"),
         note="the cut line is dropped, with a warning"),
    Case("resume", "the disk is full when a checkpoint is written", full_disk, 2,
         r"cannot write the checkpoint .*last.pt: No space left on device \(no checkpoint was written yet\)",
         lambda s: not list((s.tmp / "out").glob("*.tmp")), note="no temporary file is left"),
    Case("resume", "evaluate a weights file that is not a checkpoint",
         lambda s: ["evaluate", "--checkpoint", str(resnet_weights(s)), "--data", str(s.shapes)], 2,
         r"resnet18.pth is a weights file but not a checkpoint of train"),
    Case("resume", "predict --torchvision-weights with a file that is not one",
         lambda s: ["predict", "--torchvision-weights", str(s.val_image()), str(s.val_image()), "--out", str(s.tmp)],
         2, r"--torchvision-weights .*000000.png: .*not a PyTorch weights file"),
    Case("resume", "train --init with a file that is not weights",
         lambda s: s.train(s.shapes, "--init", str(s.val_image())),
         2, r"000000.png: not a PyTorch weights file"),
    Case("resume", "evaluate a checkpoint that does not exist",
         lambda s: ["evaluate", "--checkpoint", str(s.tmp / "last.pt"), "--data", str(s.shapes)], 2,
         r"checkpoint not found: .*last.pt"),
]


def image_with(value, h=64, w=80, dtype=torch.float32) -> torch.Tensor:
    """A random image in [0, 1] of one dtype, with `value` at one pixel (None: none)."""
    image = torch.rand(3, h, w, dtype=dtype)
    if value is not None:
        image[1, 10, 20] = value
    return image


def target_with(box=(4.0, 5.0, 30.0, 40.0), label=1) -> dict:
    return {"boxes": torch.tensor([box]), "labels": torch.tensor([label]),
            "masks": torch.zeros(1, 64, 80, dtype=torch.uint8)}


BOX = r"targets\[0\]\['boxes'\]\[0\]"
MODEL_CASES = [  # (what goes wrong, images, targets, error, message), for small_config(4)'s check_inputs
    ("a NaN pixel", [image_with(None), image_with(math.nan)], None, ValueError,
     r"images\[1\] holds 1 NaN or Inf values"),
    ("an Inf pixel", [image_with(math.inf)], None, ValueError, r"images\[0\] holds 1 NaN or Inf values"),
    ("0–255 values in a float image", [image_with(None) * 255], None, ValueError,
     r"images\[0\] has values up to \d+.*pass image / 255"),
    ("an already normalized image", [image_with(-2.1)], None, ValueError,
     r"images\[0\] has values down to -2.1.*the model normalizes itself"),
    ("a uint8 image", [torch.zeros(3, 64, 80, dtype=torch.uint8)], None, TypeError,
     r"images\[0\] must be a float tensor"),
    ("a float64 image for a float32 model", [image_with(None, dtype=torch.float64)], None, TypeError,
     r"images\[0\] is torch.float64 but the model's weights are torch.float32: pass image.to\(torch.float32\)"),
    ("a float16 image for a float32 model", [image_with(None, dtype=torch.float16)], None, TypeError,
     r"images\[0\] is torch.float16 .* pass image.to\(torch.float32\)"),
    ("a 3×8×2000 image (max_size 128)", [torch.rand(3, 8, 2000)], None, ValueError,
     r"images\[0\] is 8×2000: .* short side would be 0.51 pixels"),
    ("one batched tensor instead of a list", torch.rand(2, 3, 64, 80), None, TypeError, r"pass list\(batch\)"),
    ("an Inf box", [image_with(None)], [target_with((4.0, 5.0, math.inf, 40.0))], ValueError,
     rf"{BOX} = \[4.0, 5.0, inf, 40.0\] is not finite"),
    ("a NaN box", [image_with(None)], [target_with((math.nan, 5.0, 30.0, 40.0))], ValueError,
     rf"{BOX} = \[nan, 5.0, 30.0, 40.0\] is not finite"),
    ("a box without area", [image_with(None)], [target_with((30.0, 5.0, 30.0, 40.0))], ValueError,
     rf"{BOX} = \[30.0, 5.0, 30.0, 40.0\] has no area"),
    ("a label out of range", [image_with(None)], [target_with(label=7)], ValueError,
     r"targets\[0\]\['labels'\]\[0\] = 7 is outside 1..3"),
]

# Cases too slow or too broad for the catalogue's module: each is a test of its own, which it makes sure exists.
OWN_TESTS = [  # (what goes wrong, command, outcome, test module, test)
    ("SIGKILL at random moments, and in the middle of checkpoint writes", "train --resume",
     "last.pt always loads, the iteration never goes back; the next start removes the temporary files and "
     "the run ends as one whole run", "test_reliability_kill",
     "test_kills_during_checkpoint_writes_never_lose_the_run"),
    ("one process of a two-machine run dies (torchrun --nnodes 2, rendezvous endpoint on localhost)", "torchrun",
     "the other stops: rank N: another process of this run stopped (…); this one stops too. train --resume "
     "continues from the last checkpoint; --resume finishes the run", "test_ddp_rendezvous",
     "test_two_machines_one_dies_the_other_stops_and_resume_finishes"),
    ("one process of a one-machine run dies (torchrun --standalone)", "torchrun",
     "torchrun stops the other: rank N: stopped by torchrun (SIGTERM) … (or, first, the line above)",
     "test_ddp_rendezvous", "test_one_machine_torchrun_stops_the_others_with_a_line"),
    ("valid model inputs", "model(images, targets)", "checked with one host sync (one read of all problem flags)",
     "test_reliability_inputs", "test_checking_valid_inputs_reads_from_the_device_once"),
    ("random boxes, degenerate and huge, into box_iou, nms, batched_nms, roi_align, roi_pool and BoxCoder",
     "ops", "torchvision's results, or our ValueError/TypeError", "test_hypothesis_ops", "test_roi_align"),
    ("random polygons, RLEs and malformed annotations into CocoInstances", "CocoInstances",
     "pycocotools' masks, or a DataError naming the image and annotation", "test_hypothesis_data",
     "test_any_malformed_annotation_loads_or_is_named"),
]
