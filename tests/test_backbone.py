"""ResNet and FPN against torchvision: the same weights give the same feature maps at every level."""
import copy

import pytest
import torch
import torchvision
from torch import nn

from mrcnn_from_scratch.backbone import FrozenBatchNorm2d, ResNet
from mrcnn_from_scratch.fpn import BackboneWithFPN
from mrcnn_from_scratch.torchvision_weights import load_strict, load_torchvision_backbone, rename_backbone_key

from conftest import assert_as_accurate_as


def randomize_norms(module: nn.Module, seed: int) -> None:
    """Give every BatchNorm non-trivial statistics and affine weights, so that a wrong mapping shows.

    With the default init (mean 0, var 1, w 1, b 0) BatchNorm in eval mode is the identity, and
    swapping two norms' tensors would go unnoticed. Scales in [0.25, 0.75] keep activations of
    order 1 through all 101 layers, as in a trained network; with scales around 1 they reach 1e7 in
    ResNet-101, where an absolute tolerance would test nothing but float rounding.
    """
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=gen) * 0.5 + 0.25)
            m.bias.data.copy_(torch.randn(c, generator=gen) * 0.1)


def padded_batch(dtype):
    """Two odd-sized images, zero-padded together to a multiple of 32 as the model's transform does."""
    gen = torch.Generator().manual_seed(0)
    batch = torch.zeros(2, 3, 544, 544, dtype=dtype)
    batch[0, :, :333, :517] = torch.rand(3, 333, 517, generator=gen, dtype=dtype)
    batch[1, :, :517, :333] = torch.rand(3, 517, 333, generator=gen, dtype=dtype)
    return batch


def assert_close_per_level(ours, theirs):
    """float64 feature maps. Each output adds up about 50 layers of sums of up to 4,608 terms of order 1, so
    float64 rounding (1.1e-16 per operation) moves it by well under 1e-10; 1e-8 leaves a margin of 100."""
    for level, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, f"level {level}: {a.shape} vs {b.shape}"
        error = (a - b).abs().max().item()
        assert error < 1e-8, f"level {level}: max |diff| {error}, level scale {b.abs().max().item()}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_resnet50_fpn_matches_torchvision(dtype):
    """Catches a wrong weight mapping, stride, padding or FPN connection. channels_last changes which
    convolution kernels run, and so the rounding, not the meaning: both layouts against one float64 truth.
    (Not rerun by tests/perturbations.sh, to keep CI short: the 800-px model test there runs this backbone
    under every setting, and its detections would show a backbone that rounds out of bounds.)"""
    torch.manual_seed(0)
    reference = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).backbone
    randomize_norms(reference, seed=1)
    reference = reference.eval().to(dtype)
    ours = BackboneWithFPN(ResNet(50, norm="frozen_bn"))
    load_torchvision_backbone(ours, reference.state_dict())
    ours = ours.to(dtype)
    images = padded_batch(dtype)
    with torch.no_grad():
        truth = copy.deepcopy(reference).double()(images.double()) if dtype == torch.float32 else None
        for memory_format in (torch.contiguous_format, torch.channels_last):
            layout = images.contiguous(memory_format=memory_format)
            expected, got = reference(layout), ours(layout)
            assert list(got) == list(expected) == ["0", "1", "2", "3", "pool"]
            if dtype == torch.float64:
                assert_close_per_level(list(got.values()), list(expected.values()))
            else:
                for level in expected:
                    assert_as_accurate_as(got[level], expected[level], truth[level], f"{memory_format}, level {level}")


@pytest.mark.parametrize("depth", [18, 34, 101])
def test_resnet_stages_match_torchvision(depth):
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    randomize_norms(reference, seed=depth)
    reference = reference.eval().double()
    ours = ResNet(depth, norm="frozen_bn")
    load_torchvision_backbone(ours, reference.state_dict())
    ours = ours.double()
    images = torch.rand(2, 3, 97, 131, generator=torch.Generator().manual_seed(depth), dtype=torch.float64)
    with torch.no_grad():
        x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(images))))
        expected = []
        for layer in [reference.layer1, reference.layer2, reference.layer3, reference.layer4]:
            x = layer(x)
            expected.append(x)
        got = ours(images)
    assert_close_per_level(got, expected)


def test_frozen_batch_norm_equals_batch_norm_in_eval_mode():
    bn = nn.BatchNorm2d(8, eps=1e-3)
    randomize_norms(bn, seed=3)
    frozen = FrozenBatchNorm2d(8, eps=1e-3)
    load_strict(frozen, bn.state_dict())
    x = torch.randn(2, 8, 5, 7)
    torch.testing.assert_close(frozen(x), bn.eval()(x))
    assert not list(frozen.parameters())  # nothing to train


def test_norm_choices_and_gradients():
    images = torch.rand(1, 3, 64, 64)
    for norm in ["frozen_bn", "bn", "gn"]:
        model = ResNet(18, norm=norm)
        model(images)[-1].sum().backward()
        assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="norm must be"):
        ResNet(18, norm="layer")
    with pytest.raises(ValueError, match="depth"):
        ResNet(152)


@pytest.mark.parametrize("trainable", [0, 1, 3, 5])
def test_freezing_matches_torchvision_trainable_layers(trainable):
    reference = torchvision.models.detection.backbone_utils.resnet_fpn_backbone(
        backbone_name="resnet50", weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=trainable
    ).body
    expected = {n for n, p in reference.named_parameters() if p.requires_grad}
    ours = ResNet(50, norm="bn", trainable_stages=trainable)
    trainable_ours = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable_ours == {rename_backbone_key("body." + n)[len("body.") :] for n in expected}


def test_fpn_output_shapes_for_odd_sizes():
    model = BackboneWithFPN(ResNet(18, norm="frozen_bn"), out_channels=64)
    pyramid = model(torch.rand(1, 3, 100, 75))
    shapes = {name: tuple(p.shape[-2:]) for name, p in pyramid.items()}
    assert shapes == {"0": (25, 19), "1": (13, 10), "2": (7, 5), "3": (4, 3), "pool": (2, 2)}
    assert all(p.shape[1] == 64 for p in pyramid.values())


def test_loading_a_wrong_state_dict_names_the_keys():
    ours = ResNet(18)
    state = torchvision.models.resnet34(weights=None).state_dict()
    with pytest.raises(KeyError, match="unexpected keys"):
        load_torchvision_backbone(ours, state)
