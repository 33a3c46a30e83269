"""ProtoPNet schedule: phases, losses, cached last-layer stage, stage metrics, exact resume."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from protoprune.config import RunConfig
from protoprune.data.loaders import Loaders
from protoprune.models.backbones import Features
from protoprune.protopnet import training as tp
from protoprune.protopnet.model import ProtoPNet
from protoprune.train.checkpoint import load_checkpoint

CLASSES = ["a", "b", "c"]


def tiny_model() -> ProtoPNet:
    torch.manual_seed(0)
    trunk = Features(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2)),
        8,
    )
    return ProtoPNet(trunk, len(CLASSES), prototypes_per_class=2, prototype_dim=6)


def tiny_loaders(seed: int = 0) -> Loaders:
    g = torch.Generator().manual_seed(5)
    y = torch.arange(30) % 3
    x = torch.randn(30, 3, 8, 8, generator=g) + y.view(-1, 1, 1, 1).float()  # learnable
    split = {"train": slice(0, 18), "val": slice(18, 24), "test": slice(24, 30)}
    ds = {k: TensorDataset(x[s], y[s]) for k, s in split.items()}
    gen = torch.Generator().manual_seed(seed)
    return Loaders(
        train=DataLoader(ds["train"], batch_size=6, shuffle=True, generator=gen),
        push=DataLoader(ds["train"], batch_size=6, shuffle=False),
        val=DataLoader(ds["val"], batch_size=6),
        test=DataLoader(ds["test"], batch_size=6),
        class_names=CLASSES,
        loss_weights=None,
        generator=gen,
    )


def tiny_config() -> RunConfig:
    cfg = RunConfig()
    cfg.model.type = "protopnet"
    cfg.data.batch_size = 6
    cfg.data.balance = "none"
    cfg.train.progress = False
    p = cfg.protopnet
    p.warm_epochs, p.joint_epochs, p.push_start, p.push_every, p.last_layer_iterations = (
        1,
        2,
        1,
        5,
        3,
    )
    return cfg


def killed_at_call(fn, n: int):
    """`fn`, except that its n-th call raises KeyboardInterrupt: a run killed at that point."""
    calls = 0

    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == n:
            raise KeyboardInterrupt
        return fn(*args, **kwargs)

    return wrapper


def test_schedule_defaults_push_at_start_and_always_at_the_end() -> None:
    steps = tp.build_schedule(RunConfig().protopnet)  # warm 5, joint 10, push_start 10, every 10
    assert [s for s in steps if s[0] == "push"] == [("push", 10), ("push", 14)]
    assert steps[:5] == [("warm", e) for e in range(5)]
    assert steps[5] == ("joint", 5)
    assert steps[-2:] == [("push", 14), ("last_layer", 14)]
    assert steps[steps.index(("push", 10)) + 1] == ("last_layer", 10)


def test_schedule_trunk_epochs_come_first_without_pushes() -> None:
    p = RunConfig().protopnet
    p.trunk_epochs, p.warm_epochs, p.joint_epochs, p.push_start, p.push_every = 3, 1, 2, 0, 1
    steps = tp.build_schedule(p)
    assert steps[:4] == [("trunk", 0), ("trunk", 1), ("trunk", 2), ("warm", 3)]
    # push_start counts the trunk epochs; no push before the prototype layer has trained
    assert [s for s in steps if s[0] == "push"] == [("push", 3), ("push", 4), ("push", 5)]


def test_trunk_epochs_train_the_trunk_as_a_classifier_then_drop_the_head(
    tmp_path, monkeypatch
) -> None:
    cfg = tiny_config()
    cfg.protopnet.trunk_epochs = 2
    model = tiny_model()
    trunk_before = [t.detach().clone() for t in model.features.parameters()]
    prototypes_before = model.prototype_vectors.detach().clone()
    real_epoch, seen = tp.train_epoch, {}

    def first_prototype_epoch(m, *args, **kwargs):  # state when the warm-up starts
        if not seen:
            seen["trunk"] = [t.detach().clone() for t in m.features.parameters()]
            seen["prototypes"] = m.prototype_vectors.detach().clone()
        return real_epoch(m, *args, **kwargs)

    monkeypatch.setattr(tp, "train_epoch", first_prototype_epoch)
    tp.train_protopnet(model, tiny_loaders(), cfg, tmp_path, "cpu")
    assert any(not torch.equal(a, b) for a, b in zip(trunk_before, seen["trunk"], strict=True))
    torch.testing.assert_close(seen["prototypes"], prototypes_before)  # untouched by the trunk
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["phase"].tolist()[:3] == ["trunk", "trunk", "warm"]
    trunk_rows = history[history.phase == "trunk"]
    assert trunk_rows["train_loss"].notna().all() and trunk_rows["val_accuracy"].notna().all()
    # the head is not part of the model: a ProtoPNet checkpoint keeps its usual keys
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert not any(k.startswith("head") for k in best["state_dict"])


def test_resume_inside_the_trunk_epochs_matches_an_uninterrupted_run(tmp_path, monkeypatch) -> None:
    cfg = tiny_config()
    cfg.protopnet.trunk_epochs = 2
    reference = tiny_model()
    tp.train_protopnet(reference, tiny_loaders(), cfg, tmp_path / "ref", "cpu")

    real = tp.train_one_epoch
    monkeypatch.setattr(tp, "train_one_epoch", killed_at_call(real, 2))  # the second trunk epoch
    with pytest.raises(KeyboardInterrupt):
        tp.train_protopnet(tiny_model(), tiny_loaders(), cfg, tmp_path / "run", "cpu")
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["progress"]["step"] == 1 and last["trunk_head"] is not None
    monkeypatch.setattr(tp, "train_one_epoch", real)
    resumed = tiny_model()
    tp.train_protopnet(resumed, tiny_loaders(), cfg, tmp_path / "run", "cpu", resume=True)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, atol=1e-5, rtol=1e-4)


def test_loss_terms_have_the_right_sign() -> None:
    model = tiny_model().eval()
    x = torch.randn(4, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        out = model.forward_details(x)
        cluster, separation = tp.prototype_costs(out.min_distances, y, model)
        terms = tp.protopnet_loss(out, y, model, RunConfig().protopnet)
        expected = (
            terms["cross_entropy"]
            + 0.8 * terms["cluster"]
            - 0.08 * terms["separation"]
            + 1e-4 * terms["l1"]
        )
        torch.testing.assert_close(terms["loss"], expected)
        # move prototype 0 (class a) onto a latent patch of image 0 (class a): cluster cost drops
        model.prototype_vectors[0] = out.latent[0, :, 1:2, 2:3]
        out2 = model.forward_details(x)
        cluster2, separation2 = tp.prototype_costs(out2.min_distances, y, model)
        assert cluster2 < cluster
        # ... and onto a patch of image 1 (class b): separation cost drops, so the loss rises
        model.prototype_vectors[0] = out.latent[1, :, 0:1, 0:1]
        out3 = model.forward_details(x)
        _, separation3 = tp.prototype_costs(out3.min_distances, y, model)
        assert separation3 < separation
    # L1 counts wrong-class weights only: +1 own-class weights are excluded
    assert tp.wrong_class_l1(model).item() == pytest.approx(0.5 * 6 * 2)


def test_last_layer_stage_on_cached_vectors_matches_full_model() -> None:
    from protoprune.protopnet.push import push_prototypes

    model, loaders, cfg = tiny_model(), tiny_loaders(), tiny_config()
    result = push_prototypes(model, loaders.push, "cpu", CLASSES, progress=False)
    opt = tp.build_optimizers(model, cfg.protopnet)["last"]
    before = model.last_layer.weight.detach().clone()
    rows = tp.last_layer_stage(model, result.similarities, result.targets, opt, cfg.protopnet, 6, oversample=True,
                               generator=torch.Generator().manual_seed(0), progress=False)  # fmt: skip
    assert len(rows) == 3 and not torch.equal(before, model.last_layer.weight)
    assert not model.prototype_vectors.requires_grad and not any(
        q.requires_grad for q in model.features.parameters()
    )
    x = loaders.push.dataset.tensors[0]
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model.last_layer(result.similarities), model(x), atol=1e-5, rtol=1e-5
        )


def test_full_schedule_writes_history_stages_and_best(tmp_path) -> None:
    model, loaders, cfg = tiny_model(), tiny_loaders(), tiny_config()
    results = tp.train_protopnet(model, loaders, cfg, tmp_path, "cpu")
    history = pd.read_csv(tmp_path / "history.csv")
    # warm 1, joint 2 (push after epoch 2 = push_start 1), final push after epoch 3
    assert history["phase"].tolist() == [
        "warm",
        "joint",
        "push",
        "last_layer",
        "joint",
        "push",
        "last_layer",
    ]
    for col in ("cross_entropy", "cluster", "separation", "l1", "train_loss", "val_accuracy"):
        assert col in history
    assert history.loc[history.phase == "warm", "cluster"].notna().all()
    stages = results["stages"]
    for stage in ("before_push", "after_push", "after_last_layer"):
        assert set(stages[stage]) == {"val", "test"} and "accuracy" in stages[stage]["test"]
    assert len(results["pushes"]) == 2
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    assert (tmp_path / "prototypes" / "epoch-002" / "prototypes.csv").is_file()
    assert (tmp_path / "prototypes" / "epoch-003" / "prototypes.csv").is_file()
    # the selected model is a pushed one: every prototype sits exactly on a training patch
    x = loaders.push.dataset.tensors[0]
    model.eval()
    with torch.no_grad():
        d = model.forward_details(x).distances
    assert d.amin(dim=(0, 2, 3)).max().item() < 1e-4


def test_resume_after_interruption_continues_in_the_right_phase(tmp_path, monkeypatch) -> None:
    cfg = tiny_config()
    reference = tiny_model()
    tp.train_protopnet(reference, tiny_loaders(), cfg, tmp_path / "ref", "cpu")

    real_push = tp.push_prototypes
    calls = {"epochs": 0}
    # the final push, after the last joint epoch
    monkeypatch.setattr(tp, "push_prototypes", killed_at_call(real_push, 2))
    with pytest.raises(KeyboardInterrupt):
        tp.train_protopnet(tiny_model(), tiny_loaders(), cfg, tmp_path / "run", "cpu")
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["progress"]["step"] == 5  # warm, joint, push, last_layer, joint done
    assert len(last["progress"]["pushes"]) == 1

    monkeypatch.setattr(tp, "push_prototypes", real_push)
    real_epoch = tp.train_epoch

    def counting_epoch(*args, **kwargs):
        calls["epochs"] += 1
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(tp, "train_epoch", counting_epoch)
    resumed = tiny_model()
    results = tp.train_protopnet(resumed, tiny_loaders(), cfg, tmp_path / "run", "cpu", resume=True)
    assert calls["epochs"] == 0  # resumed at the push: no epoch is trained again
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["step"].tolist() == list(range(1, 8))
    assert len(results["pushes"]) == 2
    # the interrupted + resumed run ends where the uninterrupted one does
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, atol=1e-5, rtol=1e-4)


def test_class_weights_enter_the_cross_entropy() -> None:
    model = tiny_model().eval()
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 0, 0, 0, 1, 2])
    w = torch.tensor([0.5, 2.0, 2.0])
    with torch.no_grad():
        out = model.forward_details(x)
        terms = tp.protopnet_loss(out, y, model, RunConfig().protopnet, class_weights=w)
    expected = torch.nn.functional.cross_entropy(out.logits, y, weight=w)
    torch.testing.assert_close(terms["cross_entropy"], expected)
    assert not torch.allclose(expected, torch.nn.functional.cross_entropy(out.logits, y))


def _original_joint_lrs(p, lr: float) -> list[float]:
    """The learning rate of each joint epoch as the original's main.py sets it: its loop over
    epochs calls joint_lr_scheduler.step() before tnt.train in every epoch after the warm-up."""
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, p.joint_lr_step, p.joint_lr_gamma)
    lrs = []
    for epoch in range(p.warm_epochs + p.joint_epochs):
        if epoch >= p.warm_epochs:
            scheduler.step()
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()  # tnt.train
    return lrs


@pytest.mark.filterwarnings("ignore:Detected call of")  # in the port
@pytest.mark.parametrize("step_at", ["start", "end"])
def test_joint_lr_steps_as_the_original_by_default(tmp_path, step_at) -> None:
    cfg = tiny_config()
    p = cfg.protopnet
    p.joint_epochs, p.joint_lr_step, p.push_start, p.push_every = 5, 2, 100, 100
    p.last_layer_iterations, p.save_push_images = 1, False
    p.joint_lr_step_at = step_at
    tp.train_protopnet(tiny_model(), tiny_loaders(), cfg, tmp_path, "cpu")
    history = pd.read_csv(tmp_path / "history.csv")
    lrs = history.loc[history.phase == "joint", "lr"].tolist()
    original = _original_joint_lrs(p, p.joint_lr_features)
    assert original == pytest.approx([1e-4, 1e-5, 1e-5, 1e-6, 1e-6])  # the hand count
    if step_at == "start":
        assert lrs == pytest.approx(original)
    else:  # one epoch later than the original
        assert lrs == pytest.approx([p.joint_lr_features] + original[:-1])
    assert RunConfig().protopnet.joint_lr_step_at == "start"


def _original_costs(min_distances, targets, model) -> tuple[torch.Tensor, torch.Tensor]:
    """train_and_test.py's class-specific cluster and separation costs, ported line by line."""
    max_dist = model.prototype_shape[1] * model.prototype_shape[2] * model.prototype_shape[3]
    prototypes_of_correct_class = torch.t(model.prototype_class_identity[:, targets])
    inverted_distances, _ = torch.max((max_dist - min_distances) * prototypes_of_correct_class, dim=1)
    cluster_cost = torch.mean(max_dist - inverted_distances)
    prototypes_of_wrong_class = 1 - prototypes_of_correct_class
    inverted_distances_to_nontarget_prototypes, _ = torch.max(
        (max_dist - min_distances) * prototypes_of_wrong_class, dim=1
    )
    separation_cost = torch.mean(max_dist - inverted_distances_to_nontarget_prototypes)
    return cluster_cost, separation_cost


