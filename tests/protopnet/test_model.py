"""ProtoPNet model: distances against brute force, similarity, pooling, init, builder, checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from protoprune.config import RunConfig
from protoprune.errors import ConfigError
from protoprune.models.backbones import Features
from protoprune.protopnet.model import ProtoPNet


def tiny_protopnet(
    similarity: str = "log", k: int = 1, per_class: int = 2, classes: int = 3, dim: int = 6
) -> ProtoPNet:
    torch.manual_seed(0)
    trunk = Features(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)), 8)
    return ProtoPNet(
        trunk,
        classes,
        prototypes_per_class=per_class,
        prototype_dim=dim,
        prototype_size=k,
        similarity=similarity,
    )


def brute_force_distances(z: torch.Tensor, protos: torch.Tensor, similarity: str) -> torch.Tensor:
    """Loop over every image, prototype and position; the reference the conv expansion must match."""
    b, _, h, w = z.shape
    p, _, k, _ = protos.shape
    out = torch.empty(b, p, h - k + 1, w - k + 1, dtype=torch.float64)
    z, protos = z.double(), protos.double()
    for i in range(b):
        for j in range(p):
            for y in range(h - k + 1):
                for x in range(w - k + 1):
                    patch = z[i, :, y : y + k, x : x + k].flatten()
                    proto = protos[j].flatten()
                    if similarity == "cosine":
                        out[i, j, y, x] = 1 - torch.dot(patch, proto) / (
                            patch.norm() * proto.norm()
                        )
                    else:
                        out[i, j, y, x] = ((patch - proto) ** 2).sum()
    return out


@pytest.mark.parametrize("similarity", ["log", "cosine"])
@pytest.mark.parametrize("k", [1, 2])
def test_distances_match_brute_force(similarity: str, k: int) -> None:
    model = tiny_protopnet(similarity, k=k)
    z = torch.rand(3, 6, 5, 4)
    d = model.prototype_distances(z)
    ref = brute_force_distances(z, model.prototype_vectors.detach(), similarity)
    assert d.shape == ref.shape == (3, 6, 5 - k + 1, 4 - k + 1)
    torch.testing.assert_close(d.double(), ref, atol=1e-5, rtol=1e-5)


def test_forward_details_pools_min_distance_and_log_similarity() -> None:
    model = tiny_protopnet().eval()
    x = torch.randn(4, 3, 8, 8)
    out = model.forward_details(x)
    assert out.distances.shape == (4, 6, 4, 4)
    torch.testing.assert_close(out.min_distances, out.distances.amin(dim=(2, 3)))
    sim = torch.log((out.min_distances + 1) / (out.min_distances + model.epsilon))
    torch.testing.assert_close(out.logits, sim @ model.last_layer.weight.t())
    torch.testing.assert_close(model(x), out.logits)  # forward returns logits only
    torch.testing.assert_close(model.similarity_vectors(x), sim)


def test_zero_distance_gives_maximal_similarity() -> None:
    model = tiny_protopnet()
    d = torch.tensor([0.0, 0.5, 3.0])
    s = model.distance_to_similarity(d)
    assert s[0] == pytest.approx(torch.log(torch.tensor(1 / model.epsilon)).item(), rel=1e-5)
    assert s[0] > s[1] > s[2] > 0


def test_last_layer_init_and_class_identity() -> None:
    model = tiny_protopnet(per_class=2, classes=3)
    assert model.prototype_classes.tolist() == [0, 0, 1, 1, 2, 2]
    w = model.last_layer.weight
    assert w.shape == (3, 6) and model.last_layer.bias is None
    for c in range(3):
        for j in range(6):
            assert w[c, j].item() == (1.0 if j // 2 == c else -0.5)


def test_add_on_output_in_unit_interval_and_bottleneck_reaches_dim() -> None:
    trunk = Features(nn.Conv2d(3, 64, 1), 64)
    model = ProtoPNet(trunk, 2, prototypes_per_class=1, prototype_dim=16, add_on="bottleneck")
    z = model.conv_features(torch.randn(2, 3, 4, 4))
    assert z.shape == (2, 16, 4, 4) and z.min() >= 0 and z.max() <= 1


def test_builder_registered_small_input_and_checkpoint_round_trip(tmp_path) -> None:
    from protoprune.models.factory import build_model
    from protoprune.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

    cfg = RunConfig()
    cfg.model.type = "protopnet"
    cfg.data.image_size = 16
    cfg.protopnet.prototypes_per_class = 2
    cfg.protopnet.prototype_dim = 8
    torch.manual_seed(0)
    model = build_model(cfg, 3).eval()
    assert isinstance(model, ProtoPNet) and model.num_prototypes == 6
    x = torch.randn(2, 3, 16, 16)
    assert model.forward_details(x).distances.shape[-2:] == (2, 2)  # small-input stem: 16 px -> 2x2
    with torch.no_grad():
        model.prototype_vectors.uniform_()
        model.last_layer.weight.normal_()
        expected = model(x)
    save_checkpoint(tmp_path / "m.pt", model, cfg, ["a", "b", "c"])
    loaded = model_from_checkpoint(load_checkpoint(tmp_path / "m.pt"))
    assert isinstance(loaded, ProtoPNet)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("similarity", ["log", "cosine"])
def test_paired_distances_are_the_diagonal_of_all_pairs(similarity: str) -> None:
    model = tiny_protopnet(similarity, k=2)
    z = torch.rand(4, 6, 5, 5)
    pick = torch.tensor([3, 0, 1, 1, 2, 0])  # latent map used for each of the 6 prototypes
    full = model.prototype_distances(z)
    paired = model.paired_distances(z[pick])
    torch.testing.assert_close(paired, full[pick, torch.arange(6)], atol=1e-5, rtol=1e-5)


def test_linear_add_on_output_leaves_the_positive_orthant_and_bad_values_fail() -> None:
    torch.manual_seed(0)
    trunk = Features(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()), 8)
    model = ProtoPNet(trunk, 3, 2, 6, similarity="cosine", add_on_output="linear")
    assert not any(isinstance(m, nn.Sigmoid) for m in model.add_on_layers.modules())
    z = model.conv_features(torch.randn(2, 3, 8, 8))
    assert z.min() < 0 < z.max()
    with pytest.raises(ConfigError, match="add_on_output"):
        ProtoPNet(trunk, 3, 2, 6, add_on_output="tanh")
    with pytest.raises(ConfigError, match="similarity_scale"):
        ProtoPNet(trunk, 3, 2, 6, similarity_scale=0)


@pytest.mark.parametrize("similarity", ["log", "cosine"])
def test_similarity_scale_multiplies_similarities_and_logits(similarity: str) -> None:
    model = tiny_protopnet(similarity)
    x = torch.randn(2, 3, 8, 8)
    out = model.forward_details(x)
    sims = model.distance_to_similarity(out.min_distances)
    model.similarity_scale = 10.0
    torch.testing.assert_close(model.distance_to_similarity(out.min_distances), 10 * sims)
    torch.testing.assert_close(model(x), 10 * out.logits)  # the last layer has no bias


def test_trunk_layers_cuts_the_resnet_trunk_for_a_finer_grid(tmp_path) -> None:
    from protoprune.config import load_config
    from protoprune.models.receptive_field import receptive_field
    from protoprune.protopnet.model import build_protopnet
    from protoprune.train.checkpoint import model_from_checkpoint, save_checkpoint

    over = ["model.type=protopnet", "model.arch=resnet18", "data.image_size=28",
            "protopnet.prototypes_per_class=1", "protopnet.prototype_dim=8"]  # fmt: skip
    full = build_protopnet(load_config(None, over), 3)
    cut_cfg = load_config(None, [*over, "protopnet.trunk_layers=3"])
    cut = build_protopnet(cut_cfg, 3)
    x = torch.randn(2, 3, 28, 28)
    assert full.forward_details(x).distances.shape[-2:] == (4, 4)
    assert cut.forward_details(x).distances.shape[-2:] == (7, 7)  # layer4's stride 2 dropped
    assert cut.features.out_channels == 256
    assert not any(k.startswith("features.body.8") for k in cut.state_dict())  # no layer4
    # by hand (small variant): stem 3; layer1 +4 x 2 = 11; layer2 (stride 2) +2 +4 +8 = 25;
    # layer3 +4 +8 +16 = 53; layer4 +8 +16 +32 = 109
    assert receptive_field(full).y.size == 109 and receptive_field(cut).y.size == 53
    save_checkpoint(tmp_path / "c.pt", cut, cut_cfg, ["a", "b", "c"])
    back = model_from_checkpoint(tmp_path / "c.pt")
    torch.testing.assert_close(back(x), cut.eval()(x))
    with pytest.raises(ConfigError, match="trunk_layers"):
        build_protopnet(load_config(None, [*over, "model.arch=vgg11", "protopnet.trunk_layers=2"]), 3)
