"""Filter pruning of a ProtoPNet's trunk (issue: "works on a ProtoPNet's backbone as well")."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from protoprune.cli import main
from protoprune.config import load_config
from protoprune.experiments.repair_control import repair_control
from protoprune.protopnet.model import ProtoPNet
from protoprune.protopnet.trunk_pruning import protopnet_ignored_layers
from protoprune.prune.importance import LRPImportance
from protoprune.train.checkpoint import checkpoint_config, load_checkpoint, model_from_checkpoint
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
    from protoprune.protopnet import trunk_pruning

    seen = []
    real = trunk_pruning.protopnet_repair

    def spy(model, loaders, cfg, epochs, device):
        seen.append(epochs)
        return real(model, loaders, cfg, epochs, device)

    monkeypatch.setattr(trunk_pruning, "protopnet_repair", spy)
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
    from protoprune.protopnet.push import push_prototypes
    from protoprune.protopnet.trunk_pruning import RetentionTracker
    from protoprune.train.checkpoint import checkpoint_config
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


def _two_filter_protopnet() -> ProtoPNet:
    """A ProtoPNet computed by hand: the trunk's two 1x1 filters read red (weight 1) and half the
    green (weight 0.5); the add-on (linear output) makes the latent (r + g, g); prototype 0
    (class 0) starts at (0.6, 0.5), prototype 1 (class 1) at (5, 5)."""
    from torch import nn

    from protoprune.models.backbones import Features

    trunk = nn.Conv2d(3, 2, 1, bias=False)
    model = ProtoPNet(Features(nn.Sequential(trunk), 2), 2, prototypes_per_class=1, prototype_dim=2,
                      add_on_output="linear")  # fmt: skip
    with torch.no_grad():
        trunk.weight.zero_()
        trunk.weight[0, 0] = 1.0
        trunk.weight[1, 1] = 0.5
        mix, out = model.add_on_layers[0], model.add_on_layers[2]
        mix.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 1.0]])[:, :, None, None])
        out.weight.copy_(torch.eye(2)[:, :, None, None])
        mix.bias.zero_()
        out.bias.zero_()
        model.prototype_vectors.copy_(torch.tensor([[0.6, 0.5], [5.0, 5.0]])[:, :, None, None])
    return model.eval()


def test_pruning_a_filter_moves_a_prototypes_source_where_a_hand_calculation_says() -> None:
    """Image A has (r, g) = (1, 0) in one pixel, image B (0, 1.2): latents (1, 0) and (0.6, 0.6),
    so prototype 0 (0.6, 0.5) is pushed onto B (squared distance 0.01 against A's 0.41, the empty
    pixels' 0.61). The weight criterion removes the green filter (L1 0.5 < 1); the latent becomes
    (r, 0): A (1, 0) is at 0.4^2 + 0.6^2 = 0.52 from the pushed prototype (0.6, 0.6), B and the
    empty pixels at 0.72, so the re-push moves prototype 0 from B to A, and retention says 1 of
    the 2 prototypes kept its source (prototype 1 has one class-1 image to go to)."""
    from torch.utils.data import DataLoader, TensorDataset

    from protoprune.explain.retention import push_sources, retention, snapshot
    from protoprune.protopnet.push import push_prototypes
    from protoprune.prune.importance import CRITERIA
    from protoprune.prune.structural import prune_step

    x = torch.zeros(3, 3, 2, 2)
    x[0, 0, 0, 0] = 1.0  # A, class 0
    x[1, 1, 1, 1] = 1.2  # B, class 0
    x[2, 2] = 1.0  # C, class 1 (blue only: latent 0)
    loader = DataLoader(TensorDataset(x, torch.tensor([0, 0, 1])), batch_size=3)
    model = _two_filter_protopnet()
    before = push_prototypes(model, loader, "cpu", ["a", "b"], progress=False)
    assert [r["image_index"] for r in before.prototypes] == [1, 2]
    assert (before.prototypes[0]["latent_h"], before.prototypes[0]["latent_w"]) == (1, 1)
    assert before.prototypes[0]["distance"] == pytest.approx(0.01, abs=1e-6)
    base = snapshot(model, before.prototypes, x)

    prune_step(model, CRITERIA.get("weight")(), 0.5, torch.zeros(1, 3, 2, 2),
               ignored_layers=protopnet_ignored_layers(model))  # fmt: skip
    trunk = model.features.body[0]
    assert trunk.weight.shape[0] == 1 and float(trunk.weight[0, 0].detach()) == 1.0  # the red filter stays
    after = push_prototypes(model, loader, "cpu", ["a", "b"], progress=False)
    assert [r["image_index"] for r in after.prototypes] == [0, 2]
    assert (after.prototypes[0]["latent_h"], after.prototypes[0]["latent_w"]) == (0, 0)
    assert after.prototypes[0]["distance"] == pytest.approx(0.52, abs=1e-6)
    now = snapshot(model, after.prototypes, x, base.heat_prototype)
    assert push_sources(after.prototypes)[0].tolist() == [0, 2]
    kept = retention(base, now)
    assert kept["same_source_image"] == pytest.approx(0.5)
    assert kept["same_source_cell"] == pytest.approx(0.5)


def test_the_tracker_reports_localisation_beside_the_unpruned_model_and_chance() -> None:
    """With lesion masks on the fixed images, each step's row carries the heatmaps' localisation,
    the unpruned model's and the chance level; an unchanged model equals its unpruned self."""
    from types import SimpleNamespace

    import numpy as np
    from torch.utils.data import DataLoader, TensorDataset

    from protoprune.protopnet.push import push_prototypes
    from protoprune.protopnet.trunk_pruning import RetentionTracker

    x = torch.rand(4, 3, 2, 2)
    y = torch.tensor([0, 0, 1, 1])

    class Masked(TensorDataset):
        def load_mask(self, index, size=None):
            assert size == (2, 2)
            return np.array([[True, False], [False, index % 2 == 1]])  # 1/4 or 1/2 of the image

    loaders = SimpleNamespace(test=SimpleNamespace(dataset=Masked(x, y)), class_names=["a", "b"],
                              push=DataLoader(TensorDataset(x, y), batch_size=4))  # fmt: skip
    model = _two_filter_protopnet()
    tracker = RetentionTracker(model, loaders, 4, 0, torch.device("cpu"), (0.0, 1.0))
    row = tracker.measure(model, push_prototypes(model, loaders.push, "cpu", ["a", "b"], progress=False).prototypes)
    assert row["retention_same_source_image"] == 1.0
    for m in ("on_lesion", "pointing", "top_iou"):
        assert row[f"localisation_{m}"] == pytest.approx(row[f"localisation_{m}_unpruned"])
    assert row["localisation_on_lesion_chance"] == pytest.approx((0.25 + 0.5) / 2)


# --- the repair control: the same repairs without pruning (experiments.repair_control) ---


def _cfg(checkpoint, **settings):
    cfg = checkpoint_config(load_checkpoint(checkpoint))
    for key, value in settings.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    return cfg


def test_a_repair_that_trains_nothing_keeps_every_explanation(protopnet, tmp_path):
    # best.pt is pushed (a run ends with a push): re-pushing it finds each prototype's own patch
    # (distance 0), and with no joint epoch and no last-layer iteration nothing else changes
    cfg = _cfg(protopnet, **{"prune_filters.repair_epochs": 0, "protopnet.last_layer_iterations": 0,
                             "prune_filters.retention_images": 6, "prune_filters.total_pr": 0.4,
                             "prune_filters.pr_step": 0.2})  # fmt: skip
    df = repair_control(protopnet, cfg, out_csv=tmp_path / "control.csv")
    assert df["step"].tolist() == [0, 1, 2]  # as many repairs as the schedule 0.2, 0.4 has steps
    for measure in ("same_source_image", "same_source_cell", "topk_jaccard", "same_strongest"):
        assert (df.loc[1:, f"retention_{measure}"] == 1.0).all(), measure
    assert df.loc[1:, "retention_prp_spearman"].to_numpy() == pytest.approx(1.0, abs=1e-6)
    assert df["test_balanced_accuracy"].nunique() == 1
    assert (tmp_path / "control.csv").is_file()


def test_joint_epochs_move_the_explanations_of_an_unpruned_model(protopnet):
    cfg = _cfg(protopnet, **{"prune_filters.repair_epochs": 2, "prune_filters.retention_images": 6})
    cfg.protopnet.joint_lr_features = cfg.protopnet.joint_lr_add_on = 0.05  # a large step: it must move
    df = repair_control(protopnet, cfg, repairs=1)
    assert len(df) == 2 and df.loc[1, "repair_epochs"] == 2
    assert df.loc[1, "retention_prp_spearman"] < 1.0
