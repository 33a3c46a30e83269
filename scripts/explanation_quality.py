"""Explanation quality of trained ProtoPNet runs, one row per recipe (mean ± std over seeds).

Each RECIPE=RUN[,RUN...] names a recipe and its run folders (`protoprune train` outputs, one per
seed). For each run: the test metrics of its best checkpoint (metrics.json) and the explanation
metrics the study reports for a ProtoPNet arm (`explain.analysis.explanation_summary`: stability,
deletion AUC of the PRP / upsampled / random order, on-lesion shares, background share, purity,
distinct sources, near-duplicates, largest receptive-field share). The first recipe is the
reference: every other gets its paired difference (same seed) with a 95 % t interval. Then each
recipe's metrics beside their controls (chance level, random order, sanity limit;
`study.controls`), as the study reports them.

Writes <out>/explanation_quality.{csv,md} (and a per-run JSON cache, so a rerun only adds runs).
Usage: python scripts/explanation_quality.py today=runs/a-s0,runs/a-s1 new=runs/b-s0,runs/b-s1 --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from protoprune.config import load_config
from protoprune.explain.analysis import explanation_summary
from protoprune.io import atomic_write_json, atomic_write_text
from protoprune.metrics import mean_std, paired_t_interval
from protoprune.prune.relevance import input_bounds
from protoprune.seed import resolve_device
from protoprune.study.aggregate import EXPLANATION_COLUMNS
from protoprune.study.controls import controls_markdown, explanation_controls
from protoprune.train.checkpoint import model_from_checkpoint
from protoprune.train.run import prepare_data

# (heading, column): the test metrics, then the study's explanation-quality columns
COLUMNS = (("bal. acc.", "test_balanced_accuracy"), ("AUROC", "test_auroc_macro"), *EXPLANATION_COLUMNS)


def run_row(run: Path) -> dict:
    """Test metrics and explanation summary of one run folder, cached in
    <run>/explanation_quality.json (recomputed when the run's metrics.json is newer)."""
    cache = run / "explanation_quality.json"
    if cache.is_file() and cache.stat().st_mtime >= (run / "metrics.json").stat().st_mtime:
        return json.loads(cache.read_text())
    cfg = load_config(run / "config.yaml")
    device = resolve_device(cfg.train.device)
    loaders, _ = prepare_data(cfg)
    model = model_from_checkpoint(run / "checkpoints" / "best.pt")
    test = json.loads((run / "metrics.json").read_text())["test"]
    row = {"run": run.name, "seed": cfg.seed, **{f"test_{k}": v for k, v in test.items()
                                                  if isinstance(v, (int, float))}}  # fmt: skip
    bounds = input_bounds(cfg.data.mean, cfg.data.std)
    row.update(explanation_summary(model, loaders, cfg.prune_prototypes.k, device, bounds=bounds))
    atomic_write_json(cache, row)
    return row


def _cell(values: pd.Series) -> str:
    return mean_std(values) if values.notna().any() else "n/a"


def tables(df: pd.DataFrame) -> str:
    recipes = list(dict.fromkeys(df["recipe"]))
    cols = [(h, c) for h, c in COLUMNS if c in df]
    lines = ["| recipe | seeds | " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for r in recipes:
        sub = df[df["recipe"] == r]
        lines.append(f"| {r} | {len(sub)} | " + " | ".join(_cell(sub[c]) for _, c in cols) + " |")
    ref = df[df["recipe"] == recipes[0]].set_index("seed")
    for r in recipes[1:]:
        other = df[df["recipe"] == r].set_index("seed")
        seeds = ref.index.intersection(other.index)
        lines += ["", f"{r} − {recipes[0]} (paired by seed, n = {len(seeds)}, 95 % t interval):", "",
                  "| metric | difference |", "|---|---|"]  # fmt: skip
        for h, c in cols:
            t = paired_t_interval((other.loc[seeds, c] - ref.loc[seeds, c]).astype(float))
            ci = f" [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}]" if t["n"] > 1 else ""
            lines.append(f"| {h} | {t['mean']:+.3f}{ci} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="+", help="NAME=RUN[,RUN...]")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    runs = []
    for item in args.recipes:
        name, _, folders = item.partition("=")
        if not folders:
            ap.error(f"{item!r}: expected NAME=RUN[,RUN...]")
        runs += [(name, Path(f)) for f in folders.split(",")]
    for _, run in runs:  # every folder checked before the long work starts
        if not (run / "metrics.json").is_file():
            ap.error(f"{run}: not a finished run folder (no metrics.json)")
    df = pd.DataFrame([{"recipe": name, **run_row(run)} for name, run in runs])
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "explanation_quality.csv", df.replace({np.nan: None}).to_csv(index=False))
    text = tables(df) + "\n".join(controls_markdown(explanation_controls(
        df.assign(arch=df["recipe"], arm="protopnet", method="", status="ok")))) + "\n"  # fmt: skip
    atomic_write_text(args.out / "explanation_quality.md", text)
    print(text)


if __name__ == "__main__":
    main()
