"""Starting from weights: our checkpoints, torchvision's Mask R-CNN and ImageNet ResNets (train --init,
--backbone-weights), and the refusal of r50 from random weights."""
import pytest
import torch
import torchvision

from mrcnn_from_scratch import MaskRCNN, small_config
from mrcnn_from_scratch.__main__ import main
from mrcnn_from_scratch.engine.checkpoint import load_checkpoint
from mrcnn_from_scratch.engine.recipe import RECIPES
from mrcnn_from_scratch.engine.train import TrainOptions, train
from mrcnn_from_scratch.pretrained import (CLASS_SPECIFIC_PREFIXES, load_backbone_weights, load_pretrained,
                                           pretrained_config)
from mrcnn_from_scratch.torchvision_weights import rename_torchvision_key

from conftest import TINY


def is_class_specific(key: str) -> bool:
    return key.startswith(CLASS_SPECIFIC_PREFIXES)


def saved_small_checkpoint(path, class_names=("a", "b", "c"), seed=0):
    """A checkpoint file as `train` writes it (model and config), with random weights."""
    torch.manual_seed(seed)
    model = MaskRCNN(small_config(len(class_names) + 1, class_names).replace(**TINY))
    torch.save({"model": model.state_dict(), "config": model.config.to_dict()}, path)
    return model


@pytest.mark.parametrize("new_classes", [("x", "y", "z"), ("x",)])
def test_init_from_our_checkpoint(tmp_path, new_classes):
    source = saved_small_checkpoint(tmp_path / "last.pt")
    config = pretrained_config(tmp_path / "last.pt", new_classes)
    assert config.replace(num_classes=4, class_names=("a", "b", "c")) == source.config  # the file's architecture
    torch.manual_seed(1)  # other random weights than the source's
    model = MaskRCNN(config)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_pretrained(model, tmp_path / "last.pt")
    same_classes = len(new_classes) == 3
    assert bool(report.reinitialized) != same_classes
    for key, value in model.state_dict().items():
        if is_class_specific(key) and not same_classes:
            assert torch.equal(value, fresh[key]), key  # kept its fresh initialization
        else:
            assert torch.equal(value, source.state_dict()[key]), key
    if not same_classes:
        assert len(report.reinitialized) == 6 and "the file has 4 classes" in str(report)


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    """torchvision's maskrcnn_resnet50_fpn with COCO's 91 classes and random weights, saved as its hub file is."""
    torch.manual_seed(0)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    path = tmp_path_factory.mktemp("weights") / "maskrcnn.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


@pytest.mark.parametrize("num_new_classes", [90, 2])
def test_init_from_torchvision_weights(torchvision_file, num_new_classes):
    path, state_dict = torchvision_file
    config = pretrained_config(path, tuple(f"class{i}" for i in range(num_new_classes)))
    assert (config.depth, config.fpn_channels, config.frozen_bn_eps) == (50, 256, 0.0)
    model = MaskRCNN(config)
    report = load_pretrained(model, path)
    ours = model.state_dict()
    compared = 0
    for key, value in state_dict.items():
        key = rename_torchvision_key(key)
        if key not in ours:  # BatchNorm's num_batches_tracked, which FrozenBatchNorm2d does not keep
            assert key.endswith("num_batches_tracked")
            continue
        if is_class_specific(key) and num_new_classes != 90:
            assert ours[key].shape[0] in (3, 12) and key in report.reinitialized
        else:
            assert torch.equal(ours[key], value), key
            compared += 1
    assert compared == len(ours) - len(report.reinitialized)


def test_init_refuses_another_architecture_by_name(tmp_path):
    saved_small_checkpoint(tmp_path / "last.pt")
    wider = MaskRCNN(small_config(4).replace(**{**TINY, "fpn_channels": 32}))
    with pytest.raises(ValueError, match=r"backbone\.fpn\.\S+ has shape .*another architecture"):
        load_pretrained(wider, tmp_path / "last.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a PyTorch weights file"):
        load_pretrained(wider, tmp_path / "junk.pt")


@pytest.mark.parametrize("depth", [18, 50])
def test_backbone_weights_from_an_imagenet_resnet(tmp_path, depth):
    torch.manual_seed(depth)
    resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(resnet.state_dict(), path)
    model = MaskRCNN(small_config(4).replace(depth=depth, width=64, norm="frozen_bn", trainable_stages=3))
    report = load_backbone_weights(model, path)
    body = model.backbone.body
    assert torch.equal(body.stem[0].weight, resnet.conv1.weight)
    assert torch.equal(body.stem[1].running_var, resnet.bn1.running_var)
    assert torch.equal(body.stages[3][-1].conv2.weight, resnet.layer4[-1].conv2.weight)
    assert torch.equal(body.stages[1][0].shortcut[0].weight, resnet.layer2[0].downsample[0].weight)
    assert len(report.loaded) == len(body.state_dict())
    # The wrong depth or width, and GroupNorm, are refused with the fix.
    with pytest.raises(ValueError, match=f"ResNet-{depth} of width 64, the model a ResNet-34 .* --set depth={depth}"):
        load_backbone_weights(MaskRCNN(small_config(4).replace(depth=34, width=64)), path)
    with pytest.raises(ValueError, match="GroupNorm .* norm=frozen_bn"):
        load_backbone_weights(MaskRCNN(small_config(4).replace(depth=depth, width=64)), path)
    state = resnet.state_dict()
    del state["layer1.0.conv1.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(KeyError, match=r"missing keys \['stages.0.0.conv1.weight'\]"):
        load_backbone_weights(model, tmp_path / "broken.pth")


def test_r50_from_random_weights_is_refused(shapes, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(shapes), "--out", str(tmp_path / "run"), "--config", "r50"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    for phrase in ["Frozen BatchNorm", "--backbone-weights", "--init", "--set norm=gn trainable_stages=5"]:
        assert phrase in message
    assert not (tmp_path / "run").exists()  # no run folder for a run that never started


def test_train_with_init_fine_tunes_with_new_class_layers(shapes, tmp_path, capsys):
    source = saved_small_checkpoint(tmp_path / "source.pt", class_names=("one", "two"))
    options = TrainOptions(data=shapes, out=tmp_path / "run", init=str(tmp_path / "source.pt"), iters=2,
                           batch_size=2, workers=0, val_every=0, config_overrides={"box_score_thresh": 0.01})
    checkpoint = load_checkpoint(train(options))
    printed = capsys.readouterr().out
    assert "re-initialized 6 class-specific tensors" in printed and "training finetune" in printed
    assert checkpoint["settings"]["lr"] == RECIPES["finetune"].lr
    assert checkpoint["config"]["width"] == 8 and checkpoint["config"]["box_score_thresh"] == 0.01
    assert checkpoint["config"]["num_classes"] == 4  # the shapes' three classes and the background
    # The stem was trained for two steps at a small rate: near the source's weights, not at a fresh draw.
    stem = checkpoint["model"]["backbone.body.stem.0.weight"]
    assert (stem - source.state_dict()["backbone.body.stem.0.weight"]).abs().max() < 0.01
    with pytest.raises(SystemExit):
        main(["train", "--data", str(shapes), "--out", str(tmp_path / "other"), "--init", str(tmp_path / "source.pt"),
              "--config", "small"])
    assert "leave out --config" in capsys.readouterr().err
