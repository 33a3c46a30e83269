"""Reproducibility: the same config and seed give the same split files and the same CPU metrics;
another seed gives another split. And safety of loading: nothing ever unpickles code."""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import protoprune
from protoprune.config import load_config
from protoprune.data.registry import bundled_path
from protoprune.errors import CheckpointError
from protoprune.train.checkpoint import load_checkpoint
from protoprune.train.run import prepare_data, run_training
from tests.conftest import tiny_overrides

HAM = ["data.dataset=ham10000", f"data.root={bundled_path('ham10000')}"]
SRC = Path(protoprune.__file__).parent


def split_csv(cfg, run_dir: Path) -> str:
    run_dir.mkdir(parents=True)
    prepare_data(cfg, run_dir)
    return (run_dir / "split.csv").read_text()


@pytest.mark.parametrize(
    "settings",
    [HAM, ["data.dataset=bundled", "data.max_per_split=40"]],
    ids=["ham10000-bundled-folder", "bundled-medmnist"],
)
def test_same_config_and_seed_give_the_same_split_file(tmp_path, settings):
    cfg = load_config(None, settings + ["seed=3"])
    a, b = split_csv(cfg, tmp_path / "a"), split_csv(cfg, tmp_path / "b")
    assert a == b
    table = pd.read_csv(tmp_path / "a" / "split.csv")
    assert set(table["split"]) == {"train", "val", "test"} and table["image_id"].is_unique


def test_another_seed_gives_another_ham10000_split_that_stays_lesion_wise(tmp_path):
    tables = {
        seed: pd.read_csv(
            io.StringIO(split_csv(load_config(None, HAM + [f"seed={seed}"]), tmp_path / str(seed)))
        )
        for seed in (0, 1)
    }
    assert not tables[0][["image_id", "split"]].equals(tables[1][["image_id", "split"]])
    meta = pd.read_csv(bundled_path("ham10000", "HAM10000_metadata.csv")).set_index("image_id")
    for table in tables.values():  # the seed changes the split, never its lesion-wise rule
        lesions = table.assign(lesion=meta.loc[table["image_id"], "lesion_id"].to_numpy())
        assert (lesions.groupby("lesion")["split"].nunique() == 1).all()


def test_split_file_reproduces_a_split_under_another_seed(tmp_path):
    first = split_csv(load_config(None, HAM + ["seed=0"]), tmp_path / "a")
    again = load_config(None, HAM + ["seed=5", f"data.split_file={tmp_path / 'a' / 'split.csv'}"])
    assert split_csv(again, tmp_path / "b") == first


def test_same_seed_gives_identical_cpu_metrics_and_weights(tmp_path):
    overrides = tiny_overrides(
        **{"train.epochs": 1, "data.max_per_split": 40, "data.image_size": 16}
    )
    cfg = load_config(None, overrides)
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        run_training(cfg, run)
    a, b = (json.loads((r / "metrics.json").read_text()) for r in runs)
    for split in ("val", "test"):
        for key in (
            "confusion_matrix",
            "accuracy",
            "balanced_accuracy",
            "auroc_macro",
            "per_class",
        ):
            assert a[split][key] == b[split][key], (split, key)
    wa, wb = (load_checkpoint(r / "checkpoints" / "best.pt")["state_dict"] for r in runs)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (runs[0] / "split.csv").read_text() == (runs[1] / "split.csv").read_text()
    hist = [pd.read_csv(r / "history.csv")["train_loss"].to_numpy() for r in runs]
    np.testing.assert_array_equal(*hist)


# --- nothing loads pickled code ------------------------------------------------------------------


def _calls(tree: ast.AST, module: str, func: str):
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == func
        ):
            value = node.func.value
            if isinstance(value, ast.Name) and value.id == module:
                yield node


def test_every_torch_load_in_the_source_is_weights_only():
    """Scans the package source: each torch.load passes weights_only=True, each np.load
    allow_pickle=False, and nothing calls pickle.load(s) directly."""
    seen = 0
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for call in _calls(tree, "torch", "load"):
            seen += 1
            kw = {k.arg: k.value for k in call.keywords}
            assert (
                isinstance(kw.get("weights_only"), ast.Constant)
                and kw["weights_only"].value is True
            ), f"{path}:{call.lineno} torch.load without weights_only=True"
        for call in _calls(tree, "np", "load"):
            kw = {k.arg: k.value for k in call.keywords}
            assert (
                isinstance(kw.get("allow_pickle"), ast.Constant)
                and kw["allow_pickle"].value is False
            ), f"{path}:{call.lineno} np.load without allow_pickle=False"
        for name in ("load", "loads"):
            assert not list(_calls(tree, "pickle", name)), f"{path} calls pickle.{name}"
    assert seen >= 2  # checkpoints and backbone weights at least


class _Payload:
    """Unpickling this would run code: it creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_code_payload_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "payload-ran"
    torch.save(
        {"format_version": 1, "state_dict": {}, "extra": _Payload(marker)}, tmp_path / "evil.pt"
    )
    with pytest.raises(CheckpointError, match="cannot load checkpoint") as info:
        load_checkpoint(tmp_path / "evil.pt")
    assert "weights-only" in info.value.fix
    assert not marker.exists()


def test_backbone_weights_with_code_payload_are_not_run(tmp_path):
    from protoprune.models.backbones import build_classifier

    marker = tmp_path / "payload-ran"
    torch.save({"conv1.weight": _Payload(marker)}, tmp_path / "evil_weights.pt")
    with pytest.raises(Exception):  # noqa: B017 - whatever it raises, the payload must not run
        build_classifier("resnet18", 7, small_input=True, weights=tmp_path / "evil_weights.pt")
    assert not marker.exists()
