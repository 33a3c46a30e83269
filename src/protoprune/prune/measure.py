"""Model cost: parameters, MACs (torch-pruning's counter), FLOPs = 2 x MACs, measured CPU latency."""

from __future__ import annotations

import copy
import statistics
import time

import torch
import torch_pruning as tp
from torch import nn


def count_macs_params(
    model: nn.Module, image_size: int, device: torch.device | str = "cpu"
) -> tuple[int, int]:
    """Multiply-accumulates of one image's forward pass and the parameter count.

    torch-pruning's `count_ops_and_params` returns MACs (one multiply + one add = 1), not FLOPs.
    """
    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, image_size, image_size, device=device)
    try:
        macs, params = tp.utils.count_ops_and_params(model, x)
    finally:
        model.train(was_training)
    return int(macs), int(params)


MEMORY_FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


@torch.inference_mode()
def cpu_latency(
    model: nn.Module,
    image_size: int,
    batch_size: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    memory_formats: tuple[str, ...] = ("nchw", "channels_last"),
) -> float:
    """Median wall time (seconds) of one forward pass of a `batch_size` batch on the CPU.

    Runs on a CPU copy in eval mode; the median over `repeats` timed passes (after `warmup`
    untimed ones) is robust to the other processes sharing the machine. The model is timed in
    each of `memory_formats` and the fastest counts, as a deployment would pick it: oneDNN runs
    narrow (pruned) layers markedly faster in channels_last, wide ones sometimes in NCHW.
    """
    unknown = set(memory_formats) - set(MEMORY_FORMATS)
    if unknown or not memory_formats:
        raise ValueError(f"memory formats {sorted(unknown)} unknown; use {sorted(MEMORY_FORMATS)}")
    best = float("inf")
    for name in memory_formats:
        fmt = MEMORY_FORMATS[name]
        cpu_model = copy.deepcopy(model).to("cpu").eval().to(memory_format=fmt)
        x = torch.randn(batch_size, 3, image_size, image_size).contiguous(memory_format=fmt)
        for _ in range(warmup):
            cpu_model(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            cpu_model(x)
            times.append(time.perf_counter() - t0)
        best = min(best, statistics.median(times))
    return best


def measure_model(
    model: nn.Module,
    image_size: int,
    batch_sizes: tuple[int, ...] = (1, 32),
    repeats: int = 20,
    latency: bool = True,
) -> dict[str, float | int]:
    """params, macs, flops (= 2 x macs) and, with `latency`, latency_ms_b{N} per batch size."""
    device = next(model.parameters()).device
    macs, params = count_macs_params(model, image_size, device)
    out: dict[str, float | int] = {"params": params, "macs": macs, "flops": 2 * macs}
    if latency:
        for b in batch_sizes:
            reps = repeats if b == 1 else max(3, repeats // 4)
            out[f"latency_ms_b{b}"] = 1000 * cpu_latency(model, image_size, b, reps)
    return out
