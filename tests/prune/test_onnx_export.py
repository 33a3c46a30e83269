"""ONNX files that onnxruntime runs and that compute what the torch model computes."""

from __future__ import annotations

import copy
import logging

import numpy as np
import onnxruntime as ort
import pytest
import torch

from protoprune.errors import ProtopruneError
from protoprune.models import build_classifier, feature_extractor
from protoprune.models.backbones import Features
from protoprune.protopnet.model import ProtoPNet
from protoprune.prune import onnx_export
from protoprune.prune.importance import CRITERIA
from protoprune.prune.structural import prune_step

from .conftest import TinyNet

SIZE = 28


def _models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    pruned = build_classifier("resnet18", 7, small_input=True).eval()
    prune_step(pruned, CRITERIA.get("weight")(), 0.5, torch.zeros(1, 3, SIZE, SIZE))
    trunk = feature_extractor(build_classifier("resnet18", 7, small_input=True))
    return {
        "baseline": build_classifier("resnet18", 7, small_input=True).eval(),
        "pruned": pruned,
        "protopnet": ProtoPNet(trunk, 7, prototypes_per_class=3, prototype_dim=32).eval(),
    }


def _run(path, x: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x.numpy()})


@pytest.fixture(scope="module")
def models():
    return _models()


@pytest.mark.parametrize("kind", ["baseline", "pruned", "protopnet"])
def test_dynamo_export_runs_in_onnxruntime_as_in_torch(models, kind, tmp_path):
    model = models[kind]
    result = onnx_export.write_onnx(model, tmp_path / "m.onnx", SIZE)
    assert result["exporter"] == "dynamo"
    assert max(result["max_abs_diff"].values()) <= 1e-4
    # independently: another batch size (the batch axis is dynamic) of real images
    x = onnx_export.sample_images(SIZE, n=5)
    got = _run(tmp_path / "m.onnx", x)
    with torch.no_grad():
        if kind == "protopnet":
            out = model.forward_details(x)
            expected = [out.logits, model.similarity_vectors(x)]
        else:
            expected = [model(x)]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == tuple(e.shape)
        np.testing.assert_allclose(g, e.numpy(), rtol=0, atol=1e-4)


def test_the_legacy_exporter_is_the_fallback_with_a_warning(tmp_path, monkeypatch, caplog):
    def cannot(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(onnx_export, "_dynamo_bytes", cannot)
    tiny = ProtoPNet(Features(TinyNet().features[:6], 12), 3, prototypes_per_class=2, prototype_dim=8)
    with caplog.at_level(logging.WARNING):
        result = onnx_export.write_onnx(tiny.eval(), tmp_path / "m.onnx", SIZE)
    assert result["exporter"] == "legacy" and max(result["max_abs_diff"].values()) <= 1e-4
    assert "legacy TorchScript exporter" in caplog.text and "unsupported operator" in caplog.text


def test_a_graph_that_differs_from_torch_is_never_kept(tmp_path, monkeypatch, caplog):
    torch.manual_seed(0)
    model = TinyNet().eval()
    other = copy.deepcopy(model)  # same architecture, other weights
    with torch.no_grad():
        other.classifier[-1].bias += 1.0
    wrong = onnx_export._legacy_bytes(other, torch.zeros(2, 3, SIZE, SIZE), ["logits"])
    monkeypatch.setattr(onnx_export, "_dynamo_bytes", lambda *a: wrong)
    with caplog.at_level(logging.WARNING):
        result = onnx_export.write_onnx(model, tmp_path / "m.onnx", SIZE)
    assert result["exporter"] == "legacy" and "differs from torch" in caplog.text
    monkeypatch.setattr(onnx_export, "_legacy_bytes", lambda *a: wrong)
    with pytest.raises(onnx_export.OnnxExportError, match="max abs difference"):
        onnx_export.write_onnx(model, tmp_path / "bad.onnx", SIZE)
    assert not (tmp_path / "bad.onnx").exists()


def test_sample_images_are_the_bundled_test_images_normalised() -> None:
    from protoprune.data.medmnist import load_medmnist
    from protoprune.data.registry import bundled_path

    x = onnx_export.sample_images(SIZE, n=4)
    first = np.asarray(load_medmnist(bundled_path("dermamnist_subset.npz")).test.load_image(0))
    expected = (first / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)
    assert x.shape == (4, 3, SIZE, SIZE)


def test_missing_packages_are_named_with_the_fix(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))  # fmt: skip
    with pytest.raises(ProtopruneError, match="onnxruntime") as err:
        onnx_export.require_onnx_packages()
    assert "protoprune[onnx]" in str(err.value) and "--no-export" in str(err.value)


def test_export_onnx_command_on_a_trained_checkpoint(tmp_path, tiny_config, monkeypatch) -> None:
    from protoprune.cli import main
    from protoprune.errors import OutputExistsError
    from protoprune.train.checkpoint import save_checkpoint

    monkeypatch.setattr(onnx_export, "EXPORTERS", ("legacy",))  # the dynamo path is tested above
    torch.manual_seed(0)
    model = build_classifier("resnet18", 7, small_input=True).eval()
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt", model, tiny_config, list("abcdefg"))
    assert main(["export-onnx", str(tmp_path / "run")]) == 0
    onnx_path = tmp_path / "run" / "checkpoints" / "best.onnx"
    x = onnx_export.sample_images(tiny_config.data.image_size, n=3)
    with torch.no_grad():
        np.testing.assert_allclose(_run(onnx_path, x)[0], model(x).numpy(), rtol=0, atol=1e-4)
    with pytest.raises(OutputExistsError):  # never overwritten without --force
        onnx_export.export_checkpoint_onnx(ckpt)
    assert main(["export-onnx", str(ckpt), "--force"]) == 0


def test_the_tolerance_scales_with_the_outputs_magnitude(tmp_path):
    """Outputs in the thousands differ by float32 rounding alone beyond 1e-4: accepted, because
    the check is 1e-4 per unit of the largest output; the scale reported is max |torch output|."""
    torch.manual_seed(0)
    big = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5)).eval()
    with torch.no_grad():
        big[1].weight.mul_(3e4)
    result = onnx_export.write_onnx(big, tmp_path / "m.onnx", 8)
    x = onnx_export.sample_images(8)
    with torch.no_grad():
        expected = float(big(x).abs().max())
    (name,) = result["scale"]
    assert expected > 1e3 and result["scale"][name] == pytest.approx(expected, rel=1e-6)
    assert result["max_abs_diff"][name] <= 1e-4 * expected
    with pytest.raises(onnx_export.OnnxExportError, match="scale"):  # a tolerance below rounding
        onnx_export.write_onnx(big, tmp_path / "n.onnx", 8, atol=1e-12)
