"""The switches of the paper's ablations (chapter 11) and the runner that trains and tabulates them."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from conftest import TINY
from mrcnn_from_scratch.__main__ import main as cli
from mrcnn_from_scratch.ablate import main as ablate_main
from mrcnn_from_scratch.ablate import run_ablations, variants_named
from mrcnn_from_scratch.ablation_table import compare, markdown_table, mask_minus_box, summarize
from mrcnn_from_scratch.ablation_variants import VARIANTS, Variant
from mrcnn_from_scratch.config import CHOICES, MaskRCNNConfig, small_config
from mrcnn_from_scratch.engine.checkpoint import model_from_checkpoint
from mrcnn_from_scratch.losses import maskrcnn_loss, maskrcnn_softmax_loss
from mrcnn_from_scratch.mask_head import masks_of_labels
from mrcnn_from_scratch.box_head import TwoMLPHead
from mrcnn_from_scratch.mask_mlp_head import MaskMLPPredictor
from mrcnn_from_scratch.model import MaskRCNN
from mrcnn_from_scratch.poolers import MultiScaleRoIAlign, box_levels


def tiny_batch():
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64, generator=gen) for _ in range(2)]
    targets = []
    for label, (x1, y1, x2, y2) in [(1, (8, 10, 40, 50)), (3, (20, 4, 60, 30))]:
        mask = torch.zeros(1, 64, 64, dtype=torch.uint8)
        mask[0, y1:y2, x1:x2] = 1
        targets.append({"boxes": torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32),
                        "labels": torch.tensor([label]), "masks": mask})
    return images, targets


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_trains_a_step_and_predicts(name):
    torch.manual_seed(0)
    model = MaskRCNN(small_config(4).replace(**TINY, **VARIANTS[name].overrides)).train()
    images, targets = tiny_batch()
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    mask_weights = [p for p in model.roi_heads.mask_predictor.parameters()]
    assert all(p.grad is not None for p in mask_weights)  # DistributedDataParallel needs every gradient
    if name == "no_mask_loss":
        assert losses["loss_mask"].item() == 0 and all(p.grad.abs().max() == 0 for p in mask_weights)
    else:
        assert losses["loss_mask"].item() > 0 and any(p.grad.abs().max() > 0 for p in mask_weights)
    model.eval()
    with torch.no_grad():
        detections = model(images)
    for d in detections:
        assert d["masks"].shape == (len(d["boxes"]), 1, 64, 64)
        assert ((d["masks"] >= 0) & (d["masks"] <= 1)).all()


def test_the_defaults_are_mask_rcnns_own_choices():
    config = MaskRCNNConfig()
    assert [getattr(config, name) for name in CHOICES] == [known[0] for known in CHOICES.values()]
    assert config.class_agnostic_mask is False
    model = MaskRCNN(small_config(4).replace(**TINY))
    assert model.roi_heads.box_roi_pool.roi_op == "align" and model.roi_heads.box_roi_pool.fixed_level is None
    # The state dict has torchvision's names only: the switches add no weights at their defaults.
    assert all(not name.startswith("roi_heads.mask_head.fc") for name in model.state_dict())


@pytest.mark.parametrize("field, value", [("roi_op", "warp"), ("roi_level", "P6"), ("mask_head", "transformer"),
                                          ("mask_loss", "dice")])
def test_unknown_values_are_refused_with_the_known_ones(field, value):
    with pytest.raises(ValueError) as error:
        MaskRCNNConfig(**{field: value})
    assert all(repr(known) in str(error.value) for known in CHOICES[field])


def test_softmax_with_a_class_agnostic_mask_is_refused():
    with pytest.raises(ValueError, match="class_agnostic_mask"):
        MaskRCNNConfig(mask_loss="softmax", class_agnostic_mask=True)


def test_train_refuses_an_unknown_switch_before_it_starts(shapes, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli(["train", "--data", str(shapes), "--out", str(tmp_path / "run"), "--set", "roi_op=warp"])
    assert "expected one of align, pool" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_softmax_loss_is_the_cross_entropy_computed_by_hand():
    # One RoI of class 2 of 2 (channels: background, class 1, class 2), two pixels: inside, outside.
    logits = torch.tensor([[[[0.5, 2.0]], [[1.0, -1.0]], [[3.0, 0.0]]]], dtype=torch.float64)  # [1, 3, 1, 2]
    targets = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    inside = -math.log(math.exp(3.0) / (math.exp(0.5) + math.exp(1.0) + math.exp(3.0)))  # class 2 is right
    outside = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(-1.0) + math.exp(0.0)))  # background is right
    loss = maskrcnn_softmax_loss(logits, targets, torch.tensor([2]))
    assert loss.item() == pytest.approx((inside + outside) / 2, rel=1e-12)


def test_with_one_class_the_softmax_loss_is_the_sigmoid_loss_of_the_logit_difference():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 2, 28, 28, generator=gen, dtype=torch.float64)
    targets = torch.rand(5, 28, 28, generator=gen, dtype=torch.float64)  # soft edges included
    labels = torch.ones(5, dtype=torch.int64)
    difference = (logits[:, 1] - logits[:, 0])[:, None]
    torch.testing.assert_close(maskrcnn_softmax_loss(logits, targets, labels),
                               maskrcnn_loss(difference, targets, torch.zeros(5, dtype=torch.int64)))


def test_a_softmax_mask_is_where_its_class_wins_the_argmax():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 28, 28, generator=gen)
    labels = [torch.tensor([1, 3]), torch.tensor([2])]
    masks = torch.cat(masks_of_labels(logits, labels, softmax=True))[:, 0]
    assert torch.equal(masks > 0.5, logits.argmax(dim=1) == torch.tensor([1, 3, 2])[:, None, None])
    # The class's softmax share against its strongest rival: p_c / (p_c + max of the other p_k).
    p = F.softmax(logits, dim=1)
    own = p[torch.arange(3), torch.tensor([1, 3, 2])]
    rival = torch.stack([torch.cat([p[i, :c], p[i, c + 1:]]).amax(dim=0) for i, c in enumerate([1, 3, 2])])
    torch.testing.assert_close(masks, own / (own + rival))
    # With one class (background and the class) it is the softmax itself.
    two = torch.randn(2, 2, 28, 28, generator=gen)
    torch.testing.assert_close(torch.cat(masks_of_labels(two, [torch.tensor([1, 1])], softmax=True))[:, 0],
                               F.softmax(two, dim=1)[:, 1])


def test_the_mlp_head_predicts_a_mask_per_class_and_roi():
    head, predictor = TwoMLPHead(16 * 14 * 14, 32), MaskMLPPredictor(32, num_classes=5)
    assert predictor(head(torch.rand(7, 16, 14, 14))).shape == (7, 5, 28, 28)
    assert predictor(head(torch.rand(0, 16, 14, 14))).shape == (0, 5, 28, 28)


def test_a_class_agnostic_head_has_one_mask_channel():
    model = MaskRCNN(small_config(4).replace(**TINY, class_agnostic_mask=True))
    assert model.roi_heads.mask_predictor(torch.rand(2, 16, 14, 14)).shape == (2, 1, 28, 28)


def pyramid(gen):
    """P2–P5 of a 64×80 image, [2, 6, H, W] each."""
    return {str(i): torch.randn(2, 6, 64 // 2 ** (i + 2), 80 // 2 ** (i + 2), generator=gen) for i in range(4)}


@pytest.mark.parametrize("fixed_level", [None, 5, 3])
def test_roi_op_pool_is_torchvisions_roi_pool_on_each_boxs_level(fixed_level):
    gen = torch.Generator().manual_seed(0)
    features = pyramid(gen)
    boxes = [torch.tensor([[0.0, 0.0, 79.0, 63.0], [3.3, 5.1, 9.7, 12.2], [10.0, 8.0, 60.5, 40.0]]),
             torch.tensor([[40.2, 1.0, 41.0, 60.0], [-5.0, -5.0, 20.0, 30.0]])]
    pooler = MultiScaleRoIAlign(list(features), 7, sampling_ratio=2, canonical_scale=56, roi_op="pool",
                                fixed_level=fixed_level)
    pooled = pooler(features, boxes, [(64, 80), (64, 80)])
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], dim=1) for i, b in enumerate(boxes)])
    levels = box_levels(rois[:, 1:], 2, 5, 56) + 2 if fixed_level is None else torch.full((len(rois),), fixed_level)
    for k, (roi, level) in enumerate(zip(rois, levels.tolist())):
        expected = torchvision.ops.roi_pool(features[str(level - 2)], roi[None], 7, 1 / 2 ** level)
        torch.testing.assert_close(pooled[k : k + 1], expected, rtol=0, atol=0)  # a max is exact


def test_a_fixed_level_outside_the_pyramid_is_refused():
    features = pyramid(torch.Generator().manual_seed(0))
    pooler = MultiScaleRoIAlign(list(features), 7, sampling_ratio=2, fixed_level=6)
    with pytest.raises(ValueError, match="P2 to P5"):
        pooler(features, [torch.tensor([[0.0, 0.0, 10.0, 10.0]])], [(64, 80)])


def test_a_checkpoint_keeps_its_switches(shapes, tmp_path):
    run = tmp_path / "run"
    cli(["train", "--data", str(shapes), "--out", str(run), "--iters", "1", "--workers", "0",
         "--set", *(f"{k}={v}" for k, v in TINY.items()), "roi_op=pool", "roi_level=P4", "mask_head=mlp",
         "class_agnostic_mask=True"])
    model = model_from_checkpoint(run / "last.pt")
    config = model.config
    assert (config.roi_op, config.roi_level, config.mask_head, config.class_agnostic_mask) == ("pool", "P4", "mlp", True)
    assert isinstance(model.roi_heads.mask_predictor, MaskMLPPredictor)
    assert model.roi_heads.mask_roi_pool.fixed_level == 4


def test_compare_reports_the_gap_in_points_and_standard_errors():
    ours, reference = {"mean": 0.60, "std": 0.03, "n": 3}, {"mean": 0.70, "std": 0.04, "n": 3}
    result = compare(ours, reference, VARIANTS["softmax"])
    assert result["gap"] == pytest.approx(-10.0)
    assert result["standard_error"] == pytest.approx(100 * math.sqrt((0.03**2 + 0.04**2) / 3))
    assert result["sigmas"] == pytest.approx(-10.0 / result["standard_error"])
    assert result["within_seed_spread"] is False and result["paper_direction_held"] is True
    close = compare({"mean": 0.71, "std": 0.02, "n": 3}, reference, VARIANTS["softmax"])
    assert close["within_seed_spread"] is True and close["paper_direction_held"] is False


def test_the_runner_trains_each_run_once_and_tabulates(shapes, tmp_path, monkeypatch):
    monkeypatch.setitem(VARIANTS, "baseline", Variant("baseline", dict(TINY), compare_to=None))
    softmax = Variant("softmax", {**TINY, "mask_loss": "softmax"}, paper=VARIANTS["softmax"].paper)
    report = run_ablations(shapes, tmp_path, [softmax], seeds=2, iters=1, progress=False)
    assert sorted((r["variant"], r["seed"]) for r in report["runs"]) == [
        ("baseline", 0), ("baseline", 1), ("softmax", 0), ("softmax", 1)]  # the reference is trained too
    assert set(report["summary"]) == {"baseline", "softmax"}
    assert report["summary"]["softmax"]["comparison"]["reference"] == "baseline"
    assert "`softmax`" in (tmp_path / "ablations.md").read_text()
    assert json.loads((tmp_path / "ablations.json").read_text())["iters"] == 1
    done = (tmp_path / "softmax" / "seed0" / "result.json").stat().st_mtime_ns
    again = run_ablations(shapes, tmp_path, [softmax], seeds=2, iters=1, progress=False)
    assert (tmp_path / "softmax" / "seed0" / "result.json").stat().st_mtime_ns == done  # not trained again
    assert again["summary"] == summarize(report["runs"], [VARIANTS["baseline"], softmax])


def test_the_runner_refuses_an_unknown_variant():
    with pytest.raises(ValueError, match="known: baseline"):
        variants_named(["roipool", "roiwarp"])
    assert [v.name for v in variants_named(["softmax", "baseline"])] == ["baseline", "softmax"]


def test_the_table_marks_untrained_masks_and_gaps_within_the_spread():
    def run(variant, seed, mask, box):
        return {"variant": variant, "seed": seed, "metrics": {"segm.AP": mask, "segm.AP50": mask, "segm.AP75": mask,
                                                             "bbox.AP": box}}
    results = [run("baseline", s, m, b) for s, (m, b) in enumerate([(0.50, 0.52), (0.53, 0.50), (0.49, 0.51)])]
    results += [run("no_mask_loss", s, 0.01, b) for s, b in enumerate([0.50, 0.51, 0.50])]
    results += [run("softmax", s, m, 0.5) for s, m in enumerate([0.30, 0.31, 0.29])]
    variants = [VARIANTS[name] for name in ("baseline", "softmax", "no_mask_loss")]
    table = markdown_table(summarize(results, variants), variants)
    rows = {line.split(" | ")[0].strip("| `"): line for line in table.splitlines()[2:]}
    assert rows["no_mask_loss"].count("untrained") == 3 and "-0.7 box AP" in rows["no_mask_loss"]
    assert "gap smaller than the seeds' spread" in rows["no_mask_loss"]
    assert "-20.7 mask AP (vs `baseline`)" in rows["softmax"] and "paper's direction" in rows["softmax"]
    assert "smaller than" not in rows["softmax"] and "50.7 ± 2.1" in rows["baseline"]
    differences = mask_minus_box(results, variants)
    assert set(differences) == {"baseline", "softmax"}  # no_mask_loss's masks are untrained
    assert differences["softmax"] == pytest.approx((-20.0, 1.0))


def test_the_command_line_runs_a_variant_and_records_its_command(shapes, tmp_path, capsys):
    ablate_main(["--data", str(shapes), "--out", str(tmp_path), "--only", "baseline", "--seeds", "1", "--iters", "1"])
    report = json.loads((tmp_path / "ablations.json").read_text())
    assert report["command"] == (f"python -m mrcnn_from_scratch.ablate --data {shapes} --out {tmp_path} --only baseline "
                                 "--seeds 1 --iters 1")
    assert [r["variant"] for r in report["runs"]] == ["baseline"] and "| `baseline` | 1 |" in capsys.readouterr().out


def test_the_command_line_names_the_known_variants(tmp_path, capsys):
    with pytest.raises(SystemExit, match="unknown variant roiwarp .known: baseline, roipool"):
        ablate_main(["--data", str(tmp_path), "--out", str(tmp_path), "--only", "roiwarp"])
