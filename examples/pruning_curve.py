"""A one-shot pruning curve of your own model: LRP against the weight norm and the random control.

Each criterion scores the trained model once on a few reference batches; copies are pruned to each
ratio without fine-tuning and evaluated, so the curve shows what each criterion keeps by itself.
A criterion is worth its cost only where it stays above the random control: the script ends with
LRP minus random per ratio, with a 95 % interval over the control's random draws.

    python examples/pruning_curve.py --data path/to/imagefolder --arch resnet18 --checkpoint model.pt
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms

from protoprune import (
    LRPImportance,
    RandomImportance,
    WeightImportance,
    oneshot_curve,
    paired_comparison,
)

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="ImageFolder of labelled images")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--checkpoint", help="a state_dict of your trained model (else random weights)")
    ap.add_argument("--ratios", default="0,0.1,0.2,0.3")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--draws", type=int, default=3, help="draws of the random control")
    args = ap.parse_args()

    tf = transforms.Compose([transforms.Resize((args.size, args.size)), transforms.ToTensor(),
                             transforms.Normalize(MEAN, STD)])  # fmt: skip
    data = torchvision.datasets.ImageFolder(args.data, tf)
    model = torchvision.models.get_model(args.arch, num_classes=len(data.classes))
    if args.checkpoint:
        model.load_state_dict(torch.load(args.checkpoint, map_location="cpu"))
    reference = list(DataLoader(data, batch_size=16))[:4]  # scoring batches (use held-out data)

    def balanced_accuracy(pruned: torch.nn.Module) -> float:
        y, p = [], []
        for x, t in DataLoader(data, batch_size=64):
            y.append(t)
            p.append(pruned(x).argmax(1))
        y, p = torch.cat(y), torch.cat(p)
        return float(torch.stack([(p[y == c] == c).float().mean() for c in y.unique()]).mean())

    bounds = (min(-m / s for m, s in zip(MEAN, STD)), max((1 - m) / s for m, s in zip(MEAN, STD)))
    ratios = [float(r) for r in args.ratios.split(",")]
    example = torch.zeros(1, 3, args.size, args.size)
    scored = oneshot_curve(model, {"lrp": LRPImportance(bounds=bounds), "weight": WeightImportance()},
                           reference, balanced_accuracy, ratios, example)  # fmt: skip
    draws = [oneshot_curve(model, {"random": RandomImportance(seed=d)}, reference, balanced_accuracy,
                           ratios, example).assign(run=d) for d in range(args.draws)]  # fmt: skip
    # each draw of the control is a unit; the deterministic criteria pair with every draw
    curve = pd.concat([scored.assign(run=d) for d in range(args.draws)] + draws)
    scored["MMACs"] = scored["macs"] / 1e6
    print(curve.pivot_table(index="ratio", columns="criterion", values="metric").round(3).to_string())
    print(scored[["criterion", "ratio", "filters_removed_ratio", "MMACs"]].round(3).to_string(index=False))
    print("LRP - random (balanced accuracy), 95 % interval over the control's draws:")
    print(paired_comparison(curve, "lrp", "random").round(3).to_string(index=False))


if __name__ == "__main__":
    main()
