"""Model-level behaviour that needs no reference: input validation, empty targets, mixed sizes, loading."""
import pytest
import torch
import torchvision

from mrcnn_from_scratch import MaskRCNN, load_torchvision_weights, maskrcnn_resnet50_fpn, small_config

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MaskRCNN(small_config(NUM_CLASSES))


def target(h=64, w=80, boxes=((4.0, 5.0, 30.0, 40.0),), labels=(1,)):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
        m[y1:y2, x1:x2] = 1
    return {"boxes": boxes, "labels": torch.tensor(labels, dtype=torch.int64), "masks": masks}


@pytest.mark.parametrize("images, error, message", [
    ([torch.randint(0, 255, (3, 64, 80), dtype=torch.uint8)], TypeError, r"float tensor.*divide by 255"),
    ([torch.rand(64, 80)], ValueError, r"images\[0\] must have shape \[3, H, W\]"),
    ([torch.rand(1, 64, 80)], ValueError, r"\[3, H, W\], got \[1, 64, 80\]"),
    (torch.rand(2, 3, 64, 80), TypeError, "list of Tensor"),
    ([], ValueError, "empty"),
])
def test_bad_images_are_rejected(model, images, error, message):
    model.eval()
    with pytest.raises(error, match=message):
        model(images)


@pytest.mark.parametrize("bad_target, message", [
    (target(boxes=((4.0, 5.0, 30.0, 40.0), (10.0, 10.0, 10.0, 20.0)), labels=(1, 2)),
     r"targets\[1\]\['boxes'\]\[1\] = \[10.0, 10.0, 10.0, 20.0\] has no area"),
    (target(boxes=((40.0, 5.0, 30.0, 40.0),)), r"targets\[1\]\['boxes'\]\[0\].*x2 > x1"),
    (target(labels=(1, 2)), r"labels'\] must be an int64 Tensor\[1\]"),
    (target(labels=(NUM_CLASSES,)), r"labels'\]\[0\] = 4 is outside 1..3"),
    (target(labels=(0,)), r"outside 1..3 \(0 is background"),
    ({**target(), "masks": torch.zeros(2, 64, 80, dtype=torch.uint8)}, r"masks'\] must be Tensor\[1, H, W\]"),
    ({**target(), "masks": torch.zeros(1, 32, 80, dtype=torch.uint8)}, r"masks'\] are \[32, 80\] but image 1 is \[64, 80\]"),
    ({"boxes": torch.zeros(0, 4)}, r"has no 'labels'"),
])
def test_bad_targets_are_rejected(model, bad_target, message):
    model.train()
    images = [torch.rand(3, 64, 80), torch.rand(3, 64, 80)]
    with pytest.raises(ValueError, match=message):
        model(images, [target(), bad_target])


def test_training_needs_targets(model):
    model.train()
    with pytest.raises(ValueError, match="needs targets"):
        model([torch.rand(3, 64, 80)])


def test_images_without_objects_train_with_zero_box_and_mask_losses(model):
    model.train()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 64, 80, dtype=torch.uint8)}
    losses = model([torch.rand(3, 64, 80), torch.rand(3, 64, 80)], [empty, empty])
    assert losses["loss_box_reg"].item() == 0 and losses["loss_mask"].item() == 0
    assert losses["loss_rpn_box_reg"].item() == 0
    assert losses["loss_classifier"].item() > 0 and losses["loss_objectness"].item() > 0
    sum(losses.values()).backward()  # the graph is whole even without objects


def test_very_different_sizes_in_one_batch(model):
    images = [torch.rand(3, 64, 64), torch.rand(3, 600, 200)]
    model.train()
    losses = model(images, [target(64, 64), target(600, 200, boxes=((20.0, 100.0, 150.0, 400.0),), labels=(3,))])
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        detections = model(images)
    for image, d in zip(images, detections):
        # An untrained model still detects (random scores pass 0.05): without detections nothing below is checked.
        assert len(d["boxes"]) > 0 and len(d["masks"]) == len(d["boxes"]) == len(d["labels"]) == len(d["scores"])
        assert d["masks"].shape[-2:] == image.shape[-2:]
        assert d["masks"].dtype == torch.float32 and d["labels"].dtype == torch.int64
        assert (d["boxes"][:, 2] <= image.shape[-1]).all() and (d["boxes"][:, 3] <= image.shape[-2]).all()


def test_load_a_saved_torchvision_checkpoint(tmp_path):
    # What a user does with the official file: torch.load it and hand it over.
    torch.manual_seed(0)
    reference = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    torch.save(reference.state_dict(), tmp_path / "maskrcnn.pth")
    model = maskrcnn_resnet50_fpn()
    load_torchvision_weights(model, torch.load(tmp_path / "maskrcnn.pth"), frozen_bn_eps=0.0)
    ours = dict(model.named_parameters())
    assert torch.equal(ours["roi_heads.mask_predictor.logits.weight"], reference.roi_heads.mask_predictor.mask_fcn_logits.weight)
    assert all(m.eps == 0.0 for m in model.modules() if type(m).__name__ == "FrozenBatchNorm2d")


def test_old_key_names_and_errors_on_mismatch():
    reference = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3)
    state = reference.state_dict()
    # Checkpoints from before torchvision 0.13 named these differently.
    old = {}
    for key, value in state.items():
        key = key.replace("fpn.inner_blocks.0.0.", "fpn.inner_blocks.0.").replace("mask_head.0.0.", "mask_head.mask_fcn1.")
        old[key] = value
    model = maskrcnn_resnet50_fpn(num_classes=3, norm="bn")
    load_torchvision_weights(model, old)
    with pytest.raises(ValueError, match="num_classes"):
        load_torchvision_weights(maskrcnn_resnet50_fpn(num_classes=5, norm="bn"), state)
    del state["roi_heads.box_head.fc6.weight"]
    with pytest.raises(KeyError, match=r"1 missing keys \['roi_heads.box_head.fc6.weight'\]"):
        load_torchvision_weights(model, state)
