"""Filter pruning of a ProtoPNet's trunk: an interpretable *and* compressed model.

The same iterative schedule as for a classifier (`prune.filters.run_schedule`), with three
differences. The add-on and the last layer are never pruned: the prototype depth D stays, and the
add-on's input channels follow the trunk's last filters through torch-pruning's dependency graph.
The scores explain the ProtoPNet's own decision (the logit of the true class); zennit's rules act
on the trunk and add-on layers, and the relevance crosses the prototype layer (a `PrototypeLayer`
module) by prototypical relevance propagation (`lrp.prp`, Gautam et al. 2022), the rule the PRP
heatmaps use: the relevance entering the add-on and the trunk is LRP and conserved (it sums to the
explained logit; `tests/prune/test_prp.py`). After each step
the model is repaired as a ProtoPNet: `epochs` joint epochs, a push (the prototypes become real
training patches of the pruned trunk again) and the last-layer stage on the push's similarity
vectors.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from .. import distributed
from ..config import RunConfig
from .model import ProtoPNet

log = logging.getLogger(__name__)


def protopnet_ignored_layers(model: ProtoPNet) -> list[nn.Module]:
    """Layers whose outputs are never pruned: the add-on (its output is the prototype depth) and
    the last layer (class logits)."""
    return [*model.add_on_layers.modules(), model.last_layer]


class RetentionTracker:
    """The unpruned ProtoPNet's explanations on fixed test images, and each repaired step's
    retention of them (`explain.retention`): the sources come from the pushes, so the unpruned
    model is re-pushed once (on a copy: its prototypes are already patches, so it stays as it is)."""

    def __init__(self, model: ProtoPNet, loaders: Any, images: int, seed: int, device: torch.device,
                 bounds: tuple[float, float]):  # fmt: skip
        import copy

        from ..explain.retention import fixed_images, fixed_masks, lesion_localisation, snapshot
        from .push import push_prototypes

        self.x = fixed_images(loaders.test.dataset, images, seed).to(device)
        self.masks = fixed_masks(loaders.test.dataset, images, seed, tuple(self.x.shape[-2:]))
        self.bounds = bounds
        pushed = push_prototypes(copy.deepcopy(model), loaders.push, device, loaders.class_names,
                                 progress=False)  # fmt: skip
        self.base = snapshot(model, pushed.prototypes, self.x, bounds=bounds)
        self.base_lesion = {} if self.masks is None else lesion_localisation(self.base.heatmaps, self.masks)

    def measure(self, model: ProtoPNet, records: list[dict[str, Any]]) -> dict[str, float]:
        """`retention_<measure>` columns of a repaired step; with lesion masks also
        `localisation_<measure>` (this step), `..._unpruned` and `..._chance`."""
        from ..explain.retention import lesion_localisation, retention, snapshot

        now = snapshot(model, records, self.x, self.base.heat_prototype, bounds=self.bounds)
        row = {f"retention_{k}": v for k, v in retention(self.base, now).items()}
        if self.masks is not None:
            lesion = lesion_localisation(now.heatmaps, self.masks)
            for key, value in self.base_lesion.items():
                if key.endswith("_chance"):
                    row[f"localisation_{key}"] = value
                else:
                    row[f"localisation_{key}"] = lesion[key]
                    row[f"localisation_{key}_unpruned"] = value
        return row


def protopnet_repair(
    model: ProtoPNet, loaders: Any, cfg: RunConfig, epochs: int, device: torch.device
) -> dict[str, Any]:
    """Joint epochs, push and last-layer stage on a (pruned) ProtoPNet; returns the push summary
    with its per-prototype records (`prototypes`: each source image and latent cell).

    Fresh optimisers each call: the pruned parameters are new tensors.
    """
    from ..train import precision
    from .push import push_prototypes
    from .training import _DetailsForward, build_optimizers, refit_last_layer, train_epoch

    p = cfg.protopnet
    weights = loaders.loss_weights.to(device) if loaders.loss_weights is not None else None
    progress = cfg.train.progress and distributed.is_main()
    if epochs > 0:
        joint = build_optimizers(model, p)["joint"]
        model.set_trainable(features=True, add_on=True, prototypes=True, last_layer=False)
        forward = None
        amp, scaler = precision.use_amp(cfg.train, device), precision.grad_scaler(cfg.train, device)
        if distributed.is_distributed():
            forward = distributed.wrap_model(_DetailsForward(model), device, cfg.train.sync_batchnorm)
        for epoch in range(epochs):
            distributed.set_epoch(loaders.train, epoch)
            terms = train_epoch(model, loaders.train, joint, p, device, weights, scaler,
                                progress, f"joint {epoch + 1}/{epochs}", forward, amp)  # fmt: skip
            log.info("repair joint epoch %d: loss %.4f, train accuracy %.4f", epoch + 1,
                     float(terms["loss"]), float(terms["train_accuracy"]))  # fmt: skip
    result = push_prototypes(model, loaders.push, device, loaders.class_names, progress=progress)
    refit_last_layer(model, result.similarities, result.targets, loaders, cfg,
                     p.last_layer_iterations, progress)  # fmt: skip
    model.eval()
    log.info("repair push: push-set accuracy %.4f -> %.4f", result.accuracy_before, result.accuracy_after)
    return {**result.summary(), "prototypes": result.prototypes}
