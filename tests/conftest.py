"""Shared fixtures: tiny real-data configs so the suite stays fast on 2 CPU cores."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from protoprune.config import RunConfig, load_config

# the README's command runs two pytest-xdist workers on 2 cores: one intra-op thread each (two
# each would oversubscribe the cores); a plain `pytest` uses both cores in one process
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


def tiny_overrides(**extra) -> list[str]:
    base = {
        "data.dataset": "bundled",
        "data.max_per_split": 70,
        "data.batch_size": 32,
        "train.epochs": 2,
        "train.progress": False,
        "train.device": "cpu",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def tiny_config() -> RunConfig:
    """ResNet18 (small-image variant) on 70 real bundled DermaMNIST images per split, 2 epochs."""
    return load_config(None, tiny_overrides())


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request) -> Iterator[Path]:
    """A folder shared by one test module and deleted when the module ends.

    Module fixtures train ResNet18s whose checkpoints weigh 45-135 MB each; kept for the whole
    session (pytest's default for tmp_path_factory) the suite needed 7 GB of disk and a CI machine
    ran out of space.
    """
    path = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _quick_onnx_export(request, monkeypatch) -> None:
    """torch's dynamo ONNX exporter takes 2-5 s a ResNet18 on 2 shared cores (the legacy one
    0.2-0.8 s): tests that only need an .onnx file use the legacy exporter (its graph is still run
    by onnxruntime against torch); tests/prune/test_onnx_export.py tests the dynamo path."""
    if request.module.__name__.endswith("test_onnx_export"):
        return
    from protoprune.prune import onnx_export

    monkeypatch.setattr(onnx_export, "EXPORTERS", ("legacy",))
