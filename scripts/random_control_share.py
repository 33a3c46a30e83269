"""Which filters the random control removes (docs/pruning_criteria.md): the share of a 30 % global
cut that falls on the blocks' first convs against their share of the filters, for the control as it
is (one uniform per group channel) and as it was (one uniform per layer, reduced over each group by
sum or mean). Small-image ResNet18 at random initialisation, draws 0-4.

Usage: python scripts/random_control_share.py
"""

from __future__ import annotations

import json

import torch

from protoprune.models import build_classifier
from protoprune.prune.importance import FilterImportance, RandomImportance
from protoprune.prune.relevance import never_pruned, prunable_modules
from protoprune.prune.structural import FilterPruner


class PerLayerRandom(RandomImportance):
    """The earlier control: per-layer uniforms reduced over a group like any criterion."""

    __call__ = FilterImportance.__call__


def is_first_conv(name: str) -> bool:
    return name.startswith("layer") and name.endswith(".conv1")


def widths(model) -> dict[str, int]:
    return {n: m.weight.shape[0] for n, m in prunable_modules(model, never_pruned(model)).items()}


def share_removed(cls, reduction: str, draws: int = 5, ratio: float = 0.3) -> dict:
    first = total = 0
    for seed in range(draws):
        torch.manual_seed(seed)
        model = build_classifier("resnet18", 7, small_input=True).eval()
        before = widths(model)
        imp = cls(seed=seed, group_reduction=reduction)
        imp.prepare(model, [])
        FilterPruner(model, imp, [ratio], torch.zeros(1, 3, 16, 16)).step()
        after = widths(model)
        first += sum(before[n] - after[n] for n in before if is_first_conv(n))
        total += sum(before[n] - after[n] for n in before)
    filters = sum(v for n, v in before.items() if is_first_conv(n)) / sum(before.values())
    return {"removed_filters": total, "first_convs_share_of_removed": round(first / total, 3),
            "first_convs_share_of_filters": round(filters, 3)}  # fmt: skip


def main() -> None:
    out = {
        "per group channel (now)": share_removed(RandomImportance, "sum"),
        "per layer, group sum (before)": share_removed(PerLayerRandom, "sum"),
        "per layer, group mean": share_removed(PerLayerRandom, "mean"),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
