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
