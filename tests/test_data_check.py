"""The dataset check: every problem of a split counted and named in one pass, errors apart from warnings."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from mrcnn_from_scratch.data import CocoInstances
from mrcnn_from_scratch.data.annotations import rle_counts
from mrcnn_from_scratch.data.check import check_split, main

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


@pytest.fixture
def split(shapes, tmp_path):
    """(image folder, JSON of the train split, a function writing the JSON to a file and returning its path)."""
    dataset = json.loads((shapes / "annotations" / "instances_train.json").read_text())

    def save(data) -> str:
        (tmp_path / "instances.json").write_text(json.dumps(data))
        return tmp_path / "instances.json"
    return shapes / "train", dataset, save


def test_a_clean_split_has_no_problems(split):
    images, dataset, save = split
    report = check_split(images, save(dataset), training=True, decode=True)
    assert report.errors == [] and report.warnings == []


def test_every_problem_is_counted_and_named_at_once(split):
    images, dataset, save = split
    anns, first = dataset["annotations"], dataset["images"][0]
    anns[0]["category_id"] = 42
    anns[1]["bbox"] = [1, 2, "3", 4]
    del anns[2]["area"]
    anns.append({**anns[3], "id": anns[4]["id"]})  # a duplicate annotation id
    anns.append({**anns[3], "id": 9001, "image_id": 555})  # of an image not in the file
    anns.append({**anns[3], "id": 9002, "bbox": [0, 0, 0, 5]})  # empty: dropped
    dataset["images"].append({**first, "id": 777, "file_name": "missing.png"})
    report = check_split(images, save(dataset))
    errors = {problem.what: problem.places for problem in report.errors}
    assert set(errors) == {"duplicate annotation ids", "annotations of images not in the file", "unusable annotations",
                           "image files missing"}
    assert errors["duplicate annotation ids"] == [f"annotation {anns[4]['id']} (2 times)"]
    assert errors["annotations of images not in the file"] == ["annotation 9001 (image_id 555)"]
    assert len(errors["unusable annotations"]) == 3
    assert "unknown category id 42" in errors["unusable annotations"][0]
    where = f"image {first['id']} ({first['file_name']}), annotation {anns[0]['id']}"
    assert where in errors["unusable annotations"][0]
    warnings = {problem.what: problem.places for problem in report.warnings}
    assert warnings["boxes empty once clipped to their image (dropped)"][0].endswith("annotation 9002: [0, 0, 0, 5]")
    assert warnings["images without objects"] == ["image 777"]
    line = report.errors[0].line(report.ann_file)
    assert line.startswith(f"error: {report.ann_file}: 1 ")


def test_the_dataset_drops_what_the_check_warns_about(split):
    images, dataset, save = split
    image_id = dataset["images"][0]["id"]
    first = dataset["annotations"][0]
    dataset["annotations"] += [
        {**first, "id": 9003, "image_id": image_id, "bbox": [64.0, 3.0, 0.4, 9.0]},  # nothing left after clipping
        {**first, "id": 9004, "image_id": image_id, "bbox": [10.0, 3.0, 1e-7, 9.0]},  # 10 + 1e-7 is 10 in float32
    ]
    [dropped] = check_split(images, save(dataset)).warnings
    assert [place.split(", annotation ")[1][:4] for place in dropped.places] == ["9003", "9004"]
    kept = CocoInstances(images, save(dataset))[0][1]
    assert len(kept["boxes"]) == len([a for a in dataset["annotations"] if a["image_id"] == image_id]) - 2
    assert (kept["boxes"][:, 2:] > kept["boxes"][:, :2]).all()


def test_the_command_lists_everything_and_exits_1_on_errors(shapes, tmp_path, capsys):
    data = tmp_path / "data"
    (data / "annotations").mkdir(parents=True)
    (data / "val").symlink_to(shapes / "val")
    dataset = json.loads((shapes / "annotations" / "instances_val.json").read_text())
    assert main([str(shapes), "--split", "val", "--decode"]) == 0
    for ann in dataset["annotations"]:
        ann["category_id"] = 99
    (data / "annotations" / "instances_val.json").write_text(json.dumps(dataset))
    capsys.readouterr()
    assert main([str(data), "--split", "val"]) == 1
    err = capsys.readouterr().err
    count = len(dataset["annotations"])
    assert f"{count} unusable annotations" in err and err.count("unknown category id 99") == count  # none left out
    (data / "annotations" / "instances_val.json").write_text("{")
    assert main([str(data), "--split", "val"]) == 1
    assert "not valid JSON" in capsys.readouterr().err


def test_decode_finds_images_that_do_not_decode(split, tmp_path):
    images, dataset, save = split
    copy = tmp_path / "images"
    copy.mkdir()
    for info in dataset["images"]:
        (copy / info["file_name"]).write_bytes((images / info["file_name"]).read_bytes())
    (copy / dataset["images"][1]["file_name"]).write_bytes(b"")
    assert check_split(copy, save(dataset)).errors == []  # without --decode only existence is checked
    [problem] = check_split(copy, save(dataset), decode=True).errors
    assert problem.places == [f"image {dataset['images'][1]['id']} ({dataset['images'][1]['file_name']}): "
                              f"the file is empty (0 bytes): {copy / dataset['images'][1]['file_name']}"]


@pytest.mark.parametrize("height, width", [(1, 1), (4, 5), (37, 23)])
def test_rle_counts_reads_what_pycocotools_writes(height, width):
    generator = torch.Generator().manual_seed(height * width)
    for density in (0.0, 0.1, 0.5, 1.0):
        mask = (torch.rand(height, width, generator=generator) < density).numpy().astype(np.uint8)
        rle = mask_utils.encode(np.asfortranarray(mask))
        runs = rle_counts(rle["counts"].decode("ascii"))
        uncompressed = mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)
        assert sum(runs) == height * width and np.array_equal(mask_utils.decode(uncompressed), mask)


@pytest.mark.parametrize("counts", ["PPPP0", "", "\x7f", "1"])
def test_rle_counts_refuses_what_pycocotools_would_decode_into_garbage(counts):
    runs = rle_counts(counts)
    assert runs is None or sum(runs) != 20


def test_the_documented_command_runs_cleanly(shapes):
    # -W error: runpy warns if the package had imported the module before running it as __main__.
    command = [sys.executable, "-W", "error", "-m", "mrcnn_from_scratch.data.check", str(shapes), "--split", "val"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.endswith("instances_val.json: 0 kinds of error, 0 of warning\n")
