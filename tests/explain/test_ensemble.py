"""Ensembles: logits are the sum of the members'; explanations name the contributing member."""

from __future__ import annotations

import pytest
import torch

from protoprune.explain.ensemble import SummedLogits, evaluate_ensemble
from protoprune.explain.local import explain_image
from protoprune.train.checkpoint import (
    checkpoint_config,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from protoprune.train.run import prepare_data
from tests.explain.fixtures import identity_protopnet, trained_run
from tests.explain.test_local import CLASSES, PLAIN, planted


def test_ensemble_logits_are_the_sum_of_the_members(tmp_path) -> None:
    ckpt = load_checkpoint(trained_run())
    cfg = checkpoint_config(ckpt)
    other = model_from_checkpoint(ckpt)
    with torch.no_grad():
        other.last_layer.weight.mul_(-2.0).add_(0.3)  # a clearly different second member
    second = save_checkpoint(tmp_path / "second.pt", other, cfg, ckpt["class_names"])
    result = evaluate_ensemble([ckpt, second], split="val", device="cpu")

    loaders, _ = prepare_data(cfg)
    x = torch.cat([xb for xb, _ in loaders.val])
    with torch.no_grad():
        expected = [model_from_checkpoint(ckpt)(x), other.eval()(x)]
    torch.testing.assert_close(
        torch.from_numpy(result["member_logits"][0]), expected[0], rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(
        torch.from_numpy(result["member_logits"][1]), expected[1], rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(
        torch.from_numpy(result["logits"]), expected[0] + expected[1], rtol=1e-4, atol=1e-4
    )
    assert result["ensemble"]["n"] == len(x) and len(result["members"]) == 2
    with torch.no_grad():
        torch.testing.assert_close(
            SummedLogits([model_from_checkpoint(ckpt), other])(x), expected[0] + expected[1]
        )


def test_ensemble_explanation_lists_members_and_adds_up() -> None:
    a = identity_protopnet(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]), [0, 1], 3)
    b = identity_protopnet(torch.tensor([[0, 0, 1.0], [1.0, 0, 0]]), [2, 0], 3)
    expl = explain_image([a, b], planted(16), CLASSES, image_size=16, top=4, **PLAIN)
    r = expl.record
    assert r["members"] == 2
    assert {p["member"] for p in r["top_prototypes"]} == {0, 1}
    assert r["logits"][r["predicted_class"]] == pytest.approx(r["contributions_sum"], rel=1e-5)
    x = torch.from_numpy(expl.drawing).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        total = (a(x) + b(x))[0]
    assert r["predicted_class"] == CLASSES[int(total.argmax())]
