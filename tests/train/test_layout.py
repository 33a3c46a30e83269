"""`train.channels_last`: training runs the convolutions in NHWC, lands where NCHW lands, and its
checkpoints load into a plain (NCHW) model."""

from __future__ import annotations

import functools

import torch
from torch import nn

from protoprune.config import load_config
from protoprune.protopnet import training as tp
from protoprune.train.checkpoint import load_checkpoint
from protoprune.train.layout import apply_memory_format
from protoprune.train.loop import fit
from tests.protopnet.test_training import tiny_config, tiny_loaders, tiny_model


def _conv_inputs_channels_last(model: nn.Module, run) -> set[bool]:
    seen: set[bool] = set()
    hooks = [m.register_forward_hook(
                 lambda _m, _i, o: seen.add(o.is_contiguous(memory_format=torch.channels_last)
                                            and not o.is_contiguous()))
             for m in model.modules() if isinstance(m, nn.Conv2d)]  # fmt: skip
    run()
    for h in hooks:
        h.remove()
    return seen


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))  # fmt: skip


def test_off_by_default_and_on_converts_only_four_d_weights() -> None:
    cfg = load_config(None, [])
    assert cfg.train.channels_last is False
    model = _classifier()
    assert apply_memory_format(model, cfg.train)[0].weight.is_contiguous()
    cfg.train.channels_last = True
    apply_memory_format(model, cfg.train)
    assert not model[0].weight.is_contiguous()
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert model[5].weight.is_contiguous()  # the linear layer is untouched


def test_fit_in_channels_last_matches_nchw_and_its_checkpoint_loads_plainly(tmp_path) -> None:
    results, models = [], []
    for channels_last in (False, True):
        model, loaders = _classifier(), tiny_loaders()  # the same shuffles
        cfg = load_config(None, ["train.progress=false", "train.device=cpu", "data.balance=none",
                                 f"train.channels_last={str(channels_last).lower()}"])  # fmt: skip
        out = tmp_path / str(channels_last)
        run = functools.partial(fit, model, loaders, cfg, out, epochs=2, device="cpu",
                                class_names=loaders.class_names)  # fmt: skip
        seen = _conv_inputs_channels_last(model, run)
        assert seen == {channels_last}  # every convolution's output in the chosen layout
        model.eval()
        results.append(torch.cat([model(x) for x, _ in loaders.test]).detach())
        models.append(model)
    nchw, nhwc = results
    torch.testing.assert_close(nhwc, nchw, rtol=1e-4, atol=1e-4)  # other kernels, same training
    ckpt = load_checkpoint(tmp_path / "True" / "checkpoints" / "best.pt")
    plain = _classifier()
    plain.load_state_dict(ckpt["state_dict"])
    assert plain[0].weight.is_contiguous()
    plain.eval()
    x = next(iter(loaders.test))[0]
    torch.testing.assert_close(plain(x), models[1](x))


def test_protopnet_schedule_in_channels_last_matches_nchw(tmp_path) -> None:
    loaders = tiny_loaders()
    logits = []
    for channels_last in (False, True):
        model, cfg = tiny_model(), tiny_config()
        cfg.train.channels_last = channels_last
        tp.train_protopnet(model, tiny_loaders(), cfg, tmp_path / str(channels_last), "cpu")
        assert model.features.body[0].weight.is_contiguous(memory_format=torch.channels_last) == (
            channels_last
        )
        model.eval()
        with torch.no_grad():
            logits.append(torch.cat([model(x) for x, _ in loaders.test]))
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-3, atol=1e-3)
