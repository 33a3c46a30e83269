"""What `prune_filters.lrp_batchnorm: train` (the reference's LRP wrapper as it runs) changes on
trained models, for docs/results.md: per seed, the Spearman correlation of the two modes' filter
scores on the same reference set, the overlap of their lowest-scored 15 % and 30 %, and the
no-fine-tune curve's area (test balanced accuracy, 0-60 %) of LRP in each mode, with the paired
difference train - eval over seeds (95 % t interval; draws of a seed averaged).

Usage: python scripts/lrp_batchnorm_effect.py RUNS_ROOT
  (RUNS_ROOT holds r18-sS/ baselines, curves/sS/ (eval) and curves-bntrain/sS/ (train) from
   `protoprune prune-curve`, as scripts/filter_pruning_results.sh lays them out)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from protoprune.metrics import mean_std, paired_t_interval
from protoprune.prune.curve_stats import curve_area
from protoprune.prune.filters import reference_set
from protoprune.prune.importance import LRPImportance
from protoprune.prune.relevance import input_bounds
from protoprune.train.checkpoint import checkpoint_config, load_checkpoint, model_from_checkpoint
from protoprune.train.run import prepare_data


def score_agreement(checkpoint: Path) -> dict[str, float]:
    ckpt = load_checkpoint(checkpoint)
    cfg = checkpoint_config(ckpt)
    loaders, _ = prepare_data(cfg)
    model = model_from_checkpoint(ckpt).eval()
    ref = reference_set(loaders.push.dataset, cfg.prune_filters.ref_per_class, 0, cfg.data.batch_size)
    bounds = input_bounds(cfg.data.mean, cfg.data.std)
    scores = {m: LRPImportance(bounds=bounds, batchnorm=m).prepare(model, ref) for m in ("eval", "train")}
    names = sorted(scores["eval"])
    a, b = (torch.cat([scores[m][n].flatten() for n in names]).numpy() for m in ("eval", "train"))
    out = {"spearman": float(spearmanr(a, b).statistic)}
    for q in (0.15, 0.3):
        k = int(q * len(a))
        low_a, low_b = set(np.argsort(a)[:k]), set(np.argsort(b)[:k])
        out[f"lowest_{int(q * 100)}_overlap"] = len(low_a & low_b) / k
    return out


def lrp_areas(folder: Path) -> pd.Series:
    df = pd.read_csv(folder / "curve.csv")
    df = df[(df["method"] == "lrp") & (df["normalize"] == "none")]
    return df.groupby("ref_seed").apply(
        lambda g: curve_area(g["ratio"].values, g["test_balanced_accuracy"].values), include_groups=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    root = ap.parse_args().root
    rows = []
    for base in sorted(root.glob("r18-s*")):
        s = base.name.removeprefix("r18-s")
        row = {"seed": s, **score_agreement(base / "checkpoints" / "best.pt")}
        row["area_eval"] = float(lrp_areas(root / "curves" / f"s{s}").mean())
        row["area_train"] = float(lrp_areas(root / "curves-bntrain" / f"s{s}").mean())
        rows.append(row)
    df = pd.DataFrame(rows)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    d = paired_t_interval(df["area_train"] - df["area_eval"])
    print(f"\nSpearman {mean_std(df['spearman'])}; lowest 15 % shared {mean_std(df['lowest_15_overlap'])}, "
          f"lowest 30 % shared {mean_std(df['lowest_30_overlap'])}")
    print(f"LRP curve area: eval {mean_std(df['area_eval'])}, train {mean_std(df['area_train'])}; "
          f"train - eval {d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] (n = {d['n']})")


if __name__ == "__main__":
    main()
