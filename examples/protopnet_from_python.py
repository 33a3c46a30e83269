"""Train a ProtoPNet on your own data from Python, explain an image, write the report.

The same pipeline as `protoprune train` with a ProtoPNet config, driven from Python: a config
(defaults, a YAML file, or overrides), `run_training` (trunk, warm-up and joint epochs, push,
last-layer stage), `explain_files` for any image, and `build_report` for the HTML report.

    python examples/protopnet_from_python.py --data path/to/imagefolder --out runs/my-protopnet
    python examples/protopnet_from_python.py --out runs/my-protopnet   # from a torch Dataset

`--data` holds one sub-folder of images per class (or train/ val/ test/ sub-folders of those).
Without it, the data comes from torch Datasets of (image, label), as yours may: here the bundled
DermaMNIST arrays behind a minimal Dataset. `write_image_folder` writes them once as files, which
every later step (the push's prototype images, explain, report, --resume) reads again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from protoprune.config import load_config
from protoprune.data.export import write_image_folder
from protoprune.explain.analysis import explain_files
from protoprune.report.html import build_report
from protoprune.train.run import run_training


class ArrayDataset(Dataset):
    """Yours instead: any Dataset whose items are (PIL image, uint8 array or [0, 1] tensor, label)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels.ravel()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def datasets_as_folder(folder: Path, limit: int | None) -> Path:
    """The Datasets written once as an image folder (reused when it is already there)."""
    if folder.is_dir():
        return folder
    from importlib import resources

    arrays = np.load(resources.files("protoprune") / "data" / "bundled" / "dermamnist_subset.npz")
    splits = {s: ArrayDataset(arrays[f"{s}_images"][:limit], arrays[f"{s}_labels"][:limit])
              for s in ("train", "val", "test")}  # fmt: skip
    classes = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]  # label 0..6
    return write_image_folder(splits, folder, classes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="an image folder (default: the Dataset route)")
    ap.add_argument("--limit", type=int, help="images per split on the Dataset route, for a quick try")
    ap.add_argument("--out", default="runs/protopnet-from-python", type=Path)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any config override, e.g. protopnet.joint_epochs=10")  # fmt: skip
    args = ap.parse_args()

    data = args.data or datasets_as_folder(Path(f"{args.out}-images"), args.limit)
    cfg = load_config(None, [  # or load_config("my.yaml", overrides)
        "model.type=protopnet", "model.arch=resnet18", "data.dataset=imagefolder",
        f"data.root={data}", f"data.image_size={args.size}", *args.set,
    ])  # fmt: skip
    results = run_training(cfg, args.out, force=True)
    print(f"test balanced accuracy {results['test']['balanced_accuracy']:.3f}")

    image = next(p for p in sorted(data.rglob("*")) if p.suffix.lower() in (".jpg", ".png"))
    explained = explain_files([args.out / "checkpoints" / "best.pt"], [image], args.out / "mine",
                              top=3, progress=False)  # fmt: skip
    print(f"{image.name}: predicted {explained[0]['predicted_class']}, explanation in "
          f"{args.out / 'mine' / explained[0]['figure']}")
    print(f"report: {build_report(args.out, samples=2)}")


if __name__ == "__main__":
    main()
