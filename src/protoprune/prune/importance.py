"""Filter-pruning criteria as torch-pruning `Importance`s: lrp, weight, grad, taylor, random.

Each criterion first scores every output channel of every prunable layer of the CURRENT model
(`prepare(model, reference)`, called again after each pruning step), then torch-pruning asks it for
one score per channel of each dependency group (`__call__(group)`). A group couples layers whose
channels must be removed together (e.g. all convs feeding one residual sum); the group score of a
channel is the SUM over the coupled layers (`group_reduction="sum"`): removing the channel removes
what flows through all of them. (torch-pruning's own importances average; `"mean"` does that.)

By default every criterion computes what the reference implementation of Yeom et al. (2021),
github seulkiyeom/LRP_pruning (`modules/filterprune.py`), computes, and ranks the raw scores of all
layers together (its default; `normalize="reference"` reproduces its `--norm`: per-layer sum for
lrp and weight, L2 for grad and taylor). docs/pruning_criteria.md lists every departure.
"""

from __future__ import annotations

import abc
import zlib
from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from .. import distributed
from ..config import FilterPruningConfig
from ..errors import ConfigError, ProtopruneError
from ..names import CRITERION_NAMES
from ..progress import tqdm
from ..registry import Registry
from .relevance import (
    DEFAULT_BOUNDS,
    DEFAULT_COMPOSITE,
    batchnorm_pairs,
    build_composite,
    filter_output_modules,
    gradient_batch,
    lrp_batch,
    never_pruned,
    prunable_modules,
)

Batch = tuple[torch.Tensor, torch.Tensor]

_OUT_FNS = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
NORMALIZATIONS = ("none", "sum", "l2", "reference")
GROUP_REDUCTIONS = ("sum", "mean")


def normalize_layer(v: torch.Tensor, how: str) -> torch.Tensor:
    """One layer's scores divided by their sum or L2 norm (the reference's `--norm`), or as is."""
    if how == "none":
        return v
    denom = v.sum() if how == "sum" else v.norm()
    return v / denom if denom > 0 else v


class FilterImportance(tp.importance.Importance):
    """Base: per-layer channel scores computed by `prepare`, reduced over torch-pruning groups."""

    name = "base"
    reference_norm = "none"  # what the reference's --norm applies to this criterion
    needs_data = True

    def __init__(
        self,
        ignored_layers: Sequence[nn.Module] = (),
        normalize: str = "none",
        group_reduction: str = "sum",
    ):
        if normalize not in NORMALIZATIONS:
            raise ConfigError(
                f"unknown score normalisation {normalize!r}",
                f"set prune_filters.normalize to one of: {', '.join(NORMALIZATIONS)}",
            )
        if group_reduction not in GROUP_REDUCTIONS:
            raise ConfigError(
                f"unknown group reduction {group_reduction!r}",
                f"set prune_filters.group_reduction to one of: {', '.join(GROUP_REDUCTIONS)}",
            )
        self.ignored_layers = list(ignored_layers)
        self.normalize = self.reference_norm if normalize == "reference" else normalize
        self.group_reduction = group_reduction
        self.scores: dict[nn.Module, torch.Tensor] = {}  # module -> raw score per output channel
        self.names: dict[nn.Module, str] = {}  # module -> its name in the scored model

    def layers(self, model: nn.Module) -> dict[str, nn.Module]:
        return prunable_modules(model, self.ignored_layers or never_pruned(model))

    def prepare(
        self, model: nn.Module, reference: Sequence[Batch], progress: bool = False
    ) -> dict[str, torch.Tensor]:
        """Score every output channel of every prunable layer of `model` (its current shape)."""
        layers = self.layers(model)
        raw = self._compute(model, layers, reference, progress)
        # under torchrun rank 0's scores decide for all, so every rank prunes the same filters
        self.bind(model, {n: distributed.broadcast_tensor(s.detach().float().cpu()) for n, s in raw.items()})
        return raw

    def bind(self, model: nn.Module, raw: dict[str, torch.Tensor]) -> None:
        """Attach scores keyed by layer name to `model`'s layers (e.g. a copy of the scored model)."""
        named = dict(model.named_modules())
        self.scores = {named[n]: s.detach().float().cpu() for n, s in raw.items()}
        self.names = {named[n]: n for n in raw}

    @abc.abstractmethod
    def _compute(
        self,
        model: nn.Module,
        layers: dict[str, nn.Module],
        reference: Sequence[Batch],
        progress: bool,
    ) -> dict[str, torch.Tensor]:
        """Raw per-channel scores of every prunable layer, keyed by layer name."""

    def _layer_scores(self, layer: nn.Module) -> torch.Tensor:
        score = self.scores[layer]
        if score.numel() != layer.weight.shape[0]:
            raise ProtopruneError(
                f"{self.name} scores of a layer with {score.numel()} channels used on one with "
                f"{layer.weight.shape[0]}: the scores are stale",
                "call importance.prepare(model, reference) on the current model before each pruning step",
            )
        return normalize_layer(score, self.normalize)

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        n = len(group[0][1])
        total, count = torch.zeros(n), torch.zeros(n)
        for i, (dep, idxs) in enumerate(group):
            layer, fn = dep.target.module, dep.handler
            if fn not in _OUT_FNS or layer not in self.scores:
                continue
            imp = self._layer_scores(layer)[idxs]
            root = torch.as_tensor(group[i].root_idxs, dtype=torch.long)
            total.scatter_add_(0, root, imp)
            count.scatter_add_(0, root, torch.ones_like(imp))
        if not count.any():
            return None  # tp skips groups without a scored layer
        return total if self.group_reduction == "sum" else total / count.clamp_min(1)

    @classmethod
    def from_config(cls, cfg: FilterPruningConfig, *, bounds: tuple[float, float] = DEFAULT_BOUNDS,
                    seed: int = 0, **kwargs) -> FilterImportance:  # fmt: skip
        """The criterion with the `prune_filters` settings that apply to it; `kwargs` (e.g.
        `ignored_layers`) pass through. Subclasses add their own settings."""
        return cls(**cls._common(cfg, kwargs))

    @staticmethod
    def _common(cfg: FilterPruningConfig, kwargs: dict) -> dict:
        return {"normalize": cfg.normalize, "group_reduction": cfg.group_reduction, **kwargs}


