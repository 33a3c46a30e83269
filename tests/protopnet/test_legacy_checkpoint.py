"""A ProtoPNet checkpoint written before ProtoPNet moved into protopnet/ (commit 2f38b50, by
tests/protopnet/legacy/make_legacy.py run with that commit's code) loads into today's class and
computes what it computed then (its outputs were saved beside it by the old code)."""

from __future__ import annotations

from pathlib import Path

import torch

from protoprune.protopnet.model import ProtoPNet
from protoprune.train.checkpoint import load_checkpoint, model_from_checkpoint

LEGACY = Path(__file__).parent / "legacy"


def test_a_checkpoint_from_before_the_move_loads_and_computes_the_same() -> None:
    ckpt = load_checkpoint(LEGACY / "protopnet_2f38b50.pt")
    model = model_from_checkpoint(ckpt)
    assert isinstance(model, ProtoPNet) and model.num_prototypes == 14
    then = torch.load(LEGACY / "protopnet_2f38b50_outputs.pt", weights_only=True)
    with torch.no_grad():
        now = model.forward_details(then["inputs"])
    # the same weights on the same inputs; tolerances only for another CPU's float32 kernels
    torch.testing.assert_close(now.distances, then["distances"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(now.logits, then["logits"], rtol=1e-4, atol=1e-5)
