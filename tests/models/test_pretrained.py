"""torchvision weights by name, from a hub cache placed in a temporary TORCH_HOME (no network)."""

from __future__ import annotations

import logging
import urllib.error

import pytest
import torch
import yaml
from torchvision import models as tvm

from protoprune.config import RunConfig, load_config
from protoprune.errors import ConfigError
from protoprune.models import build_classifier, feature_extractor
from protoprune.models.pretrained import resolve_pretrained
from protoprune.protopnet.model import build_protopnet

RESNET18_FILE = "resnet18-f37072fd.pth"  # the name torchvision's ResNet18_Weights.IMAGENET1K_V1 uses


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A TORCH_HOME whose hub cache holds a random ResNet18 state_dict under torchvision's file
    name; downloads fail (and are recorded) as they would offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(123)
    state = tvm.resnet18(weights=None).state_dict()
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, folder / RESNET18_FILE)
    downloads: list[str] = []

    def offline(url, dst, *args, **kwargs):
        downloads.append(url)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return folder, state, downloads


@pytest.mark.parametrize("name", ["imagenet", "DEFAULT", "ResNet18_Weights.IMAGENET1K_V1", "IMAGENET1K_V1"])
def test_named_weights_load_from_the_cache_and_the_head_is_new(hub, name):
    folder, state, downloads = hub
    model = build_classifier("resnet18", 7, weights=name)
    own = model.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key
    assert model.fc.out_features == 7 and model.fc.in_features == 512
    assert downloads == []


def test_a_protopnet_trunk_is_the_pretrained_trunk(hub):
    _, state, _ = hub
    cfg = RunConfig()
    cfg.model.type, cfg.model.weights, cfg.data.image_size = "protopnet", "imagenet", 224
    model = build_protopnet(cfg, 7)
    assert torch.equal(model.features.body[0].weight, state["conv1.weight"])
    assert torch.equal(model.features.body[7][1].conv2.weight, state["layer4.1.conv2.weight"])


def test_the_small_image_stem_starts_at_random_with_a_warning(hub, caplog):
    _, state, _ = hub
    with caplog.at_level(logging.WARNING):
        model = build_classifier("resnet18", 7, small_input=True, weights="imagenet")
    assert model.conv1.weight.shape == (64, 3, 3, 3)
    assert torch.equal(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert torch.equal(model.bn1.weight, state["bn1.weight"])
    assert "conv1.weight start from random" in caplog.text
    assert "layer1" not in caplog.text and "fc." not in caplog.text
    x = torch.randn(2, 3, 28, 28)
    assert feature_extractor(model)(x).shape[-1] == 4


def test_offline_and_not_cached_names_the_file_and_the_folder(hub):
    folder, _, downloads = hub
    (folder / RESNET18_FILE).unlink()
    with pytest.raises(ConfigError) as err:
        build_classifier("resnet18", 7, weights="imagenet")
    message = str(err.value)
    assert RESNET18_FILE in message and str(folder) in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert downloads == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]


def test_names_of_other_architectures_or_unknown_ones_fail_clearly(hub):
    with pytest.raises(ConfigError, match="another architecture"):
        build_classifier("resnet18", 7, weights="ResNet50_Weights.IMAGENET1K_V2")
    with pytest.raises(ConfigError, match="not a torchvision weights name"):
        build_classifier("resnet18", 7, weights="ResNet18_Weights.IMAGENET1K_V7")


def test_a_run_records_the_weights_and_normalises_as_they_do(hub, tmp_path, caplog):
    from protoprune.train.run import run_training

    cfg = load_config(None, [
        "data.dataset=bundled", "data.max_per_split=40", "data.image_size=32",
        "data.mean=[0.5,0.5,0.5]", "data.std=[0.5,0.5,0.5]", "model.small_input=false",
        "model.weights=imagenet", "train.epochs=1", "train.progress=false", "train.device=cpu",
    ])  # fmt: skip
    expected = tvm.ResNet18_Weights.IMAGENET1K_V1.transforms()
    with caplog.at_level(logging.WARNING):
        run_training(cfg, tmp_path / "run")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["weights"] == "ResNet18_Weights.IMAGENET1K_V1"
    assert saved["data"]["mean"] == list(expected.mean) and saved["data"]["std"] == list(expected.std)
    assert "data.mean/std" in caplog.text
    # the saved config resumes without a spurious difference
    again = resolve_pretrained(load_config(tmp_path / "run" / "config.yaml"))
    assert again.to_dict() == load_config(tmp_path / "run" / "config.yaml").to_dict()


def test_an_offline_run_fails_before_the_run_folder_is_made(hub, tmp_path):
    from protoprune.train.run import run_training

    folder, _, _ = hub
    (folder / RESNET18_FILE).unlink()
    cfg = load_config(None, ["model.weights=imagenet", "train.progress=false"])
    with pytest.raises(ConfigError, match=RESNET18_FILE):
        run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_local_file_still_loads(hub, tmp_path):
    _, state, downloads = hub
    torch.save(state, tmp_path / "mine.pt")
    model = build_classifier("resnet18", 7, weights=tmp_path / "mine.pt")
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    model = build_classifier("resnet18", 7, weights=str(tmp_path / "mine.pt"))
    assert torch.equal(model.layer2[0].bn1.running_mean, state["layer2.0.bn1.running_mean"])
    assert downloads == []