class WeightImportance(FilterImportance):
    """L1 (or L2) norm of each filter with its BatchNorm fused in (Li et al. 2017).

    The reference reads the weight of its LRP wrapper's conv, into which the BatchNorm after it is
    fused (`lrp_general6.py: bnafterconv_overwrite_intoconv`: w * gamma / sqrt(var + eps)); a raw
    conv weight before a BatchNorm says little, since the BN rescales every channel.
    `fuse_batchnorm=False` scores the raw weights.
    """

    name = "weight"
    reference_norm = "sum"
    needs_data = False

    @classmethod
    def from_config(cls, cfg, *, bounds=DEFAULT_BOUNDS, seed=0, **kwargs):
        return cls(norm=cfg.norm, fuse_batchnorm=cfg.weight_fuse_batchnorm, **cls._common(cfg, kwargs))

    def __init__(self, norm: int = 1, fuse_batchnorm: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.p = norm
        self.fuse_batchnorm = fuse_batchnorm

    def _compute(self, model, layers, reference, progress):
        named = dict(model.named_modules())
        scale = {}
        if self.fuse_batchnorm:
            for conv, bn_name in batchnorm_pairs(model):
                bn = named[bn_name]
                scale[conv] = (bn.weight / (bn.running_var + bn.eps).sqrt()).detach().abs()
        out = {}
        for n, m in layers.items():
            norm = m.weight.detach().flatten(1).norm(p=self.p, dim=1)
            out[n] = norm * scale[n] if n in scale else norm
        return out


class _ActivationImportance(FilterImportance):
    """Shared loop for data-driven criteria over the reference set: per-batch values summed."""

    def _outputs(self, model, layers):
        return filter_output_modules(model, layers)

    def _compute(self, model, layers, reference, progress):
        device = next(model.parameters()).device
        outputs = self._outputs(model, layers)
        totals: dict[str, torch.Tensor] = {}
        for x, y in tqdm(reference, desc=f"{self.name} scores", leave=False, disable=not progress):
            for name, value in self._batch(model, x.to(device), y.to(device), outputs).items():
                totals[name] = totals[name] + value if name in totals else value
        return self._finish(totals)

    def _finish(self, totals):
        return totals


class _GradientImportance(_ActivationImportance):
    """grad and taylor as the reference: |sum over batches of mean(g) (or mean(a g))| per channel,
    read at each layer's own output (a conv's, before its BatchNorm)."""

    reference_norm = "l2"
    product = False

    @classmethod
    def from_config(cls, cfg, *, bounds=DEFAULT_BOUNDS, seed=0, **kwargs):
        return cls(batchnorm=cfg.score_batchnorm, **cls._common(cfg, kwargs))

    def __init__(self, batchnorm: str = "eval", **kwargs):
        super().__init__(**kwargs)
        self.batchnorm = batchnorm

    def _outputs(self, model, layers):
        return layers

    def _batch(self, model, x, y, outputs):
        g, ag = gradient_batch(model, x, y, outputs, self.batchnorm)
        return ag if self.product else g

    def _finish(self, totals):
        return {n: v.abs() for n, v in totals.items()}


class GradImportance(_GradientImportance):
    """|mean dL/da| over each filter's output map, summed over the reference batches (Sun et al.
    2017; L = CE of the true class)."""

    name = "grad"


class TaylorImportance(_GradientImportance):
    """|mean a * dL/da| over each filter's output map, summed over the batches (Molchanov et al.
    2017)."""

    name = "taylor"
    product = True


class LRPImportance(_ActivationImportance):
    """Sum of |R| over each filter's output map and the reference set (Yeom et al. 2021).

    R is the LRP relevance of the true class (one-hot by default, as the reference; `output="logit"`
    starts from the logit) from a zennit composite (default `yeom2021`, the reference's rules: see
    `relevance`) on the canonized current model, read at the BatchNorm-fused conv's output.
    `batchnorm="train"` runs the forward pass as the reference's LRP wrapper does (see
    `relevance.lrp_batch`); the default scores with the running statistics.
    """

    name = "lrp"
    reference_norm = "sum"

    @classmethod
    def from_config(cls, cfg, *, bounds=DEFAULT_BOUNDS, seed=0, **kwargs):
        return cls(composite=cfg.lrp_composite, output=cfg.lrp_output, bounds=bounds,
                   batchnorm=cfg.lrp_batchnorm, **cls._common(cfg, kwargs))  # fmt: skip

    def __init__(
        self,
        composite: str = DEFAULT_COMPOSITE,
        output: str = "onehot",
        bounds: tuple[float, float] = DEFAULT_BOUNDS,
        batchnorm: str = "eval",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.composite = composite
        self.output = output
        self.bounds = bounds
        self.batchnorm = batchnorm

    def _compute(self, model, layers, reference, progress):
        self._built = build_composite(self.composite, model, self.bounds)  # fails early on a bad name
        return super()._compute(model, layers, reference, progress)

    def _batch(self, model, x, y, outputs):
        r = lrp_batch(model, x, y, outputs, self._built, self.output, input_relevance=False,
                      batchnorm=self.batchnorm)
        return {k: v.sum(0) for k, v in r.absolute.items()}


class RandomImportance(FilterImportance):
    """Seeded uniform scores, one per group channel: the control every pruning comparison needs.

    Every channel of a dependency group gets one uniform draw, whatever the number of coupled
    layers, so every filter is equally likely to be removed (as torch-pruning's own
    `RandomImportance`). Scores drawn per layer and reduced over a group would not be: a sum of k
    uniforms ranks a residual stream shared by k convs above a block-internal conv, so the
    blocks' first convs went first (90 % of the removed filters of a ResNet18 at 30 %, holding
    40 % of its filters). Each `prepare` starts a new draw; a group's draw depends on the seed,
    the draw's number and its root layer's name, not on the order groups are asked in, so a
    schedule is reproducible for a seed.
    """

    name = "random"
    needs_data = False

    @classmethod
    def from_config(cls, cfg, *, bounds=DEFAULT_BOUNDS, seed=0, **kwargs):
        return cls(seed=seed, **cls._common(cfg, kwargs))

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.seed = int(seed)
        self.calls = 0

    def _compute(self, model, layers, reference, progress):
        self.calls += 1
        return {n: self._uniform(n, m.weight.shape[0]) for n, m in layers.items()}

    def _uniform(self, name: str, n: int) -> torch.Tensor:
        key = zlib.crc32(f"{self.seed}/{self.calls}/{name}".encode())
        return torch.rand(n, generator=torch.Generator().manual_seed(key))

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        for dep, _ in group:  # the first scored layer whose outputs the group removes names it
            layer = dep.target.module
            if dep.handler in _OUT_FNS and layer in self.names:
                return self._uniform(self.names[layer], len(group[0][1]))
        return None


CRITERIA: Registry[type[FilterImportance]] = Registry("pruning criterion", CRITERION_NAMES)
"""The criteria by the names configs and the command line use (`lrp`, `weight`, `grad`,
`taylor`, `random`): `CRITERIA.get("lrp")` is `LRPImportance`."""
CRITERIA.register("lrp", LRPImportance)
CRITERIA.register("weight", WeightImportance)
CRITERIA.register("grad", GradImportance)
CRITERIA.register("taylor", TaylorImportance)
CRITERIA.register("random", RandomImportance)


def build_importance(
    cfg: FilterPruningConfig,
    method: str | None = None,
    *,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
    seed: int = 0,
    **kwargs,
) -> FilterImportance:
    """The configured criterion (`method` overrides cfg.method); `bounds`: the normalised input
    range (LRP's box rule), `seed`: the random criterion's seed. Each criterion reads its own
    settings (`from_config`)."""
    return CRITERIA.get(method or cfg.method).from_config(cfg, bounds=bounds, seed=seed, **kwargs)
