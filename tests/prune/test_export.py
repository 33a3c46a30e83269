"""Pruned models reload without the pruning code (weights_only) and export to ONNX."""

from __future__ import annotations

import onnx
import pytest
import torch

from protoprune.models import build_classifier
from protoprune.prune.export import export_onnx, load_pruned, save_pruned
from protoprune.prune.importance import CRITERIA
from protoprune.prune.structural import prune_step


@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn"])
def test_pruned_model_round_trip_and_onnx(tmp_path, arch):
    torch.manual_seed(0)
    model = build_classifier(arch, 7, small_input=True).eval()
    prune_step(model, CRITERIA.get("weight")(), 0.5, torch.zeros(1, 3, 16, 16))
    path = save_pruned(tmp_path / "m.pt", model, arch, 7, True, class_names=list("abcdefg"), step=1)
    raw = torch.load(path, weights_only=True)  # plain tensors and data only
    assert raw["step"] == 1 and raw["class_names"] == list("abcdefg")
    again = load_pruned(path)
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(again(x), model(x))
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in model.parameters())
    onnx_path = export_onnx(model, tmp_path / "m.onnx", 16)
    graph = onnx.load(str(onnx_path))
    onnx.checker.check_model(graph)
    assert graph.graph.input[0].name == "image"


def test_load_pruned_rejects_other_files(tmp_path):
    from protoprune.errors import CheckpointError

    torch.save({"state_dict": {}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError):
        load_pruned(tmp_path / "x.pt")
