"""Mixed precision: bfloat16 autocast for training on CPU when `train.cpu_amp`, float32 otherwise;
prototype distances float32 under it; partial fine-tuning epochs (`CappedLoader`)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from protoprune.config import RunConfig, load_config
from protoprune.data.loaders import CappedLoader
from protoprune.errors import ConfigError
from protoprune.protopnet import training as tp
from protoprune.train import precision
from protoprune.train.loop import fit, train_one_epoch
from tests.protopnet.test_training import tiny_loaders, tiny_model

CPU = torch.device("cpu")


def test_use_amp_follows_the_device_and_the_flags() -> None:
    tc = RunConfig().train
    assert tc.amp and not tc.cpu_amp  # defaults: fp16 on CUDA, plain float32 on CPU
    assert precision.use_amp(tc, torch.device("cuda")) is True
    assert precision.use_amp(tc, CPU) is False
    tc.cpu_amp = True
    assert precision.use_amp(tc, CPU) is True
    assert precision.grad_scaler(tc, CPU) is None  # bfloat16 needs no loss scaling
    tc.amp = False
    assert precision.use_amp(tc, torch.device("cuda")) is False


def _conv_dtypes(model: nn.Module, run) -> set[torch.dtype]:
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda _m, _i, o: seen.add(o.dtype))
             for m in model.modules() if isinstance(m, nn.Conv2d)]  # fmt: skip
    run()
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("amp", [False, True])
def test_classifier_epoch_runs_convolutions_in_bfloat16_only_under_amp(amp: bool) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    x, y = torch.randn(24, 3, 8, 8), torch.arange(24) % 3
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model[0].weight.detach().clone()
    dtypes = _conv_dtypes(model, lambda: train_one_epoch(
        model, loader, opt, nn.CrossEntropyLoss(), CPU, None, False, amp=amp))  # fmt: skip
    assert dtypes == ({torch.bfloat16} if amp else {torch.float32})
    assert model[0].weight.dtype == torch.float32  # master weights stay float32
    assert not torch.equal(model[0].weight, before)  # and they were updated


def test_protopnet_epoch_under_bfloat16_keeps_distances_float32() -> None:
    model, loaders = tiny_model(), tiny_loaders()
    cfg = RunConfig()
    opt = tp.build_optimizers(model, cfg.protopnet)["joint"]
    distances: list[torch.dtype] = []
    real = model.forward_details

    def spy(x):
        out = real(x)
        distances.append(out.min_distances.dtype)
        return out

    dtypes = _conv_dtypes(model, lambda: tp.train_epoch(
        model, loaders.train, opt, cfg.protopnet, CPU, progress=False, forward=spy, amp=True))  # fmt: skip
    assert torch.bfloat16 in dtypes
    assert set(distances) == {torch.float32}


def test_capped_loader_stops_each_pass_and_reshuffles() -> None:
    data = TensorDataset(torch.arange(40).float().view(-1, 1), torch.zeros(40, dtype=torch.long))
    loader = DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    capped = CappedLoader(loader, 3)
    assert len(capped) == 3 and capped.dataset is data and capped.batch_size == 4
    first, second = [torch.cat([x for x, _ in capped]) for _ in range(2)]
    assert len(first) == len(second) == 12
    assert not torch.equal(first, second)  # a fresh sample each pass
    assert len(CappedLoader(loader, 100)) == len(loader) == 10


def test_fit_on_capped_loaders_takes_exactly_that_many_steps() -> None:
    loaders = tiny_loaders()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    capped = dataclasses.replace(loaders, train=CappedLoader(loaders.train, 2))
    calls = []
    model.register_forward_pre_hook(lambda m, i: calls.append(m.training) or None)
    cfg = load_config(None, ["train.progress=false", "train.device=cpu", "data.balance=none"])
    fit(model, capped, cfg, epochs=2, device="cpu", class_names=loaders.class_names)
    assert sum(calls) == 2 * 2  # 2 epochs x 2 training batches (evaluation runs in eval mode)


def test_finetune_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="finetune_batches"):
        load_config(None, ["prune_filters.finetune_batches=0"])
    with pytest.raises(ConfigError, match="finetune_lr"):
        load_config(None, ["prune_filters.finetune_lr=0"])
    cfg = load_config(None, ["prune_filters.finetune_batches=5", "prune_filters.finetune_lr=1e-4"])
    assert (cfg.prune_filters.finetune_batches, cfg.prune_filters.finetune_lr) == (5, 1e-4)
