"""The last-layer stage's hand-written gradient gives autograd's update (CE with class weights + L1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from protoprune.config import ProtoPNetConfig
from protoprune.models.backbones import Features
from protoprune.protopnet.last_layer import _adam_step, iteration_loss, last_layer_stage
from protoprune.protopnet.model import ProtoPNet
from protoprune.protopnet.training import build_optimizers


@pytest.mark.parametrize("classes_first", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_iteration_loss_is_the_batches_cross_entropy(weighted, classes_first):
    """The loss a row reports: each batch's F.cross_entropy, weighted by the batch's length
    (batches of 4 over 10 rows: a short last batch), also on a view of a (classes, N) buffer."""
    torch.manual_seed(0)
    logits = torch.randn(10, 3)
    y = torch.tensor([0, 1, 2, 2, 1, 0, 0, 1, 2, 2])
    w = torch.tensor([0.5, 2.0, 3.0]) if weighted else None
    expected = sum(
        F.cross_entropy(logits[s : s + 4], y[s : s + 4], weight=w) * len(y[s : s + 4])
        for s in range(0, 10, 4)
    ) / 10
    given = logits.t().contiguous().t() if classes_first else logits
    torch.testing.assert_close(iteration_loss(given, y, 4, w), expected)


def _autograd_stage(model, sims, targets, opt, p, batch, class_weights, order_seed):
    """The stage as autograd would run it: CE + l1 * |W * wrong|.sum(), one graph a batch; and
    the rows it should report (the batches' CE as drawn + the L1 term after the iteration, the
    batches' accuracy as drawn)."""
    wrong = 1 - model.prototype_class_identity.t()
    g = torch.Generator().manual_seed(order_seed)
    rows = []
    for it in range(p.last_layer_iterations):
        order = torch.randperm(len(targets), generator=g)
        ce_sum, correct = 0.0, 0
        for start in range(0, len(targets), batch):
            idx = order[start : start + batch]
            logits = model.last_layer(sims[idx])
            ce = F.cross_entropy(logits, targets[idx], weight=class_weights)
            ce_sum += ce.item() * len(idx)
            correct += (logits.argmax(1) == targets[idx]).sum().item()
            loss = p.crs_ent * ce + p.l1 * (model.last_layer.weight * wrong).abs().sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        l1 = (model.last_layer.weight * wrong).abs().sum().item()
        rows.append({"iteration": it + 1, "loss": p.crs_ent * ce_sum / len(targets) + p.l1 * l1,
                     "train_accuracy": correct / len(targets)})  # fmt: skip
    return rows


@pytest.mark.parametrize("row_major", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_stage_reaches_the_weights_and_rows_autograd_reaches(weighted, row_major):
    """On CPU with torch's Adam the stage lays the weight out column-major; with another optimiser
    (here a subclass of Adam) it keeps it row-major, as on CUDA: both reach autograd's result."""
    trunk = Features(nn.Sequential(nn.Conv2d(3, 4, 1)), 4)
    p = ProtoPNetConfig(prototypes_per_class=3, last_layer_iterations=4, l1=1e-2, last_layer_lr=1e-2)
    torch.manual_seed(0)
    sims = torch.rand(50, 12)
    targets = torch.arange(50) % 4
    class_weights = torch.tensor([1.0, 2.0, 0.5, 1.5]) if weighted else None
    models, rows = [], []
    for manual in (True, False):
        torch.manual_seed(1)
        model = ProtoPNet(trunk, 4, 3, 8)
        opt = build_optimizers(model, p)["last"]
        if manual and row_major:
            opt = _SubclassedAdam(model.last_layer.parameters(), lr=p.last_layer_lr, fused=True)
            stage_opt = opt
        if manual:
            rows.append(last_layer_stage(model, sims, targets, opt, p, 16, class_weights,
                                         generator=torch.Generator().manual_seed(5), progress=False))  # fmt: skip
        else:
            rows.append(_autograd_stage(model, sims, targets, opt, p, 16, class_weights, 5))
        models.append(model.last_layer.weight.detach().clone())
    assert not torch.equal(models[0], ProtoPNet(trunk, 4, 3, 8).last_layer.weight)  # it moved
    torch.testing.assert_close(models[0], models[1], rtol=1e-5, atol=1e-6)
    if row_major:
        assert stage_opt.row_major == [True] * 4 * 4  # every step: 4 iterations of 4 batches
    fast, slow = rows
    assert len(fast) == 4 and fast[-1]["loss"] < fast[0]["loss"]
    assert [r["iteration"] for r in fast] == [r["iteration"] for r in slow]
    assert [r["train_accuracy"] for r in fast] == pytest.approx([r["train_accuracy"] for r in slow])
    assert [r["loss"] for r in fast] == pytest.approx([r["loss"] for r in slow], rel=1e-5)


def test_two_stages_continue_one_optimisation_in_the_weights_own_tensors():
    """The stage works on a re-laid copy of the weight and Adam state (on CPU) and writes back into
    the original tensors: two stages of 2 iterations reach what autograd reaches in 4, and the
    module and optimiser keep their tensors, contiguous."""
    trunk = Features(nn.Sequential(nn.Conv2d(3, 4, 1)), 4)
    p = ProtoPNetConfig(prototypes_per_class=3, last_layer_iterations=2, l1=1e-2, last_layer_lr=1e-2)
    torch.manual_seed(0)
    sims, targets = torch.rand(50, 12), torch.arange(50) % 4
    torch.manual_seed(1)
    model = ProtoPNet(trunk, 4, 3, 8)
    weight = model.last_layer.weight
    opt = build_optimizers(model, p)["last"]
    g = torch.Generator().manual_seed(5)
    storage = weight.data_ptr()
    last_layer_stage(model, sims, targets, opt, p, 16, generator=g, progress=False)
    state = opt.state[weight]
    kept = {k: v.data_ptr() for k, v in state.items()}
    last_layer_stage(model, sims, targets, opt, p, 16, generator=g, progress=False)
    assert weight.data_ptr() == storage and weight.is_contiguous() and weight.grad is None
    assert {k: v.data_ptr() for k, v in opt.state[weight].items()} == kept
    assert all(v.is_contiguous() for v in opt.state[weight].values())
    torch.manual_seed(1)
    reference = ProtoPNet(trunk, 4, 3, 8)
    p.last_layer_iterations = 4
    _autograd_stage(reference, sims, targets, build_optimizers(reference, p)["last"], p, 16, None, 5)
    torch.testing.assert_close(weight.detach(), reference.last_layer.weight.detach(), rtol=1e-5, atol=1e-6)


class _SubclassedAdam(torch.optim.Adam):
    """Not `torch.optim.Adam` itself, so the stage steps it through `optimizer.step()`; records
    whether its parameter was row-major (contiguous) at each step."""

    def step(self, closure=None):
        self.row_major = [*getattr(self, "row_major", []), self.param_groups[0]["params"][0].is_contiguous()]
        return super().step(closure)


def _run_stage(optimizer_cls=None, amp=False, l1=1e-2, device="cpu", cuda_graph=None,
               weighted=False):  # fmt: skip
    trunk = Features(nn.Sequential(nn.Conv2d(3, 4, 1)), 4)
    p = ProtoPNetConfig(prototypes_per_class=3, last_layer_iterations=5, l1=l1, last_layer_lr=1e-2)
    torch.manual_seed(0)
    sims = (torch.rand(50, 12) * 4).to(device)
    targets = (torch.arange(50) % 4).to(device)
    weights = torch.tensor([1.0, 2.0, 0.5, 1.5], device=device) if weighted else None
    torch.manual_seed(1)
    model = ProtoPNet(trunk, 4, 3, 8).to(device)
    start = model.last_layer.weight.detach().clone()
    opt = build_optimizers(model, p)["last"]
    if optimizer_cls is not None:
        opt = optimizer_cls(model.last_layer.parameters(), lr=p.last_layer_lr, fused=True)
    rows = last_layer_stage(model, sims, targets, opt, p, 16, weights, oversample=True,
                            generator=torch.Generator().manual_seed(5), progress=False, amp=amp,
                            cuda_graph=cuda_graph)  # fmt: skip
    return model.last_layer.weight.detach().clone(), opt, rows, start


@pytest.mark.parametrize("column_major", [False, True])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_functional_adam_steps_equal_optimizer_step(column_major, amsgrad):
    """The stage's direct functional-Adam step leaves the same weight and optimiser state (what a
    resume reloads) as Optimizer.step, bit for bit, in either layout of the weight."""
    torch.manual_seed(0)
    start = torch.randn(7, 30)
    results = []
    for cls in (torch.optim.Adam, _SubclassedAdam):
        lay = (lambda t: t.t().contiguous().t()) if column_major else (lambda t: t.clone())
        weight = nn.Parameter(lay(start))
        opt = cls([weight], lr=1e-2, amsgrad=amsgrad, fused=True)
        step, graph_safe = _adam_step(opt, weight)
        assert graph_safe == (cls is torch.optim.Adam)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for _ in range(5):
                weight.grad = lay(torch.randn(7, 30, generator=g))
                step()
        results.append((weight.detach().clone(), opt.state_dict()["state"][0]))
    (fast_w, fast), (slow_w, slow) = results
    assert torch.equal(fast_w, slow_w) and not torch.equal(fast_w, start)
    assert fast.keys() == slow.keys()
    for key in fast:
        assert torch.equal(fast[key], slow[key]), key
    assert int(fast["step"]) == 5


@pytest.mark.parametrize("l1", [1e-2, 0.0])
def test_bfloat16_products_reach_nearly_the_float32_weights(l1):
    """`amp` runs the products in bfloat16 (a different computation) and lands near float32."""
    w32, _, rows32, start = _run_stage(amp=False, l1=l1)
    w16, _, rows16, _ = _run_stage(amp=True, l1=l1)
    moved = (w32 - start).abs().max()
    assert moved > 1e-2
    assert not torch.equal(w16, w32)
    assert (w16 - w32).abs().max() < 0.05 * moved
    assert rows16[-1]["loss"] == pytest.approx(rows32[-1]["loss"], rel=1e-2)


def test_cuda_graph_needs_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        _run_stage(cuda_graph=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("weighted", [False, True])
def test_cuda_graph_replays_the_eager_stage_exactly(weighted):
    """The graphed iterations run the eager kernels on the same buffers: the same weights, Adam
    state and per-iteration rows, bit for bit (50 vectors in batches of 16: a short last batch)."""
    results = []
    for graph in (False, True):
        w, opt, rows, _ = _run_stage(device="cuda", cuda_graph=graph, weighted=weighted)
        results.append((w, opt.state_dict()["state"][0], rows))
    (w0, s0, r0), (w1, s1, r1) = results
    assert torch.equal(w0, w1)
    assert r0 == r1
    for key in s0:
        assert torch.equal(s0[key], s1[key]), key
