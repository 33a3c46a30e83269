"""ProtoPNet test inference, protoprune's beside the ORIGINAL model.py, interleaved in one process.

bench_protopnet.py times the original in a subprocess after protoprune's whole run, so a change of
machine load between the two (the machine may be shared) enters its inference ratio. Here each
repeat times both models back to back on the same batches, in wall time and in process CPU time
(with one thread, CPU time counts the work done whatever the load), and torch.profiler lists the
operators of each. Sizes as bench_protopnet's scales: resnet18 (ImageNet stem), 64 px, batch 64,
350 test images, 7 x 10 (small) and 200 x 10 (paper) prototypes of depth 128, log similarity.

    python benchmarks/bench_inference.py [--threads 1] [--repeats 7] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ORIGINAL = Path(os.environ.get("PROTOPRUNE_ORIGINAL", REPO / ".." / "shared" / "bench" / "protopnet_original"))
SCALES = {"small": 7, "paper": 200}  # classes; 10 prototypes each


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--original", type=Path, default=ORIGINAL, help="folder of the original's model.py")
    p.add_argument("--scales", default="small,paper")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--n-test", type=int, default=350)
    p.add_argument("--profile", action="store_true", help="print torch.profiler's operator tables")
    p.add_argument("--out", default="results/bench_inference.json")
    return p.parse_args()


ARGS = parse_args()
os.environ.setdefault("OMP_NUM_THREADS", str(ARGS.threads))

import torch  # noqa: E402

from protoprune.models.backbones import build_classifier, feature_extractor  # noqa: E402
from protoprune.protopnet.model import ProtoPNet  # noqa: E402

torch.set_num_threads(ARGS.threads)


def models(n_classes: int):
    sys.path.insert(0, str(ARGS.original))
    import model as original_model  # the original's model.py, unedited

    torch.manual_seed(0)
    ours = ProtoPNet(feature_extractor(build_classifier("resnet18", n_classes, small_input=False)),
                     n_classes, 10, 128, 1, "regular", "log", 1e-4)  # fmt: skip
    theirs = original_model.construct_PPNet(
        base_architecture="resnet18", pretrained=False, img_size=ARGS.img_size,
        prototype_shape=(10 * n_classes, 128, 1, 1), num_classes=n_classes,
        prototype_activation_function="log", add_on_layers_type="regular",
    )  # fmt: skip
    return ours.eval(), theirs.eval()


@torch.no_grad()
def infer(model, batches) -> None:
    for x in batches:
        model(x)


def bench(n_classes: int) -> dict:
    ours, theirs = models(n_classes)
    batches = list(torch.randn(ARGS.n_test, 3, ARGS.img_size, ARGS.img_size).split(ARGS.batch))
    infer(ours, batches[:1])
    infer(theirs, batches[:1])
    times = {"protoprune": {"wall": [], "cpu": []}, "original": {"wall": [], "cpu": []}}
    for _ in range(ARGS.repeats):
        for name, model in (("protoprune", ours), ("original", theirs)):
            w, c = time.perf_counter(), time.process_time()
            infer(model, batches)
            times[name]["wall"].append(time.perf_counter() - w)
            times[name]["cpu"].append(time.process_time() - c)
    out = {"times": times}
    for kind in ("wall", "cpu"):
        rate = {k: ARGS.n_test / statistics.median(v[kind]) for k, v in times.items()}
        out[f"{kind}_images_per_s"] = rate
        out[f"{kind}_speedup"] = rate["protoprune"] / rate["original"]
        pairs = [b / a for a, b in zip(times["protoprune"][kind], times["original"][kind], strict=True)]
        out[f"{kind}_speedup_each_repeat"] = pairs
    if ARGS.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, model in (("protoprune", ours), ("original", theirs)):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                infer(model, batches)
            print(f"-- {name}, {n_classes} classes\n"
                  + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))  # fmt: skip
    return out


def main() -> None:
    if not (ARGS.original / "model.py").is_file():
        raise SystemExit(f"no model.py in {ARGS.original}: give the original ProtoPNet's folder with --original")
    report = {"config": {k: str(v) for k, v in vars(ARGS).items()}, "torch": torch.__version__, "scales": {}}
    for name in ARGS.scales.split(","):
        report["scales"][name] = bench(SCALES[name])
    Path(ARGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ARGS.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\ntest inference, resnet18 {ARGS.img_size} px, batch {ARGS.batch}, {ARGS.n_test} images, "
          f"{ARGS.threads} thread(s), median of {ARGS.repeats} interleaved repeats")  # fmt: skip
    print(f"{'scale':6} {'time':5} {'protoprune img/s':>16} {'original img/s':>14} {'ratio':>6} {'per-repeat ratios':>18}")
    for name, r in report["scales"].items():
        for kind in ("wall", "cpu"):
            rate = r[f"{kind}_images_per_s"]
            each = " ".join(f"{x:.2f}" for x in r[f"{kind}_speedup_each_repeat"])
            print(f"{name:6} {kind:5} {rate['protoprune']:16.1f} {rate['original']:14.1f} "
                  f"{r[f'{kind}_speedup']:6.2f}  {each}")  # fmt: skip
    print(f"saved {ARGS.out}")


if __name__ == "__main__":
    main()
