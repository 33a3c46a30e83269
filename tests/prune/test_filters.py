"""End to end: baseline checkpoint -> iterative pruning with fine-tuning -> table, models, plot, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from protoprune.cli import main
from protoprune.config import load_config
from protoprune.data.base import ArrayImageDataset
from protoprune.prune.export import load_pruned
from protoprune.prune.filters import reference_set, schedule
from protoprune.train.run import run_training


def test_schedule_is_in_original_filters():
    assert schedule(0.6, 0.15) == [0.15, 0.3, 0.45, 0.6]
    assert schedule(0.5, 0.2) == [0.2, 0.4, 0.5]
    assert schedule(0.0, 0.1) == []


def test_reference_set_is_per_class_and_seeded():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (40, 8, 8, 3), dtype=np.uint8)
    targets = np.repeat([0, 1, 2, 3], 10)
    targets[-7:] = 2  # class 3 has only 3 images
    ds = ArrayImageDataset(
        images, targets, ["a", "b", "c", "d"], transform=lambda im: torch.zeros(3, 8, 8)
    )
    a = reference_set(ds, 5, seed=1, batch_size=4)
    labels = torch.cat([y for _, y in a])
    assert np.bincount(labels.numpy(), minlength=4).tolist() == [5, 5, 5, 3]
    b = reference_set(ds, 5, seed=1, batch_size=4)
    assert all(torch.equal(x[1], y[1]) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def baseline(module_tmp):
    overrides = [
        "data.dataset=bundled",
        "data.max_per_split=40",
        "data.batch_size=20",
        "data.image_size=16",
        "train.epochs=1",
        "train.progress=false",
        "train.device=cpu",
        "model.arch=vgg11_bn",
    ]
    run = module_tmp / "run"
    run_training(load_config(None, overrides), run)
    return run / "checkpoints" / "best.pt"


def test_prune_filters_cli_writes_table_models_and_plot(tmp_path, baseline):
    out = tmp_path / "lrp"
    rc = main(
        [
            "prune-filters",
            str(baseline),
            "--method",
            "lrp",
            "--total-pr",
            "0.4",
            "--pr-step",
            "0.2",
            "--epochs",
            "1",
            "--ref-per-class",
            "2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    df = pd.read_csv(out / "results.csv")
    assert df["step"].tolist() == [0, 1, 2]
    assert df["pruned_ratio"].tolist() == pytest.approx([0.0, 0.2, 0.4], abs=0.01)
    assert (df["macs"].diff().dropna() < 0).all() and (df["params"].diff().dropna() < 0).all()
    assert (df["flops"] == 2 * df["macs"]).all()
    for col in ("val_accuracy_pruned", "test_balanced_accuracy", "latency_ms_b1", "latency_ms_b32"):
        assert df[col].notna().all(), col
    meta = json.loads((out / "results.json").read_text())
    assert (
        meta["method"] == "lrp" and 7 <= meta["reference_images"] <= 14 and len(meta["steps"]) == 3
    )
    assert "| step |" in (out / "results.md").read_text()
    model = load_pruned(out / "models" / "step_02.pt")
    assert sum(p.numel() for p in model.parameters()) == df["params"].iloc[-1]
    assert (out / "models" / "step_02.onnx").stat().st_size > 0
    rc = main(
        [
            "prune-filters",
            str(baseline),
            "--method",
            "weight",
            "--scope",
            "layer",
            "--total-pr",
            "0.4",
            "--pr-step",
            "0.4",
            "--epochs",
            "0",
            "--out",
            str(tmp_path / "weight"),
            "--no-export",
        ]
    )
    assert rc == 0
    png = tmp_path / "curves.png"
    assert (
        main(["prune-filters", "--plot", str(out), str(tmp_path / "weight"), "--out", str(png)])
        == 0
    )
    assert png.stat().st_size > 1000
    # an existing run folder is not overwritten without --force
    assert (
        main(
            [
                "prune-filters",
                str(baseline),
                "--out",
                str(out),
                "--total-pr",
                "0.2",
                "--pr-step",
                "0.2",
            ]
        )
        == 2
    )
