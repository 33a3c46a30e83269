"""Filter pruning of a ProtoPNet's trunk (issue: "works on a ProtoPNet's backbone as well")."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from protoprune.cli import main
from protoprune.config import load_config
from protoprune.models.protopnet import ProtoPNet
from protoprune.prune.importance import LRPImportance
from protoprune.prune.protopnet_filters import protopnet_ignored_layers
from protoprune.train.checkpoint import load_checkpoint, model_from_checkpoint
from protoprune.train.run import run_training

from ..conftest import tiny_overrides


@pytest.fixture(scope="module")
def protopnet(module_tmp):
    cfg = load_config(None, tiny_overrides(**{
        "model.type": "protopnet", "model.arch": "resnet18", "data.image_size": 16,
        "data.max_per_split": 40,
        "protopnet.prototypes_per_class": 2, "protopnet.prototype_dim": 16,
        "protopnet.warm_epochs": 1, "protopnet.joint_epochs": 1, "protopnet.push_start": 5,
        "protopnet.last_layer_iterations": 2, "protopnet.save_push_images": False,
    }))  # fmt: skip
    run = module_tmp / "run"
    run_training(cfg, run)
    return run / "checkpoints" / "best.pt"


def test_lrp_scores_the_trunk_but_never_the_add_on_or_last_layer(protopnet):
    model: ProtoPNet = model_from_checkpoint(protopnet)
    imp = LRPImportance(ignored_layers=protopnet_ignored_layers(model))
    x = torch.rand(6, 3, 16, 16)
    raw = imp.prepare(model, [(x, torch.arange(6) % 7)])
    assert raw and all(name.startswith("features.") for name in raw)
    ignored = {id(m) for m in protopnet_ignored_layers(model)}
    assert not any(id(m) in ignored for m in imp.scores)
    for m, s in imp.scores.items():
        assert s.shape == (m.weight.shape[0],) and torch.isfinite(s).all()
    assert sum(float(s.sum()) for s in imp.scores.values()) > 0  # the decision's relevance arrives


def test_prune_filters_on_a_protopnet_repushes_and_reloads(protopnet, tmp_path):
    out = tmp_path / "pf"
    rc = main(["prune-filters", str(protopnet), "--method", "lrp", "--total-pr", "0.3",
               "--pr-step", "0.15", "--epochs", "1", "--ref-per-class", "2", "--out", str(out)])  # fmt: skip
    assert rc == 0
    df = pd.read_csv(out / "results.csv")
    assert df["step"].tolist() == [0, 1, 2]
    assert (df["macs"].diff().dropna() < 0).all() and (df["params"].diff().dropna() < 0).all()
    assert df["pruned_ratio"].iloc[-1] == pytest.approx(0.3, abs=0.02)

    original = model_from_checkpoint(protopnet)
    ckpt = load_checkpoint(out / "models" / "step_02.pt")
    pruned = model_from_checkpoint(ckpt)  # rebuilds the narrower trunk from the stored shapes
    assert isinstance(pruned, ProtoPNet)
    assert pruned.prototype_vectors.shape == original.prototype_vectors.shape  # depth D kept
    first_add_on = next(m for m in pruned.add_on_layers.modules() if isinstance(m, torch.nn.Conv2d))
    last_trunk = [m for m in pruned.features.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert first_add_on.in_channels == last_trunk.out_channels < 512  # the add-on followed
    x = torch.rand(4, 3, 16, 16)
    assert pruned(x).shape == original(x).shape == (4, 7)
    # the step's model was re-pushed: every prototype is a latent patch of the push set
    with torch.no_grad():
        assert (pruned.prototype_vectors.abs().sum((1, 2, 3)) > 0).all()
    assert (out / "models" / "step_02.onnx").is_file()
    # every ProtoPNet command reads the pruned checkpoint, e.g. prototype pruning
    assert main(["prune-prototypes", str(out / "models" / "step_02.pt"), "--out", str(tmp_path / "pp"),
                 "--finetune-iterations", "2"]) == 0  # fmt: skip


def test_repair_epochs_sets_the_protopnets_joint_epochs_a_step(protopnet, tmp_path, monkeypatch):
    """prune_filters.repair_epochs, not the classifier's --epochs cap, sets the ProtoPNet's repair."""
    from protoprune.prune import protopnet_filters

    seen = []
    real = protopnet_filters.protopnet_repair

    def spy(model, loaders, cfg, epochs, device):
        seen.append(epochs)
        return real(model, loaders, cfg, epochs, device)

    monkeypatch.setattr(protopnet_filters, "protopnet_repair", spy)
    out = tmp_path / "pf"
    rc = main(["prune-filters", str(protopnet), "--total-pr", "0.15", "--pr-step", "0.15", "--epochs", "10",
               "--patience", "2", "--ref-per-class", "2", "--no-export", "--out", str(out),
               "--set", "prune_filters.repair_epochs=0"])  # fmt: skip
    assert rc == 0 and seen == [0]
    assert pd.read_csv(out / "results.csv")["finetune_epochs"].iloc[-1] == 0
    assert main(["prune-filters", str(protopnet), "--out", str(tmp_path / "bad"),
                 "--set", "prune_filters.repair_epochs=-1"]) == 2  # fmt: skip
    assert not (tmp_path / "bad").exists()


def test_an_unpruned_protopnet_retains_its_own_explanations(protopnet) -> None:
    from protoprune.explain.retention import RETENTION_MEASURES
    from protoprune.prune.protopnet_filters import RetentionTracker
    from protoprune.train.checkpoint import checkpoint_config
    from protoprune.train.push import push_prototypes
    from protoprune.train.run import prepare_data

    ckpt = load_checkpoint(protopnet)
    model = model_from_checkpoint(ckpt).eval()
    loaders, _ = prepare_data(checkpoint_config(ckpt))
    tracker = RetentionTracker(model, loaders, 8, 0, torch.device("cpu"), (-3.0, 3.0))
    again = push_prototypes(model, loaders.push, "cpu", loaders.class_names, progress=False)
    kept = tracker.measure(model, again.prototypes)
    assert kept == pytest.approx({f"retention_{m}": 1.0 for m in RETENTION_MEASURES})


def test_min_retention_stops_before_the_step_that_falls_below(protopnet, tmp_path) -> None:
    out = tmp_path / "pf"
    rc = main(["prune-filters", str(protopnet), "--total-pr", "0.3", "--pr-step", "0.15", "--epochs", "0",
               "--ref-per-class", "2", "--no-export", "--out", str(out), "--min-retention", "1.0",
               "--set", "prune_filters.retention_measure=prp_spearman",
               "--set", "prune_filters.retention_images=4"])  # fmt: skip
    df = pd.read_csv(out / "results.csv")
    assert rc == 0 and df["step"].tolist() == [0, 1]  # step 2 never ran
    assert df["retention_prp_spearman"].iloc[1] < 1.0
    assert "keep step 0" in df["stopped"].iloc[1]
    classifier = tmp_path / "no"
    assert main(["prune-filters", str(protopnet), "--out", str(classifier), "--min-retention", "1.5"]) == 2
    assert not classifier.exists()
