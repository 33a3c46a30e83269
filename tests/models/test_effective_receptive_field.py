"""The effective receptive field on constructed networks whose gradient mass is known by hand."""

from __future__ import annotations

import torch
from torch import nn

from protoprune.models.receptive_field import effective_receptive_field


def _uniform_conv(k: int) -> nn.Conv2d:
    conv = nn.Conv2d(1, 1, k, padding=k // 2, bias=False)
    nn.init.constant_(conv.weight, 1.0)
    return conv


def _images(n=2, size=21):
    return torch.ones(n, 1, size, size)


def test_identity_cell_sees_one_pixel():
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0
    erf = effective_receptive_field(conv, _images())
    assert erf["side"] == 1 and erf["box"] == [10, 11, 10, 11]


def test_one_uniform_5x5_conv_needs_its_whole_window():
    # mass uniform over 5 x 5: a centred 3 x 3 holds 9/25 = 36 %, so 90 % needs all 5 x 5
    erf = effective_receptive_field(_uniform_conv(5), _images())
    assert erf["side"] == 5 and erf["box"] == [8, 13, 8, 13]
    assert abs(erf["area_share"] - 25 / 441) < 1e-9


def test_two_uniform_3x3_convs_concentrate_mass_in_the_centre():
    # 1-D weights (1, 2, 3, 2, 1) / 9 per axis: the centred 3 x 3 holds (7/9)^2 = 60 % (< 90 %),
    # 5 x 5 all of it; at 55 % the 3 x 3 suffices, the analytic field is 5 x 5 either way
    net = nn.Sequential(_uniform_conv(3), _uniform_conv(3))
    assert effective_receptive_field(net, _images())["side"] == 5
    assert effective_receptive_field(net, _images(), mass=0.55)["side"] == 3


def test_strided_map_centre_is_mapped_to_the_input():
    # a 2x2 stride-2 sum: map 10 x 10 of a 20 x 20 input; cell (2, 7) sees rows 4-5, cols 14-15
    conv = nn.Conv2d(1, 1, 2, stride=2, bias=False)
    nn.init.constant_(conv.weight, 1.0)
    erf = effective_receptive_field(conv, torch.ones(1, 1, 20, 20), cell=(2, 7))
    assert erf["box"] == [4, 6, 14, 16] and erf["map"] == (10, 10)


def test_the_warning_follows_the_effective_field_not_the_analytic_one():
    """A 15 x 15 conv whose weight is all at its centre: it can see 15 px of a 16 px image (the
    analytic field warns) but depends on one pixel, so with the effective field it is localised;
    a uniform 15 x 15 kernel spreads the mass and stays flagged."""
    from protoprune.models.receptive_field import localisation, receptive_field

    delta = nn.Conv2d(1, 1, 15, padding=7, bias=False)
    with torch.no_grad():
        delta.weight.zero_()
        delta.weight[0, 0, 7, 7] = 1.0
    images = torch.ones(2, 1, 16, 16)
    analytic = localisation(receptive_field(delta), (16, 16), (16, 16), 1)
    assert not analytic["localised"] and "receptive field 15 x 15 px" in analytic["warning"]
    erf = effective_receptive_field(delta, images)
    sharp = localisation(receptive_field(delta), (16, 16), (16, 16), 1, erf)
    assert sharp["localised"] and sharp["warning"] is None
    assert sharp["effective"]["area_share"] == 1 / 256 and sharp["max_fraction"] > 0.5
    wide = _uniform_conv(15)
    flagged = localisation(receptive_field(wide), (16, 16), (16, 16), 1,
                           effective_receptive_field(wide, images))  # fmt: skip
    assert not flagged["localised"] and "effective receptive field" in flagged["warning"]
