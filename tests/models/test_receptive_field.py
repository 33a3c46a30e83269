"""Receptive fields: a hand calculation, published values, and input gradients (all trunks)."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
from torch import nn

from protoprune.errors import ConfigError
from protoprune.models.backbones import build_classifier, feature_extractor
from protoprune.models.receptive_field import Window, empirical_boxes, receptive_field


def test_a_known_stack_matches_the_hand_calculation() -> None:
    stack = nn.Sequential(
        nn.Conv2d(3, 4, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(4, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, 2, 1),
    )  # fmt: skip
    # by hand (start, jump, size): conv3 p1 -> (-1, 1, 3); pool2 s2 -> (-1, 2, 4);
    # conv3 p1 -> (-1 - 2, 2, 4 + 2 * 2) = (-3, 2, 8); conv3 s2 p1 -> (-3 - 2, 4, 8 + 2 * 2)
    rf = receptive_field(stack)
    assert rf.y == rf.x == Window(-5, 4, 12)
    # cell (1, 2) sees rows -1..10 (clipped to 0..10) and columns 3..14
    assert rf.box(1, 2, (32, 32)) == [0, 11, 3, 15]
    assert rf.box(1, 2, (32, 32)) == empirical_boxes(stack, (32, 32), [(1, 2)])[0]
    assert rf.fraction(1, 2, (32, 32)) == pytest.approx(11 * 12 / 1024)
    # a 2 x 2 prototype at (1, 2) spans one more stride per axis
    assert rf.box(1, 2, (32, 32), cells=2) == [0, 15, 3, 19]


def test_dilation_widens_the_window() -> None:
    rf = receptive_field(nn.Sequential(nn.Conv2d(3, 3, 3, 1, 2, dilation=2)))
    assert rf.y == Window(-2, 1, 5)


@pytest.mark.parametrize(("arch", "size"), [("resnet18", 435), ("resnet50", 427), ("vgg16", 212)])
def test_published_receptive_fields_of_imagenet_trunks(arch: str, size: int) -> None:
    """Araujo et al. (Distill 2019) list 435 (ResNet-18), 427 (ResNet-50), 212 (VGG-16)."""
    rf = receptive_field(feature_extractor(build_classifier(arch, 7)))
    assert rf.y.size == rf.x.size == size and rf.y.jump == 32


def _prefixes(arch: str, small: bool) -> list[nn.Module]:
    """The whole trunk and cuts of it whose cells see only part of the image."""
    trunk = feature_extractor(build_classifier(arch, 7, small))
    body = trunk.body
    if arch.startswith("resnet"):
        cuts = [body[:5], body[:6]]  # through layer1, layer2
    elif arch.startswith("vgg"):
        cuts = [body[:6], body[:11]]
    else:
        cuts = [body[:5], body[:7]]  # through denseblock1, denseblock2
    return [trunk, *cuts]


@pytest.mark.parametrize(
    ("arch", "small"),
    [("resnet18", True), ("resnet18", False), ("resnet50", True), ("vgg11_bn", True),
     ("vgg11_bn", False), ("densenet121", True)],
)  # fmt: skip
def test_analytic_boxes_equal_the_input_gradient_support(arch: str, small: bool) -> None:
    hw = (32, 32) if small else (64, 64)
    for trunk in _prefixes(arch, small):
        rf = receptive_field(trunk)
        with torch.no_grad():
            grid = trunk(torch.zeros(1, 3, *hw)).shape[-2:]
        cells = [(0, 0), (grid[0] // 2, grid[1] - 1), (grid[0] - 1, grid[1] // 3)]
        expected = [rf.box(*cell, hw) for cell in cells]
        assert empirical_boxes(trunk, hw, cells) == expected, (arch, small)


def test_a_pruned_trunk_keeps_its_receptive_field() -> None:
    model = build_classifier("resnet18", 7, small_input=True)
    before = receptive_field(feature_extractor(model))
    graph = tp.DependencyGraph().build_dependency(model, torch.zeros(1, 3, 32, 32))
    graph.get_pruning_group(model.layer2[0].conv1, tp.prune_conv_out_channels, [0, 1, 2]).prune()
    graph.get_pruning_group(model.conv1, tp.prune_conv_out_channels, [5, 6]).prune()
    trunk = feature_extractor(model)
    assert model.layer2[0].conv1.out_channels == 125
    assert receptive_field(trunk) == before
    cut = trunk.body[:6]
    rf = receptive_field(cut)
    assert rf.box(1, 2, (32, 32)) == empirical_boxes(cut, (32, 32), [(1, 2)])[0]


def test_unknown_layers_are_refused_with_a_fix() -> None:
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Conv2d(3, 3, 3)

    with pytest.raises(ConfigError, match="receptive field through a Odd"):
        receptive_field(nn.Sequential(Odd()))
