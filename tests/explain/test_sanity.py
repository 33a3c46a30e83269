"""Sanity checks: hand-computed rank correlations, the cascade's order, and models whose maps are
known to depend (or not) on what is randomised."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protoprune.explain.sanity import (
    SANITY_LIMIT,
    randomisation_steps,
    rank_correlation,
    sanity_checks,
    sanity_summary,
)
from protoprune.models.backbones import build_classifier, feature_extractor
from protoprune.protopnet.model import ProtoPNet
from tests.explain.fixtures import identity_protopnet


def test_rank_correlation_by_hand() -> None:
    a = np.array([[1.0, 2.0, 3.0]])
    assert rank_correlation([a], [np.array([[1.0, 3.0, 2.0]])]) == pytest.approx(0.5)
    assert rank_correlation([a, a], [a * 7, -a]) == pytest.approx(0.0)  # (1 + -1) / 2
    assert rank_correlation([a, np.ones((1, 3))], [a, a]) == pytest.approx(1.0)  # constant left out


def _resnet_protopnet() -> ProtoPNet:
    torch.manual_seed(0)
    trunk = feature_extractor(build_classifier("resnet18", 2, small_input=True))
    return ProtoPNet(trunk, 2, prototypes_per_class=2, prototype_dim=8).eval()


def test_the_cascade_runs_from_the_add_on_layers_down_to_the_first_conv() -> None:
    names = [n for n, _ in randomisation_steps(_resnet_protopnet())]
    assert names == ["add_on_layers", *(f"trunk.{i} (Sequential)" for i in (7, 6, 5, 4)),
                     "trunk.1 (BatchNorm2d)", "trunk.0 (Conv2d)"]  # fmt: skip


class _Images:
    def __init__(self, x: torch.Tensor):
        self.x = x

    def __getitem__(self, i: int):
        return self.x[i], 0


def test_maps_that_do_not_depend_on_the_trunk_stay_and_prototype_maps_change() -> None:
    """Latent = pixels (no trunk weights): the cascade randomises nothing, so both maps keep
    correlation 1; random prototype colours move the similarity maps, so theirs falls."""
    model = identity_protopnet(torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]), [0, 1], 2)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 10, 10, generator=g)
    table = sanity_checks(model, _Images(x), [(0, 0), (1, 1), (2, 0)], bounds=(0.0, 1.0))
    cascade = table[table["kind"] == "cascade"]
    assert (cascade[["prp", "upsample"]].to_numpy() == pytest.approx(1.0))
    summary = sanity_summary(table)
    assert not summary["sanity_passes_upsample"]  # nothing changed: it "fails", as it should
    assert summary["sanity_prototypes_upsample"] < 0.9
    assert summary["sanity_prototypes_passes_upsample"] == (summary["sanity_prototypes_upsample"] <= 0.5)


def test_randomising_a_real_trunk_changes_the_maps_and_leaves_the_model_alone() -> None:
    model = _resnet_protopnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    table = sanity_checks(model, _Images(x), [(0, 0), (1, 3)], bounds=(0.0, 1.0), seed=3)
    assert len(table) == 7 + 1  # 7 cascade steps and the prototypes
    assert table.iloc[-2]["upsample"] < SANITY_LIMIT  # the whole latent path random
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    again = sanity_checks(model, _Images(x), [(0, 0), (1, 3)], bounds=(0.0, 1.0), seed=3)
    assert np.allclose(table[["prp", "upsample"]], again[["prp", "upsample"]], equal_nan=True)
