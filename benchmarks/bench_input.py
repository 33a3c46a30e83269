"""Benchmark of the training input pipeline at full resolution beside the model it feeds.

Images/s of one training epoch's batches (decode or cache read, resize, flips, rotation, colour
jitter, normalisation, collation; on CUDA also the pinned copy to the device) from real-size
600 x 450 JPEGs, for 0, 2 and N DataLoader workers and each pixel source: full decode, JPEG draft
decode (`data.jpeg_draft`), memory cache and disk cache (`data.cache`); next to ResNet18's
training images/s (forward + backward + Adam step, batch as the loader's) at the same size on the
same device. The input pipeline keeps the model busy where its images/s exceed the model's.

The JPEGs are real dermoscopy images (the ISIC 2018 test images of the shared data folder, or any
folder of JPEGs given with --source) upsampled to 600 x 450 (LANCZOS, quality 90, as the
originals), written to a temporary folder. Writes results/bench_input.json and prints a table:
    python benchmarks/bench_input.py [--images 256] [--size 224] [--workers 0 2 16] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader

from protoprune.data.base import FileImageDataset
from protoprune.data.cache import with_pixel_source
from protoprune.data.loaders import collate_in_numpy
from protoprune.data.transforms import build_transform
from protoprune.models import build_classifier

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SOURCES = {  # name: (data.cache, data.jpeg_draft)
    "full decode": ("none", False),
    "draft decode": ("none", True),
    "memory cache": ("memory", False),
    "disk cache": ("disk", False),
}


def write_jpegs(source: Path, out: Path, n: int) -> list[Path]:
    """`n` 600 x 450 JPEGs made from the real images in `source` (cycled if there are fewer)."""
    found = sorted(source.glob("*.jpg"))
    if not found:
        raise SystemExit(f"no .jpg images in {source}: give a folder of JPEGs with --source")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = out / f"img_{i:05d}.jpg"
        img = Image.open(found[i % len(found)]).convert("RGB")
        img = img.transpose(Image.FLIP_LEFT_RIGHT) if (i // len(found)) % 2 else img
        img.resize((600, 450), Image.LANCZOS).save(path, quality=90)
        paths.append(path)
    return paths


def pipeline_rate(ds, batch: int, workers: int, device: torch.device, epochs: int) -> dict:
    """Images/s over the last of `epochs` epochs (workers kept: their start-up is paid once)."""
    cuda = device.type == "cuda"
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, pin_memory=cuda,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0),
                        collate_fn=collate_in_numpy if workers == 0 else None)  # as build_loaders; fmt: skip
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        n = 0
        for x, _ in loader:
            x = x.to(device, non_blocking=True)
            n += len(x)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"images": n, "seconds_per_epoch": times, "images_per_s": n / times[-1]}


def model_rate(size: int, batch: int, device: torch.device, batches: int) -> dict:
    """ResNet18 (ImageNet stem) training images/s at `size` px: median of `batches` steps after one."""
    torch.manual_seed(0)
    model = build_classifier("resnet18", 7, small_input=False).to(device).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.arange(batch, device=device) % 7
    times = []
    for i in range(batches + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step pays for allocation and kernel selection
            times.append(time.perf_counter() - t0)
    return {"seconds_per_batch": times, "images_per_s": batch / statistics.median(times)}


def main() -> None:
    default_source = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "isic2018-task3-test" / "images"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=default_source, help="folder of real JPEGs")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="default: 0 2 N (N = cores)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per setting; the last is timed")
    parser.add_argument("--model-batches", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="results/bench_input.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = sorted(set(args.workers if args.workers is not None else [0, 2, cores]))
    tmp = Path(tempfile.mkdtemp(prefix="bench_input_"))
    try:
        paths = write_jpegs(args.source, tmp / "jpg", args.images)
        base = FileImageDataset(paths, [i % 7 for i in range(len(paths))], [f"c{k}" for k in range(7)])
        transform = build_transform(args.size, MEAN, STD, train=True, augment=True)
        rows = []
        for name, (cache, draft) in SOURCES.items():
            t0 = time.perf_counter()
            ds = with_pixel_source(base, args.size, cache, draft, tmp / "cache", "train", max(workers))
            build = time.perf_counter() - t0
            for w in workers:
                rate = pipeline_rate(ds.with_transform(transform), args.batch, w, device, args.epochs)
                rows.append({"source": name, "cache": cache, "jpeg_draft": draft, "workers": w,
                             "cache_build_seconds": build if cache != "none" else None, **rate})  # fmt: skip
                print(f"  {name:13} {w:2d} workers: {rate['images_per_s']:8.1f} img/s", flush=True)
        model = model_rate(args.size, args.batch, device, args.model_batches)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "machine": platform.processor() or platform.machine(),
        "cores": cores,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "config": {k: str(v) for k, v in vars(args).items()},
        "model_train_images_per_s": model["images_per_s"],
        "model": model,
        "pipeline": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\ninput pipeline, {args.images} JPEGs 600x450 -> {args.size} px with augmentation, batch "
          f"{args.batch}, {report['device']}, {cores} cores, {report['threads']} torch threads")  # fmt: skip
    print(f"{'source':13} {'workers':>7} {'img/s':>8} {'/ model':>8} {'cache build s':>13}")
    for r in rows:
        build = "" if r["cache_build_seconds"] is None else f"{r['cache_build_seconds']:13.1f}"
        ratio = r["images_per_s"] / model["images_per_s"]
        print(f"{r['source']:13} {r['workers']:>7} {r['images_per_s']:8.1f} {ratio:8.2f} {build:>13}")
    print(f"{'ResNet18 training':21} {model['images_per_s']:8.1f}   (forward+backward+Adam, batch {args.batch})")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
