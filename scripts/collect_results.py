"""Collect the run folders of scripts/filter_pruning_results.sh into docs/results.md's tables.

Prints the tables as markdown and copies each section's figure, drawn by the same code that draws
the run's own plots, into --figures:
  baseline_training_curves.png        the seed-0 baseline's training_curves.png (`protoprune train`)
  pruning_curve_resnet18_dermamnist.png   `prune-curve --summarize` over the three seeds
  pruning_schedule_resnet18_dermamnist.png   `prune-filters --summarize` over the 15 runs

Usage: python scripts/collect_results.py RUNS_ROOT [--figures docs/figures]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd

from protoprune.report.curves import summarize_curves
from protoprune.report.pruning import summarize_schedules
from protoprune.report.tables import markdown_table

HEADLINE = ("accuracy", "balanced_accuracy", "auroc_macro", "melanoma_sensitivity")


def baseline_table(root: Path) -> pd.DataFrame:
    rows = []
    for rd in sorted(root.glob("r18-s*")):
        m = json.loads((rd / "metrics.json").read_text())
        rows.append({"seed": rd.name.split("-s")[-1], "best epoch": m["best_epoch"],
                     **{k: m["test"][k] for k in HEADLINE}})  # fmt: skip
    df = pd.DataFrame(rows)
    mean, std = df[list(HEADLINE)].mean(), df[list(HEADLINE)].std(ddof=1)
    summary = {"seed": "mean ± std", "best epoch": "",
               **{k: f"{mean[k]:.3f} ± {std[k]:.3f}" for k in HEADLINE}}  # fmt: skip
    return pd.concat([df, pd.DataFrame([summary])], ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--figures", type=Path, default=Path("docs/figures"))
    args = ap.parse_args()
    root, figs = args.root, args.figures
    figs.mkdir(parents=True, exist_ok=True)

    print("## Baseline (test split)\n")
    print(markdown_table(baseline_table(root), ".3f"))
    shutil.copy(root / "r18-s0" / "training_curves.png", figs / "baseline_training_curves.png")

    curves = sorted(p for p in (root / "curves").glob("s*") if (p / "curve.csv").is_file())
    summarize_curves(curves, root / "curves" / "pooled")
    print((root / "curves" / "pooled" / "curve.md").read_text())
    shutil.copy(root / "curves" / "pooled" / "curve.png", figs / "pruning_curve_resnet18_dermamnist.png")

    runs = sorted(p for p in (root / "schedule").glob("s*-*") if (p / "results.json").is_file())
    if runs:
        summarize_schedules(runs, root / "schedule" / "summary")
        print((root / "schedule" / "summary" / "schedules.md").read_text())
        shutil.copy(root / "schedule" / "summary" / "schedules.png",
                    figs / "pruning_schedule_resnet18_dermamnist.png")  # fmt: skip
    bench = root / "bench_filter_pruning.json"
    if bench.is_file():
        print("## bench_filter_pruning\n\n```json\n" + bench.read_text() + "\n```")


if __name__ == "__main__":
    main()
