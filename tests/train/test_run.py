import json

import pandas as pd
import pytest
import torch

from protoprune.config import load_config
from protoprune.errors import CheckpointError, OutputExistsError
from protoprune.train.run import run_training
from tests.conftest import tiny_overrides


def test_run_writes_everything_and_selects_on_validation(tmp_path, tiny_config):
    results = run_training(tiny_config, tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.yaml", "split.csv", "metrics.json", "metrics.md", "history.csv",
                 "confusion_matrix.png", "training_curves.png", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    history = pd.read_csv(run / "history.csv")
    assert len(history) == 2
    best = history["val_balanced_accuracy"].idxmax() + 1
    assert results["best_epoch"] == best
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test"]["n"] == 70 and 0 <= saved["test"]["accuracy"] <= 1
    split = pd.read_csv(run / "split.csv")
    assert split.groupby("split").size().to_dict() == {"test": 70, "train": 70, "val": 70}
    # the ended run's last.pt keeps the final weights and history, not the optimizer state
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["finished"] and len(last["history"]) == 2 and last["epoch"] == 1
    assert not {"optimizer", "scheduler", "scaler"} & set(last)


def test_same_seed_same_metrics_on_cpu(tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.epochs": 1}))
    a = run_training(cfg, tmp_path / "a")
    b = run_training(cfg, tmp_path / "b")
    assert a["test"]["confusion_matrix"] == b["test"]["confusion_matrix"]
    assert a["val"]["auroc_macro"] == b["val"]["auroc_macro"]
    assert (tmp_path / "a" / "split.csv").read_text() == (tmp_path / "b" / "split.csv").read_text()


def test_resume_finishes_like_an_uninterrupted_run(tmp_path):
    full = run_training(load_config(None, tiny_overrides()), tmp_path / "full")
    # stop after epoch 1, then resume to 2 epochs in the same folder
    first = load_config(None, tiny_overrides())
    first.train.epochs = 2
    run_dir = tmp_path / "part"
    from protoprune.train import run as run_mod

    original_fit = run_mod.fit

    def one_epoch_then_stop(model, loaders, cfg, run_dir_, **kw):
        import protoprune.train.loop as loop

        real = loop.train_one_epoch
        calls = {"n": 0}

        def counted(*a, **k):
            if calls["n"] == 1:
                raise KeyboardInterrupt
            calls["n"] += 1
            return real(*a, **k)

        loop.train_one_epoch = counted
        try:
            return original_fit(model, loaders, cfg, run_dir_, **kw)
        finally:
            loop.train_one_epoch = real

    run_mod.fit = one_epoch_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            run_training(first, run_dir)
    finally:
        run_mod.fit = original_fit
    assert len(pd.read_csv(run_dir / "history.csv")) == 1
    with pytest.raises(OutputExistsError):
        run_training(first, run_dir)
    resumed = run_training(first, run_dir, resume=True)
    assert resumed["test"]["confusion_matrix"] == full["test"]["confusion_matrix"]
    a = torch.load(tmp_path / "full/checkpoints/last.pt", weights_only=True)["state_dict"]
    b = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_of_a_finished_run_is_refused(tmp_path, tiny_config):
    tiny_config.train.epochs = 1
    run_training(tiny_config, tmp_path / "r")
    before = (tmp_path / "r" / "metrics.json").read_bytes()
    with pytest.raises(CheckpointError, match="the run has finished") as info:
        run_training(tiny_config, tmp_path / "r", resume=True)
    assert "--force" in info.value.fix
    assert (tmp_path / "r" / "metrics.json").read_bytes() == before


def test_resume_with_another_config_is_refused(tmp_path, tiny_config):
    tiny_config.train.epochs = 1
    run_training(tiny_config, tmp_path / "r")
    other = load_config(None, tiny_overrides(**{"model.arch": "vgg11"}))
    with pytest.raises(CheckpointError, match="model.arch"):
        run_training(other, tmp_path / "r", resume=True)
