"""Benchmark of filter pruning on CPU: LRP scoring cost and the real speed-up of removed filters.

1. Time to score the reference set (70 images = 10 per class x 7) with LRP vs one plain
   forward+backward over the same images with the default rules (`yeom2021`) (target: <= 2x).
2. After removing 50 % of the filters (global LRP ranking): measured latency ratio vs MACs ratio
   (target: latency ratio <= 1.15 x MACs ratio), resnet18 small variant at 28 and 64 px, with the
   pruned widths rounded to multiples of 8 (the default) and not rounded. Each model is timed in
   NCHW and channels_last and its faster format counts.

Writes results/bench_filter_pruning.json and prints a table. Usage:
    python benchmarks/bench_filter_pruning.py [--sizes 28 64] [--ratio 0.5]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from protoprune.models import build_classifier
from protoprune.prune.importance import LRPImportance
from protoprune.prune.measure import count_macs_params, cpu_latency
from protoprune.prune.structural import FilterPruner


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _interleaved(plain, lrp, repeats: int) -> tuple[float, float, float]:
    """Median seconds of each and the median of the paired ratios, the two timed in turn.

    Timed in turn because this shared machine's speed drifts by tens of per cent within minutes
    (the plain pass at 64 px took 5.4-10 s across runs): two blocks timed one after the other
    would put that drift into the ratio.
    """
    pairs = [(_seconds(plain), _seconds(lrp)) for _ in range(repeats)]
    return (statistics.median(p for p, _ in pairs), statistics.median(q for _, q in pairs),
            statistics.median(q / p for p, q in pairs))  # fmt: skip


def bench(size: int, ratio: float, repeats: int, batch: int, round_tos: list[int]) -> dict:
    torch.manual_seed(0)
    model = build_classifier("resnet18", 7, small_input=True).eval()
    ref = [(torch.randn(batch, 3, size, size), torch.arange(batch) % 7) for _ in range(70 // batch)]

    def plain() -> None:
        for x, y in ref:
            model.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()

    imp = LRPImportance()
    plain()
    imp.prepare(model, ref[:1])  # warm-up both
    t_plain, t_lrp, lrp_over_plain = _interleaved(plain, lambda: imp.prepare(model, ref), repeats)

    macs0, params0 = count_macs_params(model, size)
    base = copy.deepcopy(model)
    out = {
        "image_size": size,
        "reference_images": 70 // batch * batch,
        "lrp_seconds": t_lrp,
        "plain_fwd_bwd_seconds": t_plain,
        "lrp_over_plain": lrp_over_plain,  # median of the paired ratios
        "latency": "median forward time, the faster of NCHW and channels_last for each model",
        "pruned": [],
    }
    for round_to in round_tos:
        pruned = copy.deepcopy(base)
        pruner = FilterPruner(pruned, imp, [ratio], torch.zeros(1, 3, size, size), round_to=round_to)
        imp.prepare(pruned, ref)
        pruner.step()
        macs1, params1 = count_macs_params(pruned, size)
        # interleave unpruned and pruned timings so load from other processes hits both alike
        lat0: dict[int, list[float]] = {1: [], 32: []}
        lat1: dict[int, list[float]] = {1: [], 32: []}
        for _ in range(5):
            for b in (1, 32):
                lat0[b].append(cpu_latency(base, size, b, repeats=5 if b == 1 else 2, warmup=1))
                lat1[b].append(cpu_latency(pruned, size, b, repeats=5 if b == 1 else 2, warmup=1))
        lat0 = {b: statistics.median(v) for b, v in lat0.items()}
        lat1 = {b: statistics.median(v) for b, v in lat1.items()}
        macs_ratio = macs1 / macs0
        row = {
            "round_to": round_to,
            "pruned_ratio": pruner.pruned_fraction(),
            "macs": [macs0, macs1],
            "flops": [2 * macs0, 2 * macs1],
            "params": [params0, params1],
            "macs_ratio": macs_ratio,
        }
        for b in (1, 32):
            row[f"latency_ms_b{b}"] = [1000 * lat0[b], 1000 * lat1[b]]
            row[f"latency_ratio_b{b}"] = lat1[b] / lat0[b]
            row[f"latency_over_macs_b{b}"] = (lat1[b] / lat0[b]) / macs_ratio
        out["pruned"].append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 64])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=35)
    parser.add_argument("--round-to", type=int, nargs="+", default=[8, 1],
                        help="pruned widths rounded to multiples of these (8 = the default config)")
    parser.add_argument("--out", default="results/bench_filter_pruning.json")
    args = parser.parse_args()
    rows = [bench(s, args.ratio, args.repeats, args.batch, args.round_to) for s in args.sizes]
    report = {
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{'px':>4} {'round':>5} {'pruned':>7} {'LRP s':>7} {'fwd+bwd s':>9} {'LRP/plain':>9} "
        f"{'MACs ratio':>10} {'lat b1':>7} {'lat b32':>8} {'lat/MACs b1':>11} {'lat/MACs b32':>12}"
    )
    for r in rows:
        for q in r["pruned"]:
            print(
                f"{r['image_size']:>4} {q['round_to']:>5} {q['pruned_ratio']:>7.2f} {r['lrp_seconds']:>7.2f} "
                f"{r['plain_fwd_bwd_seconds']:>9.2f} {r['lrp_over_plain']:>9.2f} {q['macs_ratio']:>10.3f} "
                f"{q['latency_ratio_b1']:>7.3f} {q['latency_ratio_b32']:>8.3f} "
                f"{q['latency_over_macs_b1']:>11.2f} {q['latency_over_macs_b32']:>12.2f}"
            )
    print("targets: LRP/plain <= 2; latency ratio <= 1.15 x MACs ratio")


if __name__ == "__main__":
    main()
