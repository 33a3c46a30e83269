"""Benchmark of PRP heatmaps: the 10 most similar prototypes of one image.

Time of `explain.prp.prp_heatmaps` for the top 10 prototypes of one image (one batched forward
and backward with the LRP composite) divided by one plain forward+backward of that image (the
similarity of the top prototype explained by autograd), for a ProtoPNet on the small-image
ResNet18 at 28 px (DermaMNIST's recipe: 70 prototypes, depth 128) and on ResNet18 at 224 px.
No target is set by an issue; the ratio says what a local explanation with PRP costs.

Writes results/bench_prp.json and prints a table. Usage:
    python benchmarks/bench_prp.py [--sizes 28 224] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from protoprune.explain.prp import prp_heatmaps
from protoprune.models.backbones import build_classifier, feature_extractor
from protoprune.protopnet.model import ProtoPNet


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(size: int, repeats: int, top: int = 10) -> dict:
    torch.manual_seed(0)
    trunk = feature_extractor(build_classifier("resnet18", 7, small_input=size <= 64))
    model = ProtoPNet(trunk, 7, prototypes_per_class=10, prototype_dim=128).eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        sims = model.similarity_vectors(x)[0]
    protos = sims.argsort(descending=True)[:top].tolist()

    def plain() -> None:
        xg = x.clone().requires_grad_(True)
        s = model.prototype_layer(model.conv_features(xg), model.prototype_vectors)
        torch.autograd.grad(s[0, protos[0]], xg)

    def prp() -> None:
        prp_heatmaps(model, x, protos)

    plain()
    prp()  # warm-up
    t_plain = _median_time(plain, repeats)
    t_prp = _median_time(prp, repeats)
    return {
        "image_size": size,
        "prototypes": top,
        "plain_forward_backward_s": t_plain,
        "prp_top_s": t_prp,
        "ratio": t_prp / t_plain,
        "per_prototype_ratio": t_prp / t_plain / top,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 224])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="results/bench_prp.json")
    args = parser.parse_args()
    rows = [bench(s, args.repeats) for s in args.sizes]
    meta = {"threads": torch.get_num_threads(), "torch": torch.__version__,
            "machine": platform.machine(), "processor": platform.processor()}  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print("| px | plain fwd+bwd (s) | PRP, top 10 (s) | ratio | ratio / prototype |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['image_size']} | {r['plain_forward_backward_s']:.4f} | {r['prp_top_s']:.4f} "
              f"| {r['ratio']:.2f} | {r['per_prototype_ratio']:.2f} |")  # fmt: skip
    print(f"-> {out}")


if __name__ == "__main__":
    main()
