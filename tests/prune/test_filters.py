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
from protoprune.prune.filters import reference_set
from protoprune.train.run import run_training


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
    # step 0 is the unpruned baseline: not copied (meta["checkpoint"] names it)
    assert not (out / "models" / "step_00.pt").exists() and not (out / "models" / "step_00.onnx").exists()
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


def test_prune_curve_cli_cuts_each_ratio_one_shot_and_resumes(tmp_path, baseline, monkeypatch):
    import shutil

    from protoprune.prune.importance import LRPImportance
    from protoprune.prune.relevance import input_bounds
    from protoprune.prune.structural import prune_step
    from protoprune.train.checkpoint import (
        checkpoint_config,
        load_checkpoint,
        model_from_checkpoint,
    )
    from protoprune.train.evaluate import evaluate_model
    from protoprune.train.run import prepare_data

    out = tmp_path / "curve"
    args = ["prune-curve", str(baseline), "--methods", "lrp,weight,random", "--ratios", "0.1,0.3",
            "--ref-seeds", "2", "--normalize", "none,reference", "--splits", "test",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    df = pd.read_csv(out / "curve.csv")
    # lrp and weight with and without --norm, random raw only; 2 draws; ratio 0 and two cuts
    assert len(df) == (2 + 2 + 1) * 2 * 3
    assert (out / "curve.png").stat().st_size > 0 and "Paired differences" in (out / "curve.md").read_text()
    cut = df[df.ratio > 0]
    assert np.allclose(cut["filters_removed_ratio"], cut["ratio"], atol=0.02)
    weight = cut[(cut.method == "weight") & (cut.normalize == "none")]
    assert weight.groupby("ratio")["test_accuracy"].nunique().eq(1).all()  # data-free: one cut
    # one cell recomputed independently: lrp, draw 1, 30 % removed from a fresh copy
    ckpt = load_checkpoint(baseline)
    cfg = checkpoint_config(ckpt)
    loaders, _ = prepare_data(cfg)
    model = model_from_checkpoint(ckpt).eval()
    ref = reference_set(loaders.push.dataset, cfg.prune_filters.ref_per_class, 1, cfg.data.batch_size)
    imp = LRPImportance(bounds=input_bounds(cfg.data.mean, cfg.data.std), ignored_layers=[model.classifier[-1]])
    prune_step(model, imp, 0.3, torch.zeros(1, 3, 16, 16), ref)
    expected = evaluate_model(model, loaders.test, loaders.class_names)["balanced_accuracy"]
    row = cut[(cut.method == "lrp") & (cut.normalize == "none") & (cut.ref_seed == 1) & (cut.ratio == 0.3)]
    assert row["test_balanced_accuracy"].item() == pytest.approx(expected)
    # resuming a finished curve computes nothing new; pooling two runs pairs run x draw
    assert main(args + ["--resume"]) == 0
    assert pd.read_csv(out / "curve.csv").equals(df)
    shutil.copytree(out, tmp_path / "curve2")
    assert main(["prune-curve", "--summarize", str(out), str(tmp_path / "curve2"), "--out", str(tmp_path / "pooled")]) == 0
    pooled = (tmp_path / "pooled" / "curve.md").read_text()
    assert "lrp/none - random/none" in pooled and "| area | 2 |" in pooled  # unit: the run (two copies), its draws averaged
    layers = pd.read_csv(out / "curve_layers.csv")
    assert set(layers["ratio"]) == {0.1, 0.3} and (layers["filters"] <= layers["initial"]).all()
    cut30 = layers[(layers.method == "lrp") & (layers.normalize == "none") & (layers.ref_seed == 1) & (layers.ratio == 0.3)]
    assert cut30["filters"].sum() == (cut30["initial"].sum() - row["filters_removed"].item())
    # a third draw on resume: weight's data-free cut is taken from an earlier draw, not cut again
    import protoprune.experiments.pruning_curve as curve_module

    monkeypatch.setattr(curve_module, "curve_block", lambda *a, **k: pytest.fail("cut again"))
    more = [a if a != "2" else "3" for a in args] + ["--resume"]
    assert main([*more[:3], "weight", *more[4:]]) == 0
    df3 = pd.read_csv(out / "curve.csv")
    w = df3[(df3.method == "weight") & (df3.ratio > 0)].sort_values(["normalize", "ratio"])
    assert set(w.ref_seed) == {0, 1, 2} and w.groupby(["normalize", "ratio"])["test_accuracy"].nunique().eq(1).all()
    assert len(pd.read_csv(out / "curve_layers.csv").query("method == 'weight' and ref_seed == 2")) > 0


@pytest.mark.parametrize("bad", [["--ratios", "0.7:0.1:0.1"], ["--methods", "lrp,magic"],
                                 ["--normalize", "max"], ["--splits", "train"]])  # fmt: skip
def test_prune_curve_refuses_bad_settings_before_loading(tmp_path, bad, capsys):
    rc = main(["prune-curve", str(tmp_path / "missing.pt"), *bad, "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "missing.pt" not in capsys.readouterr().err  # refused before the checkpoint is read
    assert not (tmp_path / "o").exists()


def test_fine_tuning_stops_after_patience_epochs_without_improvement(tmp_path):
    from protoprune.models import build_classifier
    from protoprune.train.loop import fit

    cfg = load_config(None, ["data.dataset=bundled", "data.max_per_split=20", "data.batch_size=20",
                             "data.image_size=16", "train.progress=false", "train.lr=1e-12"])  # fmt: skip
    from protoprune.train.run import prepare_data

    loaders, _ = prepare_data(cfg)
    model = build_classifier("resnet18", len(loaders.class_names), small_input=True)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.0  # with lr ~ 0 and frozen statistics the model cannot change
    out = fit(model, loaders, cfg, epochs=5, device="cpu", patience=1)
    assert len(out["history"]) == 2 and out["best_epoch"] == 1  # epoch 2 cannot improve
    assert len(fit(model, loaders, cfg, epochs=3, device="cpu")["history"]) == 3
