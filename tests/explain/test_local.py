"""Local explanations: contributions add up to the logit, the box finds a planted pattern."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from protoprune.explain.local import explain_image, save_explanation
from tests.explain.fixtures import identity_protopnet

CLASSES = ["red", "green", "blue"]
PLAIN = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}  # the latent is the raw [0, 1] pixel


def planted(size: int, scale: int = 1) -> Image.Image:
    """Grey image with a pure red square at rows 10-13, cols 2-5 (in 16-px units)."""
    a = np.full((size, size, 3), 128, np.uint8)
    a[10 * scale : 14 * scale, 2 * scale : 6 * scale] = (255, 0, 0)
    return Image.fromarray(a)


def model_with_weights() -> torch.nn.Module:
    protos = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.5, 0.5, 0.5]])
    model = identity_protopnet(protos, [0, 1, 2, 1], 3)
    with torch.no_grad():
        model.last_layer.weight.copy_(torch.randn(3, 4, generator=torch.Generator().manual_seed(1)))
    return model


def test_contributions_sum_to_the_predicted_logit() -> None:
    model = model_with_weights()
    expl = explain_image(model, planted(16), CLASSES, image_size=16, top=4, **PLAIN)
    r = expl.record
    assert r["logits"][r["predicted_class"]] == pytest.approx(r["contributions_sum"], rel=1e-5)
    assert r["predicted_class"] == max(r["logits"], key=r["logits"].get)
    assert sum(p["contribution"] for p in r["top_prototypes"]) == pytest.approx(
        r["contributions_sum"], rel=1e-5
    )
    for p in r["top_prototypes"]:
        assert p["contribution"] == pytest.approx(p["similarity"] * p["weight"], rel=1e-6)
    sims = [p["similarity"] for p in r["top_prototypes"]]
    assert sims == sorted(sims, reverse=True)
    assert sum(r["probabilities"].values()) == pytest.approx(1.0)


def test_top_prototype_box_lies_on_the_planted_pattern() -> None:
    expl = explain_image(model_with_weights(), planted(16), CLASSES, image_size=16, top=2, **PLAIN)
    best = expl.record["top_prototypes"][0]
    assert (best["prototype"], best["prototype_class"]) == (0, "red")  # exact colour match
    y0, y1, x0, x1 = best["box"]
    assert 9 <= y0 and y1 <= 15 and 1 <= x0 and x1 <= 7, best["box"]
    assert y0 <= 11 and y1 >= 13 and x0 <= 3 and x1 >= 5  # and it covers the pattern


def test_hires_draws_on_the_original_resolution(tmp_path) -> None:
    expl = explain_image(
        model_with_weights(), planted(64, 4), CLASSES, image_size=16, top=2, hires=True, **PLAIN
    )
    assert expl.drawing.shape == (64, 64, 3) and expl.maps.shape == (2, 64, 64)
    y0, y1, x0, x1 = expl.record["top_prototypes"][0]["box"]
    assert 36 <= y0 and y1 <= 60 and 4 <= x0 and x1 <= 28, (y0, y1, x0, x1)
    iy0, iy1, ix0, ix1 = expl.record["top_prototypes"][0]["box_input"]  # same place, input pixels
    assert 9 <= iy0 and iy1 <= 15 and 1 <= ix0 and ix1 <= 7
    files = save_explanation(expl, None, tmp_path, "case")
    assert Image.open(tmp_path / files["figure"]).size[0] > 100
    assert json.loads((tmp_path / files["json"]).read_text())["predicted_class"] in CLASSES


def test_receptive_field_and_prp_of_a_pixel_trunk_mark_the_matched_pixel() -> None:
    """On the identity trunk a latent cell is one pixel: its receptive-field box is that pixel,
    and all PRP relevance of a prototype's similarity lands on it (the winning patch)."""
    expl = explain_image(model_with_weights(), planted(16), CLASSES, image_size=16, top=2,
                         heatmap="both", **PLAIN)  # fmt: skip
    best = expl.record["top_prototypes"][0]
    y0, y1, x0, x1 = best["rf_box_input"]
    assert (y1 - y0, x1 - x0) == (1, 1) and 10 <= y0 < 14 and 2 <= x0 < 6  # on the red square
    assert best["rf_fraction"] == pytest.approx(1 / 256)
    heat = expl.prp[0]
    assert heat.sum() == pytest.approx(best["similarity"], rel=1e-4)  # conserved to the pixels
    assert heat[y0, x0] == pytest.approx(float(heat.sum()), rel=1e-6)
    loc = expl.record["localisation"]
    assert loc["localised"] and loc["warning"] is None and loc["receptive_field"]["size"] == [1, 1]


def test_a_trunk_whose_cells_see_the_whole_image_is_flagged(tmp_path) -> None:
    from protoprune.models.backbones import build_classifier, feature_extractor
    from protoprune.protopnet.model import ProtoPNet

    torch.manual_seed(0)
    trunk = feature_extractor(build_classifier("resnet18", 3, small_input=True))
    model = ProtoPNet(trunk, 3, prototypes_per_class=2, prototype_dim=8).eval()
    expl = explain_image(model, planted(28), CLASSES, image_size=28, top=3, **PLAIN)
    loc = expl.record["localisation"]
    # small-image ResNet18: 109 px field, stride 8, on a 28 px input every cell sees it all
    assert loc["receptive_field"]["size"] == [109, 109] and loc["max_fraction"] == 1.0
    assert not loc["localised"] and "not localised parts" in loc["warning"]
    assert all(p["rf_box_input"] == [0, 28, 0, 28] for p in expl.record["top_prototypes"])
    assert expl.prp.shape == (3, 28, 28) and torch.isfinite(expl.prp).all()
    files = save_explanation(expl, None, tmp_path, "flagged")
    assert json.loads((tmp_path / files["json"]).read_text())["localisation"]["warning"]
