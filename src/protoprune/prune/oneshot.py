"""One-shot pruning curves of any model: score once, prune copies to each ratio, evaluate.

The library form of `protoprune prune-curve` for a model protoprune did not build (a torchvision
or timm network trained elsewhere): the caller gives the criteria (protoprune's or any
`FilterImportance`), the reference batches they score on, and the evaluation to run on each pruned
copy. No fine-tuning, so the curve shows what each criterion keeps by itself; compare it with
`RandomImportance` (the control) at the same ratios and, through the MACs column, at equal compute.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence

import pandas as pd
import torch
import torch_pruning as tp
from torch import nn

from ..metrics import paired_t_interval
from .importance import FilterImportance
from .relevance import never_pruned
from .structural import FilterPruner


def oneshot_curve(
    model: nn.Module,
    criteria: Mapping[str, FilterImportance],
    reference: Iterable[tuple[torch.Tensor, torch.Tensor]],
    evaluate: Callable[[nn.Module], float | Mapping[str, float]],
    ratios: Sequence[float],
    example_inputs: torch.Tensor,
    ignored_layers: Sequence[nn.Module] | None = None,
) -> pd.DataFrame:
    """One row per criterion and ratio: the filters removed, MACs, parameters and what
    `evaluate(pruned_copy)` returns (a number, as column `metric`, or a dict of columns).

    `reference`: (inputs, labels) batches the criteria score on (e.g. a DataLoader). The model is
    left as it was; ratio 0 gives each criterion's unpruned row. `ignored_layers` defaults to the
    output layer (`relevance.never_pruned`)."""
    model.eval()
    batches = list(reference)
    rows = []
    for name, importance in criteria.items():
        raw = importance.prepare(model, batches)
        for ratio in ratios:
            pruned = copy.deepcopy(model)
            importance.bind(pruned, raw)  # the scores of the unpruned model, on the copy's layers
            keep = never_pruned(pruned) if ignored_layers is None else _same_layers(model, pruned, ignored_layers)
            pruner = FilterPruner(pruned, importance, [ratio], example_inputs, ignored_layers=keep)
            if ratio > 0:
                pruner.step()
            macs, params = tp.utils.count_ops_and_params(pruned, example_inputs)
            with torch.no_grad():
                result = evaluate(pruned.eval())
            scores = dict(result) if isinstance(result, Mapping) else {"metric": float(result)}
            rows.append({"criterion": name, "ratio": ratio,
                         "filters_removed_ratio": pruner.pruned_filter_fraction(),
                         "macs": int(macs), "params": int(params), **scores})  # fmt: skip
    return pd.DataFrame(rows)


def paired_comparison(
    curve: pd.DataFrame, a: str = "lrp", b: str = "random", unit: str = "run", metric: str = "metric"
) -> pd.DataFrame:
    """Per ratio, the mean of `metric`(a) - `metric`(b) over paired units with its 95 % t interval.

    `curve`: rows of `oneshot_curve` for several units (models trained with different seeds, or
    draws of the random control), told apart by the column `unit`; a unit pairs a's row with b's
    at the same ratio. The interval is over units, so it says how much the difference varies from
    one unit to the next: over seeds of the model, the result holds for the recipe; over random
    draws of one model, for that model only. Below 2 units the interval is NaN."""
    if unit not in curve.columns:
        raise ValueError(f"the curve has no {unit!r} column: add one per model or draw "
                         "(e.g. pd.concat([c.assign(run=i) for i, c in enumerate(curves)]))")  # fmt: skip
    table = curve.pivot_table(index=[unit, "ratio"], columns="criterion", values=metric)
    missing = {a, b} - set(table.columns)
    if missing:
        raise ValueError(f"no rows for criterion {sorted(missing)}; have {sorted(table.columns)}")
    diff = (table[a] - table[b]).rename("difference").reset_index()
    rows = [{"ratio": ratio, **paired_t_interval(group["difference"].to_numpy())}
            for ratio, group in diff.groupby("ratio")]  # fmt: skip
    return pd.DataFrame(rows)


def _same_layers(model: nn.Module, copy_: nn.Module, layers: Sequence[nn.Module]) -> list[nn.Module]:
    """The copy's modules at the names the given modules of `model` have."""
    names = {id(m): n for n, m in model.named_modules()}
    found = dict(copy_.named_modules())
    return [found[names[id(m)]] for m in layers]
