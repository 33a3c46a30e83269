"""Physical filter removal with torch-pruning's dependency graph.

Filters are really removed (smaller tensors, fewer MACs, lower latency), never masked. The
dependency graph couples what must shrink together: the BatchNorm after a conv, the next layer's
input channels, all convs feeding one residual sum (ResNet), the slices of a concatenation
(DenseNet) and the flattened input of the first Linear (VGG). The final Linear's outputs (the
classes) are never pruned.

Scopes:
- ``global``: one ranking of all filters of the network; layers lose different fractions
  (torch-pruning's ``global_pruning=True``). Default, as in Yeom et al. (2021).
- ``layer``: every layer loses the same fraction of its filters, ranked within the layer.

Ratios are fractions of the ORIGINAL filters when the pruner was built, so an iterative schedule
0.15, 0.30, ... removes 15 % of the original filters a step. A filter is one output channel of a
prunable conv or linear layer, as the reference implementation counts (`total_num_filters`); a
group channel shared by k coupled convs (a residual stream) removes k filters at once.
``ratio_unit="channels"`` counts group channels instead (each shared channel once).
With ``round_to`` > 1 every pruned layer keeps a multiple of that many filters, so the reached
ratio differs from the target by a few channels a layer; tables report the reached ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from ..errors import ConfigError
from .importance import FilterImportance
from .relevance import never_pruned, prunable_modules

SCOPES = ("global", "layer")
RATIO_UNITS = ("filters", "channels")
_OUT_FNS = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)


class FilterPruner:
    """Iterative filter pruning over torch-pruning dependency groups, to cumulative ratios.

    `step()` prunes to the next ratio of `ratios` using the importance's current scores (call
    `importance.prepare(model, ...)` first). A "channel" is one channel of a dependency group, so a
    channel shared by several convs through a residual sum counts once (as in torch-pruning).

    The ranking and cut are done here over `DependencyGraph` groups rather than with
    `tp.pruner.BasePruner(global_pruning=True)`: BasePruner's global threshold may select every
    channel of a layer and has no per-layer floor inside a step, so capping afterwards undershoots
    the schedule. Here the cut takes the lowest-scored channels while no layer falls below
    `(1 - max_layer_ratio)` of its original width, which hits the target count exactly.
    """

    def __init__(
        self,
        model: nn.Module,
        importance: FilterImportance,
        ratios: Sequence[float],
        example_inputs: torch.Tensor,
        scope: str = "global",
        ignored_layers: Sequence[nn.Module] | None = None,
        max_layer_ratio: float = 0.9,
        unwrapped_parameters: Sequence[tuple[nn.Parameter, int]] | None = None,
        round_to: int = 1,
        ratio_unit: str = "filters",
    ):
        if ratio_unit not in RATIO_UNITS:
            raise ConfigError(
                f"ratio unit {ratio_unit!r} is unknown", f"use one of: {', '.join(RATIO_UNITS)}"
            )
        if int(round_to) < 1:
            raise ConfigError(f"round_to must be >= 1, got {round_to}", "use 1 (off), 8 or 16")
        if scope not in SCOPES:
            raise ConfigError(
                f"pruning scope {scope!r} is unknown", f"use one of: {', '.join(SCOPES)}"
            )
        ratios = [float(r) for r in ratios]
        if any(not 0 <= r < 1 for r in ratios) or any(b < a for a, b in zip(ratios, ratios[1:])):
            raise ConfigError(
                f"pruning ratios {ratios} must rise within [0, 1)", "e.g. 0.15, 0.3, 0.45, 0.6"
            )
        self.model = model
        self.importance = importance
        self.ratios = ratios
        self.scope = scope
        self.ignored_layers = (
            list(ignored_layers) if ignored_layers is not None else never_pruned(model)
        )
        self.max_layer_ratio = max_layer_ratio
        self.round_to = int(round_to)
        self.ratio_unit = ratio_unit
        self.steps_done = 0
        self.dg = tp.DependencyGraph().build_dependency(
            model, example_inputs=example_inputs, unwrapped_parameters=unwrapped_parameters
        )
        self.initial = {root: n for root, n in self._roots()}
        self.initial_channels = sum(self.initial.values())
        self.initial_filters = self.filters()

    def _groups(self):
        ignored = [m for layer in self.ignored_layers for m in layer.modules()]
        return self.dg.get_all_groups(
            ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]
        )

    def _roots(self):
        for group in self._groups():
            root = group[0].dep.target.module
            yield root, self.dg.get_out_channels(root)

    def channels(self) -> int:
        """Current channels over all prunable groups."""
        return sum(n for _, n in self._roots())

    def filters(self) -> int:
        """Current filters: output channels of the prunable conv / linear layers."""
        return count_filters(self.model, self.ignored_layers)

    def _filters_per_channel(self, group) -> int:
        """Filters one channel of `group` carries: its coupled prunable layers' outputs."""
        prunable = {id(m) for m in prunable_modules(self.model, self.ignored_layers).values()}
        layers = {id(d.target.module) for d, _ in group if d.handler in _OUT_FNS}
        return max(1, len(layers & prunable))

    def pruned_channel_fraction(self) -> float:
        """Fraction of the original group channels removed so far."""
        return 1 - self.channels() / self.initial_channels

    def pruned_filter_fraction(self) -> float:
        """Fraction of the original filters removed so far."""
        return 1 - self.filters() / self.initial_filters

    def pruned_fraction(self) -> float:
        """Fraction removed so far, in the unit the ratios count (`ratio_unit`)."""
        if self.ratio_unit == "channels":
            return self.pruned_channel_fraction()
        return self.pruned_filter_fraction()

    def step(self) -> int:
        """Prune to the next ratio; returns the number of channels removed."""
        if self.steps_done >= len(self.ratios):
            raise ConfigError(
                "the pruning schedule is finished", "build a new FilterPruner for more steps"
            )
        plan = self.plan(self.ratios[self.steps_done])
        self.steps_done += 1
        removed = 0
        for (root, fn), idxs in plan.items():
            group = self.dg.get_pruning_group(root, fn, sorted(idxs))
            if self.dg.check_pruning_group(group):
                group.prune()
                removed += len(idxs)
        return removed

    @torch.no_grad()
    def plan(self, ratio: float) -> dict[tuple[nn.Module, object], list[int]]:
        """Which channels of which group to remove to reach `ratio` of the original channels."""
        candidates = []  # (score, key, channel) for every removable channel
        per_group: dict[tuple[nn.Module, object], list[tuple[float, int]]] = {}
        weight: dict[tuple[nn.Module, object], int] = {}  # filters a channel of the group carries
        for group in self._groups():
            dep = group[0].dep
            root, fn = dep.target.module, dep.handler
            current = self.dg.get_out_channels(root)
            initial = self.initial.get(root, current)
            keep = max(1, math.ceil(initial * (1 - self.max_layer_ratio)))
            scores = self.importance(group)
            if scores is None or current <= keep:
                continue
            ranked = sorted((float(s), i) for i, s in enumerate(scores.tolist()))[: current - keep]
            per_group[(root, fn)] = ranked
            weight[(root, fn)] = self._filters_per_channel(group)
            if self.scope == "layer":
                n_cut = current - round(initial * (1 - ratio))
                candidates.extend((s, (root, fn), i) for s, i in ranked[: max(n_cut, 0)])
        if self.scope == "global":
            pool = sorted(
                ((s, key, i) for key, ranked in per_group.items() for s, i in ranked),
                key=lambda c: c[0],
            )
            candidates = self._lowest(pool, ratio, weight)
        plan: dict[tuple[nn.Module, object], list[int]] = {}
        for _, key, i in candidates:
            plan.setdefault(key, []).append(i)
        if self.round_to > 1:
            plan = self._round_widths(plan, per_group)
        return plan

    def _lowest(self, pool, ratio, weight):
        """The lowest-scored channels of `pool` (sorted) that reach `ratio` in the ratio unit."""
        if self.ratio_unit == "channels":
            n_cut = self.channels() - round(self.initial_channels * (1 - ratio))
            return pool[: max(n_cut, 0)]
        to_remove = self.filters() - round(self.initial_filters * (1 - ratio))
        chosen, removed = [], 0
        for c in pool:
            if removed >= to_remove:
                break
            chosen.append(c)
            removed += weight[c[1]]
        return chosen

    def _round_widths(self, plan, per_group):
        """Move each pruned group's remaining width to the nearest multiple of `round_to`.

        CPU and GPU convolution kernels work on blocks of 8 or 16 channels, so a width of 97 runs
        about as slowly as 112; rounding makes the latency follow the MACs. torch-pruning's
        `round_to` does this inside BasePruner, which this planner replaces (see the class note),
        so it is redone here: the cut of a group changes by less than `round_to`, taking or sparing
        its next-lowest-scored channels, and never goes below the layer floor.
        """
        r = self.round_to
        rounded = {}
        for key, idxs in plan.items():
            ranked = per_group[key]
            current = self.dg.get_out_channels(key[0])
            keep = current - len(idxs)
            target = max(r, r * round(keep / r))
            floor = current - len(ranked)  # the layer floor: ranked holds only removable channels
            while target < floor:
                target += r
            n_cut = max(0, min(current - target, len(ranked)))
            if n_cut:
                rounded[key] = [i for _, i in ranked[:n_cut]]
        return rounded


def count_filters(model: nn.Module, ignored_layers: Sequence[nn.Module] = ()) -> int:
    """Output channels of all prunable Conv2d / Linear layers (the classifier head excluded)."""
    return sum(m.weight.shape[0] for m in prunable_modules(model, ignored_layers).values())


def prune_step(
    model: nn.Module,
    importance: FilterImportance,
    ratio: float,
    example_inputs: torch.Tensor,
    reference: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    scope: str = "global",
    ignored_layers: Sequence[nn.Module] | None = None,
    max_layer_ratio: float = 0.9,
    progress: bool = False,
    round_to: int = 1,
    ratio_unit: str = "filters",
) -> nn.Module:
    """Score the current `model` on `reference` and remove `ratio` of its filters in place (one shot)."""
    if ratio <= 0:
        return model
    importance.prepare(model, reference, progress=progress)
    FilterPruner(
        model, importance, [ratio], example_inputs, scope, ignored_layers, max_layer_ratio,
        round_to=round_to, ratio_unit=ratio_unit,
    ).step()
    return model
