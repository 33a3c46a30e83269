import pytest
import torch

from protoprune.errors import CheckpointError, ConfigError
from protoprune.models import ARCHITECTURES, build_classifier, feature_extractor

ALL = ["resnet18", "resnet34", "resnet50", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "densenet121"]


def test_registry_has_every_architecture_of_the_issue():
    assert set(ALL) <= set(ARCHITECTURES.names())


@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn", "densenet121", "resnet50"])
def test_small_variant_keeps_a_spatial_grid_at_28px(arch):
    model = build_classifier(arch, 7, small_input=True).eval()
    x = torch.randn(2, 3, 28, 28)
    assert model(x).shape == (2, 7)
    z = feature_extractor(model)(x)
    assert z.shape[1] == feature_extractor(model).out_channels
    assert min(z.shape[2:]) >= 3


def test_standard_variant_on_64px():
    model = build_classifier("resnet18", 5).eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    assert isinstance(model.maxpool, torch.nn.MaxPool2d)


def test_features_share_the_classifier_modules():
    model = build_classifier("resnet18", 7, small_input=True)
    feats = feature_extractor(model)
    assert feats.body[0] is model.conv1


def test_local_weights_load_and_skip_the_head(tmp_path):
    src = build_classifier("resnet18", 1000, small_input=True)
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    model = build_classifier("resnet18", 7, small_input=True, weights=path)
    assert torch.equal(model.conv1.weight, src.conv1.weight)
    assert model.fc.out_features == 7


def test_weights_of_another_architecture_fail_clearly(tmp_path):
    path = tmp_path / "vgg.pt"
    torch.save(build_classifier("vgg11", 7, small_input=True).state_dict(), path)
    with pytest.raises(CheckpointError, match="do not fit architecture 'resnet18'"):
        build_classifier("resnet18", 7, small_input=True, weights=path)


def test_missing_weights_file_and_unknown_arch(tmp_path):
    with pytest.raises(ConfigError, match="or a local state_dict file"):
        build_classifier("resnet18", 7, weights=tmp_path / "none.pt")
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        build_classifier("resnet81", 7)
