"""Physical removal: ratio 0 is a no-op; pruned models are smaller, still run, same output shape."""

from __future__ import annotations

import pytest
import torch

from protoprune.errors import ConfigError
from protoprune.models import build_classifier
from protoprune.prune.importance import CRITERIA
from protoprune.prune.measure import count_macs_params, cpu_latency, measure_model
from protoprune.prune.structural import FilterPruner, prune_step


def test_ratio_zero_leaves_outputs_identical():
    torch.manual_seed(0)
    model = build_classifier("resnet18", 7, small_input=True).eval()
    x = torch.randn(2, 3, 16, 16)
    before = model(x)
    prune_step(model, CRITERIA.get("weight")(), 0.0, torch.zeros(1, 3, 16, 16))
    pruner = FilterPruner(model, CRITERIA.get("weight")(), [0.0], torch.zeros(1, 3, 16, 16))
    pruner.importance.prepare(model, [])
    assert pruner.step() == 0
    assert torch.equal(model(x), before)


@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn", "densenet121"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_pruned_model_is_smaller_and_runs(arch, scope):
    if arch == "densenet121" and scope == "layer":
        pytest.skip("one DenseNet trace is enough (slow)")
    torch.manual_seed(0)
    model = build_classifier(arch, 7, small_input=True).eval()
    macs0, params0 = count_macs_params(model, 16)
    ref = [(torch.randn(2, 3, 16, 16), torch.tensor([0, 5]))]
    imp = CRITERIA.get("weight" if arch == "densenet121" else "lrp")()  # DenseNet: keep it quick
    pruner = FilterPruner(model, imp, [0.2, 0.4], torch.zeros(1, 3, 16, 16), scope=scope)
    fractions = []
    for _ in range(2):
        imp.prepare(model, ref)
        pruner.step()
        fractions.append(pruner.pruned_fraction())
    assert fractions == pytest.approx([0.2, 0.4], abs=0.02)
    macs, params = count_macs_params(model, 16)
    assert params < 0.8 * params0 and macs < 0.9 * macs0
    assert model(torch.randn(3, 3, 16, 16)).shape == (3, 7)


def test_layer_scope_prunes_each_layer_by_the_same_fraction():
    model = build_classifier("vgg11_bn", 7, small_input=True).eval()
    widths0 = [m.out_channels for m in model.features if isinstance(m, torch.nn.Conv2d)]
    imp = CRITERIA.get("weight")()
    imp.prepare(model, [])
    FilterPruner(model, imp, [0.5], torch.zeros(1, 3, 16, 16), scope="layer").step()
    widths = [m.out_channels for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert widths == [w // 2 for w in widths0]


def test_measure_reports_flops_as_twice_macs():
    model = build_classifier("resnet18", 7, small_input=True)
    m = measure_model(model, 16, batch_sizes=(1, 2), repeats=2)
    assert m["flops"] == 2 * m["macs"] > 0
    assert m["latency_ms_b1"] > 0 and m["latency_ms_b2"] > 0


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_round_to_leaves_pruned_widths_at_multiples_and_the_ratio_close(scope):
    torch.manual_seed(0)
    model = build_classifier("resnet18", 7, small_input=True).eval()
    imp = CRITERIA.get("weight")()
    imp.prepare(model, [])
    pruner = FilterPruner(model, imp, [0.37], torch.zeros(1, 3, 16, 16), scope=scope, round_to=8)
    convs0 = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    pruner.step()
    convs = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert any(convs[n] < convs0[n] for n in convs)
    assert all(c % 8 == 0 for c in convs.values()), convs
    assert pruner.pruned_fraction() == pytest.approx(0.37, abs=0.03)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 7)


def test_round_to_one_gives_the_exact_cut_and_bad_values_fail():
    torch.manual_seed(0)
    model = build_classifier("resnet18", 7, small_input=True).eval()
    imp = CRITERIA.get("weight")()
    imp.prepare(model, [])
    FilterPruner(model, imp, [0.37], torch.zeros(1, 3, 16, 16), round_to=1).step()
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert any(w % 8 for w in widths)  # without rounding the cut lands anywhere
    with pytest.raises(ConfigError, match="round_to"):
        FilterPruner(model, imp, [0.5], torch.zeros(1, 3, 16, 16), round_to=0)


def test_latency_rejects_an_unknown_memory_format():
    model = build_classifier("resnet18", 7, small_input=True)
    with pytest.raises(ValueError, match="memory formats"):
        cpu_latency(model, 16, memory_formats=("nhwc",))
