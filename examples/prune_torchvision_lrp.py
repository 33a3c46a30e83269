"""Prune a torchvision network by LRP relevance with Torch-Pruning's own pruner, beside magnitude.

Your model, your data, Torch-Pruning's `MetaPruner`: protoprune only supplies the criterion
(`protoprune.LRPImportance`, the relevance of Yeom et al. 2021), whose scores are refreshed on a
few reference batches before every step. The same loop with Torch-Pruning's
`MagnitudeImportance` is the comparison; a fine-tuning epoch would follow each step in practice.

    python examples/prune_torchvision_lrp.py --data path/to/imagefolder --arch resnet50

`--data` is an ImageFolder (one sub-folder of images per class). `--weights DEFAULT` starts from
torchvision's ImageNet weights (downloaded once to torch's cache) with a new classifier layer;
in practice give a model you trained on your data with `--checkpoint` (a state_dict).
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch_pruning as tp
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms

from protoprune import LRPImportance
from protoprune.models.pretrained import ensure_cached, torchvision_weights


def accuracy(model: torch.nn.Module, loader: DataLoader) -> float:
    model.eval()
    right = total = 0
    with torch.no_grad():
        for x, y in loader:
            right += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return right / total


def prune(model, importance, loader, reference, ratio: float, steps: int, size: int, refresh: bool):
    """Torch-Pruning's MetaPruner to `ratio` of the channels in `steps` steps."""
    example = torch.zeros(1, 3, size, size)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]  # keep the classes
    pruner = tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=ratio,
                                  iterative_steps=steps, ignored_layers=[last], global_pruning=True)
    for _ in range(steps):
        if refresh:  # protoprune's criteria score the current model: refresh before each step
            importance.prepare(model, reference)
        pruner.step()
        # ... fine-tune here (a few epochs on your training data) ...
    macs, params = tp.utils.count_ops_and_params(model, example)
    return {"accuracy": accuracy(model, loader), "MMACs": macs / 1e6, "params (M)": params / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="ImageFolder of labelled images")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--weights", default="DEFAULT", help="torchvision weights, or none")
    ap.add_argument("--checkpoint", help="a state_dict of your trained model")
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--reference-batches", type=int, default=4)
    args = ap.parse_args()

    tf = transforms.Compose([transforms.Resize((args.size, args.size)), transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    data = torchvision.datasets.ImageFolder(args.data, tf)
    loader = DataLoader(data, batch_size=32)
    reference = [b for _, b in zip(range(args.reference_batches), DataLoader(data, batch_size=16, shuffle=True))]
    weights = torchvision_weights(args.arch, args.weights) if args.weights != "none" else None
    if weights is not None:
        ensure_cached(weights)  # offline: names the file and where to put it
    model = torchvision.models.get_model(args.arch, weights=weights)
    head = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    parent = model.get_submodule(head[0].rpartition(".")[0]) if "." in head[0] else model
    setattr(parent, head[0].rpartition(".")[2], torch.nn.Linear(head[1].in_features, len(data.classes)))
    if args.checkpoint:
        model.load_state_dict(torch.load(args.checkpoint, map_location="cpu"))
    model.eval()

    print(f"{args.arch}, {len(data)} images of {len(data.classes)} classes: accuracy "
          f"{accuracy(model, loader):.3f} before pruning")
    # LRP's box rule needs the input range: the normalised values of pixels 0 and 1
    low, high = float(min(-m / s for m, s in zip(tf.transforms[2].mean, tf.transforms[2].std))), \
        float(max((1 - m) / s for m, s in zip(tf.transforms[2].mean, tf.transforms[2].std)))
    for name, importance, refresh in [
        ("LRP (protoprune)", LRPImportance(bounds=(low, high)), True),
        ("magnitude (torch-pruning)", tp.importance.MagnitudeImportance(p=1), False),
    ]:
        result = prune(copy.deepcopy(model), importance, loader, reference, args.ratio, args.steps,
                       args.size, refresh)
        print(f"{name:27s} " + "  ".join(f"{k} {v:.3f}" for k, v in result.items()))


if __name__ == "__main__":
    from protoprune.errors import ProtopruneError

    try:
        main()
    except ProtopruneError as exc:
        raise SystemExit(f"error: {exc}") from None
