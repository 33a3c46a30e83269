"""Train a ProtoPNet on your own image folder from Python, explain an image, write the report.

The same pipeline as `protoprune train` with a ProtoPNet config, driven from Python: a config
(defaults, a YAML file, or overrides), `run_training` (trunk, warm-up and joint epochs, push,
last-layer stage), `explain_files` for any image, and `build_report` for the HTML report.

    python examples/protopnet_from_python.py --data path/to/imagefolder --out runs/my-protopnet

`--data` holds one sub-folder of images per class (or train/ val/ test/ sub-folders of those).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from protoprune.config import load_config
from protoprune.explain.analysis import explain_files
from protoprune.report.html import build_report
from protoprune.train.run import run_training


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", default="runs/protopnet-from-python", type=Path)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any config override, e.g. protopnet.joint_epochs=10")  # fmt: skip
    args = ap.parse_args()

    cfg = load_config(None, [  # or load_config("my.yaml", overrides)
        "model.type=protopnet", "model.arch=resnet18", "data.dataset=imagefolder",
        f"data.root={args.data}", f"data.image_size={args.size}", *args.set,
    ])  # fmt: skip
    results = run_training(cfg, args.out, force=True)
    print(f"test balanced accuracy {results['test']['balanced_accuracy']:.3f}")

    image = next(p for p in sorted(args.data.rglob("*")) if p.suffix.lower() in (".jpg", ".png"))
    explained = explain_files([args.out / "checkpoints" / "best.pt"], [image], args.out / "mine",
                              top=3, progress=False)  # fmt: skip
    print(f"{image.name}: predicted {explained[0]['predicted_class']}, explanation in "
          f"{args.out / 'mine' / explained[0]['figure']}")
    print(f"report: {build_report(args.out, samples=2)}")


if __name__ == "__main__":
    main()
