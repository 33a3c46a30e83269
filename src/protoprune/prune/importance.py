"""Filter-pruning criteria as torch-pruning `Importance`s: lrp, weight, grad, taylor.

Each criterion first scores every output channel of every prunable layer of the CURRENT model
(`prepare(model, reference)`, called again after each pruning step), then torch-pruning asks it for
one score per channel of each dependency group (`__call__(group)`). A group couples layers whose
channels must be removed together (e.g. all convs feeding one residual sum); as in torch-pruning's
own `GroupMagnitudeImportance`, the group score of a channel is the mean over the coupled layers.

Scores are normalised per layer before global ranking, as in the reference implementation of
Yeom et al. (2021): relevance and weight norms are divided by the layer's sum (for LRP this is
"relevance share of the layer"), gradient and Taylor scores by the layer's L2 norm (as Molchanov
et al. 2017). `normalize="none"` ranks raw scores.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from .. import distributed
from ..config import FilterPruningConfig
from ..errors import ProtopruneError
from ..progress import tqdm
from ..registry import Registry
from .relevance import (
    build_composite,
    classifier_head,
    filter_output_modules,
    gradient_batch,
    lrp_batch,
    prunable_modules,
)

Batch = tuple[torch.Tensor, torch.Tensor]

_OUT_FNS = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)


def _normalize(v: torch.Tensor, how: str) -> torch.Tensor:
    if how == "none":
        return v
    denom = v.sum() if how == "sum" else v.norm()
    return v / denom if denom > 0 else v


class FilterImportance(tp.importance.Importance):
    """Base: per-layer channel scores computed by `prepare`, reduced over torch-pruning groups."""

    name = "base"
    normalize = "sum"
    needs_data = True

    def __init__(self, ignored_layers: Sequence[nn.Module] = (), normalize: str | None = None):
        self.ignored_layers = list(ignored_layers)
        if normalize is not None:
            self.normalize = normalize
        self.scores: dict[nn.Module, torch.Tensor] = {}  # module -> raw score per output channel

    def layers(self, model: nn.Module) -> dict[str, nn.Module]:
        ignored = self.ignored_layers or [classifier_head(model)]
        return prunable_modules(model, ignored)

    def prepare(
        self, model: nn.Module, reference: Sequence[Batch], progress: bool = False
    ) -> dict[str, torch.Tensor]:
        """Score every output channel of every prunable layer of `model` (its current shape)."""
        layers = self.layers(model)
        raw = self._compute(model, layers, reference, progress)
        # under torchrun rank 0's scores decide for all, so every rank prunes the same filters
        self.scores = {
            layers[n]: distributed.broadcast_tensor(s.detach().float().cpu()) for n, s in raw.items()
        }
        return raw

    @abc.abstractmethod
    def _compute(
        self,
        model: nn.Module,
        layers: dict[str, nn.Module],
        reference: Sequence[Batch],
        progress: bool,
    ) -> dict[str, torch.Tensor]:
        """Raw per-channel scores of every prunable layer, keyed by layer name."""

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        imps, idxs_list = [], []
        for i, (dep, idxs) in enumerate(group):
            layer, fn = dep.target.module, dep.handler
            if fn not in _OUT_FNS or layer not in self.scores:
                continue
            score = self.scores[layer]
            if score.numel() != layer.weight.shape[0]:
                raise ProtopruneError(
                    f"{self.name} scores of a layer with {score.numel()} channels used on one with "
                    f"{layer.weight.shape[0]}: the scores are stale",
                    "call importance.prepare(model, reference) on the current model before each pruning step",
                )
            imps.append(_normalize(score, self.normalize)[idxs])
            idxs_list.append(group[i].root_idxs)
        if not imps:
            return None  # tp skips groups without a scored layer
        n = len(group[0][1])
        total = torch.zeros(n)
        count = torch.zeros(n)
        for imp, root in zip(imps, idxs_list):
            root_t = torch.as_tensor(root, dtype=torch.long)
            total.scatter_add_(0, root_t, imp)
            count.scatter_add_(0, root_t, torch.ones_like(imp))
        return total / count.clamp_min(1)


class WeightImportance(FilterImportance):
    """L1 (or L2) norm of each filter's weights (Li et al. 2017): the data-free baseline."""

    name = "weight"
    normalize = "sum"
    needs_data = False

    def __init__(self, norm: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.p = norm

    def _compute(self, model, layers, reference, progress):
        return {n: m.weight.detach().flatten(1).norm(p=self.p, dim=1) for n, m in layers.items()}


class _ActivationImportance(FilterImportance):
    """Shared loop for data-driven criteria over the reference set."""

    def _compute(self, model, layers, reference, progress):
        device = next(model.parameters()).device
        outputs = filter_output_modules(model, layers)
        totals: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        for x, y in tqdm(reference, desc=f"{self.name} scores", leave=False, disable=not progress):
            batch = self._batch(model, x.to(device), y.to(device), outputs)
            for name, (value, count) in batch.items():
                totals[name] = totals[name] + value if name in totals else value
                counts[name] = counts.get(name, 0) + count
        return self._finish(totals, counts)

    def _finish(self, totals, counts):
        return {n: totals[n] / max(counts[n], 1) for n in totals}


class GradImportance(_ActivationImportance):
    """Mean |dL/da| over each filter's output map and the reference set (L = CE, true class)."""

    name = "grad"
    normalize = "l2"

    def _batch(self, model, x, y, outputs):
        g, _, n = gradient_batch(model, x, y, outputs)
        return {k: (g[k], n[k]) for k in g}


class TaylorImportance(_ActivationImportance):
    """Mean |a * dL/da| over each filter's output map and the reference set (Molchanov et al.)."""

    name = "taylor"
    normalize = "l2"

    def _batch(self, model, x, y, outputs):
        _, t, n = gradient_batch(model, x, y, outputs)
        return {k: (t[k], n[k]) for k in t}


class LRPImportance(_ActivationImportance):
    """Sum of |R| over each filter's output map, summed over the reference set (Yeom et al. 2021).

    R is the LRP relevance of the true class's logit from a zennit composite (default
    epsilon_plus_flat: epsilon for dense layers, z+ = alpha1-beta0 for convolutions, flat for the
    first layer) on the canonized current model.
    """

    name = "lrp"
    normalize = "sum"

    def __init__(self, composite: str = "epsilon_plus_flat", **kwargs):
        super().__init__(**kwargs)
        self.composite = composite

    def _compute(self, model, layers, reference, progress):
        build_composite(self.composite, model)  # fail early on an unknown name
        return super()._compute(model, layers, reference, progress)

    def _batch(self, model, x, y, outputs):
        r = lrp_batch(model, x, y, outputs, self.composite)
        return {k: (v.sum(0), 1) for k, v in r.absolute.items()}

    def _finish(self, totals, counts):
        return totals  # a sum over the reference set, as in the paper


CRITERIA: Registry[type[FilterImportance]] = Registry("pruning criterion")
CRITERIA.register("lrp", LRPImportance)
CRITERIA.register("weight", WeightImportance)
CRITERIA.register("grad", GradImportance)
CRITERIA.register("taylor", TaylorImportance)


def build_importance(
    cfg: FilterPruningConfig, method: str | None = None, **kwargs
) -> FilterImportance:
    """The configured criterion (`method` overrides cfg.method)."""
    method = method or cfg.method
    cls = CRITERIA.get(method)
    if cls is LRPImportance:
        return cls(composite=cfg.lrp_composite, **kwargs)
    if cls is WeightImportance:
        return cls(norm=cfg.norm, **kwargs)
    return cls(**kwargs)
