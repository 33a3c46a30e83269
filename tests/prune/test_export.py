"""Pruned models reload without the pruning code (weights_only), in the current format and in the
earlier separate one, and export to ONNX."""

from __future__ import annotations

import onnx
import pytest
import torch

from protoprune.config import load_config
from protoprune.models import build_classifier
from protoprune.prune.export import export_onnx, load_pruned
from protoprune.prune.importance import CRITERIA
from protoprune.prune.structural import prune_step
from protoprune.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint


@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn"])
def test_pruned_model_round_trip_and_onnx(tmp_path, arch):
    torch.manual_seed(0)
    model = build_classifier(arch, 7, small_input=True).eval()
    prune_step(model, CRITERIA.get("weight")(), 0.5, torch.zeros(1, 3, 16, 16))
    cfg = load_config(None, [f"model.arch={arch}", "model.small_input=true", "data.image_size=16"])
    path = save_checkpoint(tmp_path / "m.pt", model, cfg, list("abcdefg"), stage="prune_filters",
                           pruned_filters=True, step=1)  # fmt: skip
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


def test_a_pruned_classifier_in_the_earlier_separate_format_still_loads(tmp_path):
    """The dict the earlier `save_pruned` wrote (its keys as they were), read by load_pruned and
    by every command's loader (model_from_checkpoint), gives the same outputs as the model."""
    from protoprune import __version__

    torch.manual_seed(0)
    model = build_classifier("resnet18", 7, small_input=True).eval()
    prune_step(model, CRITERIA.get("weight")(), 0.5, torch.zeros(1, 3, 16, 16))
    cfg = load_config(None, ["model.arch=resnet18", "model.small_input=true", "data.image_size=16"])
    legacy = {"format": "protoprune-pruned-classifier", "protoprune_version": __version__,
              "arch": "resnet18", "num_classes": 7, "small_input": True, "class_names": list("abcdefg"),
              "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
              "step": 2, "pruned_ratio": 0.5, "config": cfg.to_dict()}  # fmt: skip
    torch.save(legacy, tmp_path / "old.pt")
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(load_pruned(tmp_path / "old.pt")(x), expected)
        assert torch.equal(model_from_checkpoint(tmp_path / "old.pt")(x), expected)
    ckpt = load_checkpoint(tmp_path / "old.pt")
    assert (ckpt["step"], ckpt["class_names"], ckpt["pruned_filters"]) == (2, list("abcdefg"), True)
    del legacy["config"]  # the oldest files: nothing to rebuild the model from, said plainly
    torch.save(legacy, tmp_path / "oldest.pt")
    from protoprune.errors import CheckpointError

    with pytest.raises(CheckpointError, match="before pruned models recorded their config"):
        load_pruned(tmp_path / "oldest.pt")
