"""The scripts in examples/ run as a user runs them, on a tiny ImageFolder of bundled images."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from protoprune.data.registry import bundled_path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagefolder")
    with np.load(bundled_path("dermamnist_subset.npz")) as npz:
        images, labels = npz["test_images"][:24], npz["test_labels"][:24].ravel()
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / ("nevus" if label == 5 else "other")
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    return root


def _run(script: str, *args: str) -> str:
    # the script gets this process's thread count (one under the README's two xdist workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True,
                          text=True, timeout=600, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_prune_a_torchvision_model_by_lrp_with_torch_prunings_pruner(image_folder) -> None:
    out = _run("prune_torchvision_lrp.py", "--data", str(image_folder), "--arch", "resnet18",
               "--weights", "none", "--size", "32", "--steps", "2")  # fmt: skip
    assert "accuracy" in out and "LRP (protoprune)" in out and "magnitude (torch-pruning)" in out
    macs = [float(line.split("MMACs ")[1].split()[0]) for line in out.splitlines() if "MMACs" in line]
    assert len(macs) == 2 and all(m < 37.2 for m in macs)  # both pruned below the 37.18 MMACs


def test_a_pruning_curve_of_a_user_model(image_folder) -> None:
    out = _run("pruning_curve.py", "--data", str(image_folder), "--size", "32", "--ratios", "0,0.2")
    assert "lrp" in out and "random" in out and "weight" in out and "MMACs" in out
    assert "LRP - random" in out and "ci_low" in out  # the paired comparison over 3 draws


def test_a_protopnet_trained_explained_and_reported_from_python(image_folder, tmp_path) -> None:
    out = _run("protopnet_from_python.py", "--data", str(image_folder), "--out", str(tmp_path / "run"),
               "--size", "32", "--set", "protopnet.prototypes_per_class=2",
               "--set", "protopnet.prototype_dim=16", "--set", "protopnet.warm_epochs=1",
               "--set", "protopnet.joint_epochs=1", "--set", "protopnet.push_start=0",
               "--set", "protopnet.last_layer_iterations=2", "--set", "train.progress=false",
               "--set", "data.batch_size=8", "--set", "model.small_input=false")  # fmt: skip
    assert "test balanced accuracy" in out and "predicted" in out
    assert (tmp_path / "run" / "report" / "index.html").is_file()
    assert any((tmp_path / "run" / "mine").glob("*.png"))


def test_a_protopnet_from_a_torch_dataset(tmp_path) -> None:
    out = _run("protopnet_from_python.py", "--limit", "140", "--out", str(tmp_path / "run"),
               "--size", "32", "--set", "protopnet.prototypes_per_class=1",
               "--set", "protopnet.prototype_dim=16", "--set", "protopnet.warm_epochs=1",
               "--set", "protopnet.joint_epochs=0", "--set", "protopnet.push_start=0",
               "--set", "protopnet.last_layer_iterations=2", "--set", "train.progress=false",
               "--set", "data.batch_size=16", "--set", "model.small_input=false")  # fmt: skip
    images = tmp_path / "run-images"
    assert sorted(p.name for p in (images / "train").iterdir()) == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert len(list(images.rglob("*.png"))) == 3 * 140  # every item of the three Datasets, once
    assert "test balanced accuracy" in out and (tmp_path / "run" / "report" / "index.html").is_file()
