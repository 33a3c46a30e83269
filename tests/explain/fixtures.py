"""Shared fixtures for the explanation, prototype-pruning and report tests (CPU, seconds).

`identity_protopnet` builds a ProtoPNet whose latent map is the image itself (identity trunk and
add-on), so distances and boxes are known by construction. `trained_run` trains a real tiny
ProtoPNet once per test process on the bundled data and returns its run folder.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from protoprune.config import load_config
from protoprune.models.backbones import Features
from protoprune.protopnet.model import ProtoPNet


def identity_protopnet(prototypes: torch.Tensor, classes: list[int], num_classes: int) -> ProtoPNet:
    """A ProtoPNet on raw pixels: latent = image, prototypes given as (P, 3) colours."""
    model = ProtoPNet(
        Features(nn.Identity(), 3), num_classes, prototype_dim=3, prototype_classes=classes
    )
    model.add_on_layers = nn.Identity()
    with torch.no_grad():
        model.prototype_vectors.copy_(prototypes.view(len(classes), 3, 1, 1))
    return model.eval()


TINY_RUN = [
    "name=tiny-protopnet",
    "data.dataset=bundled",
    "data.max_per_split=60",
    "data.image_size=48",
    "model.small_input=false",
    "data.batch_size=32",
    "model.type=protopnet",
    "model.arch=resnet18",
    "protopnet.prototypes_per_class=2",
    "protopnet.prototype_dim=16",
    "protopnet.warm_epochs=1",
    "protopnet.joint_epochs=0",
    "protopnet.push_start=0",
    "protopnet.last_layer_iterations=2",
    "prune_prototypes.finetune_iterations=3",
    "train.progress=false",
    "train.device=cpu",
]


@functools.lru_cache(maxsize=1)
def trained_run() -> Path:
    """A trained, pushed tiny ProtoPNet run folder (trained once per process)."""
    from protoprune.train.run import run_training

    root = Path(tempfile.mkdtemp(prefix="protoprune-tiny-run-"))
    atexit.register(shutil.rmtree, root, True)
    run_training(load_config(None, TINY_RUN), root / "run")
    return root / "run"
