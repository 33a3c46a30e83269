"""What a HAM10000 recipe costs on this machine and how much of the image a latent cell sees.

For each input size (200 x 150 images squashed to a square, or kept 4:3 as 150 x 200), ResNet18's
training images/s (forward + backward + Adam step, batch 32, random labels, `--threads` threads,
float32 and bfloat16 autocast with channels_last, as `train.cpu_amp` + `train.channels_last`), the
latent grid of the trunk with all 4 stages and with 3 (`protopnet.trunk_layers: 3`), the analytic
receptive field of a centre cell and its effective field (Luo et al. 2016: the centred box holding
90 % of the input-gradient mass, `models.receptive_field.effective_receptive_field`) on real
HAM10000 images at random initialisation (a trained trunk's field differs; the study records it).
Writes results/bench_ham10000_recipes.json and prints a table:
    python benchmarks/bench_ham10000_recipes.py [--data ../shared/data/ham10000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from protoprune.models import build_classifier
from protoprune.models.backbones import feature_extractor
from protoprune.models.receptive_field import effective_receptive_field, receptive_field
from protoprune.protopnet.model import cut_trunk

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
INPUTS = [  # (label, (H, W), small-image stem)
    ("28 x 28, small stem (DermaMNIST recipe)", (28, 28), True),
    ("96 x 96", (96, 96), False),
    ("112 x 112", (112, 112), False),
    ("128 x 128", (128, 128), False),
    ("96 x 128 (4:3)", (96, 128), False),
    ("150 x 200 (4:3, full)", (150, 200), False),
    ("224 x 224", (224, 224), False),
]


def train_rate(model, hw, bf16: bool, batch: int, steps: int) -> float:
    """Images/s of forward + backward + Adam step (median over `steps` after 2 warm-up steps)."""
    model.train()
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(batch, 3, *hw)
    x = x.to(memory_format=torch.channels_last) if bf16 else x
    y = torch.randint(0, 7, (batch,))
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def real_images(root: Path, hw, n: int) -> torch.Tensor:
    paths = sorted((root / "images").glob("*.jpg"))[:: max(1, 10015 // n)][:n]
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((hw[1], hw[0]), Image.BILINEAR)) for p in paths]
    x = torch.tensor(np.stack(arrays), dtype=torch.float32).permute(0, 3, 1, 2) / 255
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def fields(model, hw, small: bool, images: torch.Tensor) -> dict:
    out = {}
    full = feature_extractor(model, "resnet18")
    for label, trunk in (("4 stages", full), ("3 stages", cut_trunk(full, "resnet18", 3))):
        erf = effective_receptive_field(trunk, images)
        rf = receptive_field(trunk)
        h, w = erf["map"]
        box = rf.box(h // 2, w // 2, hw)
        out[label] = {"grid": f"{h} x {w}", "analytic_px": rf.y.size,
                      "analytic_area_share": (box[1] - box[0]) * (box[3] - box[2]) / (hw[0] * hw[1]),
                      "effective_side_px": erf["side"], "effective_side_share": round(erf["side_share"], 3),
                      "effective_area_share": round(erf["area_share"], 3)}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/ham10000"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--erf-images", type=int, default=16)
    ap.add_argument("--out", default="results/bench_ham10000_recipes.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for label, hw, small in INPUTS:
        torch.manual_seed(0)
        model = build_classifier("resnet18", 7, small_input=small)
        row = {"input": label, "hw": hw,
               "fp32_img_s": round(train_rate(model, hw, False, args.batch, args.steps), 1),
               "bf16_cl_img_s": round(train_rate(build_classifier("resnet18", 7, small_input=small), hw, True,
                                                 args.batch, args.steps), 1)}  # fmt: skip
        row["fields"] = fields(model.eval(), hw, small, real_images(Path(args.data), hw, args.erf_images))
        rows.append(row)
        print(json.dumps(row), flush=True)
    meta = {"torch": torch.__version__, "threads": args.threads, "batch": args.batch,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print("\n| input | fp32 img/s | bf16 + channels_last img/s | grid (4 / 3 stages) | analytic field, share of image (4 / 3) | effective 90 % box, share of image (4 / 3) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        f4, f3 = r["fields"]["4 stages"], r["fields"]["3 stages"]
        print(f"| {r['input']} | {r['fp32_img_s']} | {r['bf16_cl_img_s']} | {f4['grid']} / {f3['grid']} | "
              f"{f4['analytic_area_share']:.2f} / {f3['analytic_area_share']:.2f} | "
              f"{f4['effective_area_share']:.2f} / {f3['effective_area_share']:.2f} |")


if __name__ == "__main__":
    main()