def test_costs_match_the_original_also_for_a_class_without_prototypes() -> None:
    torch.manual_seed(0)
    trunk = Features(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()), 8)
    # prototype pruning left class c (index 2) without prototypes
    model = ProtoPNet(trunk, 3, prototype_dim=6, prototype_classes=[0, 0, 1, 1, 1]).eval()
    x = torch.randn(6, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 2, 0, 1])
    out = model.forward_details(x)
    cluster, separation = tp.prototype_costs(out.min_distances, y, model)
    assert torch.isfinite(cluster)
    ref_cluster, ref_separation = _original_costs(out.min_distances, y, model)
    torch.testing.assert_close(cluster, ref_cluster)
    torch.testing.assert_close(separation, ref_separation)
    # the same gradient too: the class-c samples' constant max_dist has none
    grads = torch.autograd.grad(cluster + separation, model.prototype_vectors, retain_graph=True)
    ref = torch.autograd.grad(ref_cluster + ref_separation, model.prototype_vectors)
    torch.testing.assert_close(grads[0], ref[0])
    terms = tp.protopnet_loss(out, y, model, RunConfig().protopnet)
    assert torch.isfinite(terms["loss"])
    # by hand: samples 2 and 3 (class c) add max_dist = 6 x 1 x 1 each to the cluster sum
    own = torch.stack([out.min_distances[i, [0, 1]].min() for i in (0, 4)]
                      + [out.min_distances[i, [2, 3, 4]].min() for i in (1, 5)])
    torch.testing.assert_close(cluster, (own.sum() + 2 * 6.0) / 6)
