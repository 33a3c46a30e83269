"""protoprune's criteria as a library on models it did not build: Torch-Pruning's own pruner,
the one-shot curve, the architectures LRP explains (relevance conserved) or refuses by name."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch_pruning as tp
import torchvision

import protoprune
from protoprune.errors import ConfigError, ProtopruneError
from protoprune.prune.relevance import initial_relevance, lrp_batch


def _batches(n=2, size=32, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(4, 3, size, size, generator=g), torch.randint(0, classes, (4,), generator=g))
            for _ in range(n)]  # fmt: skip


def _kept_rows(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    """Which filters of `before` survive in `after`, found by their weights (brute force)."""
    flat_b, flat_a = before.flatten(1), after.flatten(1)
    return [int((flat_b - row).abs().sum(1).argmin()) for row in flat_a]


def test_lrp_drives_torch_prunings_metapruner_on_a_torchvision_resnet() -> None:
    """The filters Torch-Pruning's MetaPruner removes are the lowest by protoprune's LRP scores,
    and a step without refreshing the scores is refused as stale."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    imp = protoprune.LRPImportance()
    pruner = tp.pruner.MetaPruner(model, torch.zeros(1, 3, 32, 32), importance=imp,
                                  pruning_ratio=0.6, iterative_steps=3, ignored_layers=[model.fc],
                                  global_pruning=True)  # fmt: skip
    raw = imp.prepare(model, _batches())
    conv = model.layer1[0].conv1  # its output channels are coupled with no other conv
    score = raw["layer1.0.conv1"] + 0  # the group's score: this layer's only (bn1 is not scored)
    weight = conv.weight.detach().clone()
    pruner.step()
    kept = _kept_rows(weight, conv.weight.detach())
    removed = sorted(set(range(len(score))) - set(kept))
    assert removed and kept and score[removed].max() <= score[kept].min()
    with pytest.raises(ProtopruneError, match="stale"):
        pruner.step()  # scores of the 64-channel layer asked for its pruned width
    imp.prepare(model, _batches())
    pruner.step()  # (the refused call used up Torch-Pruning's second step: this is its third)
    assert conv.out_channels < len(kept)  # refreshed, it prunes again
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_oneshot_curve_of_a_user_model_leaves_it_alone() -> None:
    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=3).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))

    def mean_logit(m):
        return float(m(x).mean())

    criteria = {"lrp": protoprune.LRPImportance(), "random": protoprune.RandomImportance(seed=3)}
    curve = protoprune.oneshot_curve(model, criteria, _batches(), mean_logit, [0.0, 0.2, 0.4],
                                     torch.zeros(1, 3, 32, 32))  # fmt: skip
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert curve.loc[curve["ratio"] == 0, "metric"].to_numpy() == pytest.approx(mean_logit(model))
    for _, c in curve.groupby("criterion"):
        assert np.allclose(c["filters_removed_ratio"], c["ratio"], atol=0.02)
        assert c["macs"].is_monotonic_decreasing and c["macs"].iloc[-1] < c["macs"].iloc[0]
    again = protoprune.oneshot_curve(model, {"random": protoprune.RandomImportance(seed=3)},
                                     _batches(), mean_logit, [0.4], torch.zeros(1, 3, 32, 32))  # fmt: skip
    assert again["macs"].iloc[0] == curve.loc[curve["criterion"] == "random", "macs"].iloc[-1]


ARCHITECTURES = {  # arch: the conserved share of the output relevance band, or the layer refused
    "resnet50": (0.9, 1.1),
    "vgg16_bn": (0.99, 1.01),
    "densenet121": (0.6, 1.4),
    "mobilenet_v3_small": "features.1.block.1 (SqueezeExcitation)",
    "efficientnet_b0": "features.1.0.block.1 (SqueezeExcitation)",
}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_lrp_conserves_relevance_through_torchvision_architectures_or_names_the_layer(arch) -> None:
    """Relevance reaching the input / relevance started at the logit (1 per image, one-hot),
    with the default composite on random weights; squeeze-excitation is refused by name."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, num_classes=3).eval()
    x, y = _batches(1, 64)[0]
    expected = ARCHITECTURES[arch]
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=re.escape(f"cannot explain layer {expected}")):
            lrp_batch(model, x, y, {})
        with pytest.raises(ConfigError, match="SqueezeExcitation"):
            protoprune.LRPImportance().prepare(model, [(x, y)])
        return
    r = lrp_batch(model, x, y, {})
    start = initial_relevance(r.logits, y, "onehot").sum(1)
    share = (r.input_relevance.sum((1, 2, 3)) / start).numpy()
    low, high = expected
    assert np.isfinite(share).all() and (low <= share).all() and (share <= high).all(), share


def test_paired_comparison_matches_scipy_on_a_hand_built_curve() -> None:
    import pandas as pd
    from scipy import stats

    from protoprune import paired_comparison

    lrp = {0: [0.50, 0.40], 1: [0.52, 0.43], 2: [0.49, 0.38]}  # run -> metric at ratios 0.1, 0.2
    rnd = {0: [0.45, 0.30], 1: [0.50, 0.35], 2: [0.41, 0.33]}
    rows = [{"run": r, "criterion": c, "ratio": ratio, "metric": v[r][i]}
            for c, v in (("lrp", lrp), ("random", rnd)) for r in v
            for i, ratio in enumerate((0.1, 0.2))]  # fmt: skip
    table = paired_comparison(pd.DataFrame(rows), "lrp", "random").set_index("ratio")
    for i, ratio in enumerate((0.1, 0.2)):
        d = [lrp[r][i] - rnd[r][i] for r in lrp]
        low, high = stats.t.interval(0.95, len(d) - 1, loc=sum(d) / 3, scale=stats.sem(d))
        assert table.loc[ratio, "mean"] == pytest.approx(sum(d) / 3)
        assert (table.loc[ratio, "ci_low"], table.loc[ratio, "ci_high"]) == pytest.approx((low, high))
    with pytest.raises(ValueError, match="no 'run' column"):
        paired_comparison(pd.DataFrame(rows).drop(columns="run"))
