"""Compare iterative filter-pruning runs: one `prune-filters` folder per criterion and training seed.

The schedule's question is which criterion leaves the most accurate model once every step has been
fine-tuned, so the table pairs runs by their baseline checkpoint (one per training seed) and
reports, per criterion, the final accuracy and MACs (mean ± std over seeds), the accuracy at equal
MACs (criteria cut different layers, so equal filter ratios are not equal compute), how many
fine-tuning rounds stopped by patience before their cap, and the paired differences LRP − each
other criterion with 95 % t intervals. `report.pruning.summarize_schedules` writes them
(`protoprune prune-filters --summarize RUNS --out DIR`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..errors import ConfigError
from ..metrics import mean_std, paired_t_interval
from .curve_stats import fill_unpruned_step

METRIC = "test_balanced_accuracy"
log = logging.getLogger(__name__)


def load_runs(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """Every step of every run, with its criterion, normalisation, baseline checkpoint and seed.

    Runs without a pruned step (interrupted at step 0) are left out with a warning: their only
    row is the baseline, which would pass for an equal-MACs result."""
    dirs = [Path(rd) for rd in run_dirs]
    names = [d.name for d in dirs]  # folders of one name (s0/lrp, s1/lrp): label them by path
    labels = names if len(set(names)) == len(names) else [str(d) for d in dirs]
    frames = []
    for rd, label in zip(dirs, labels):
        if not (rd / "results.csv").is_file() or not (rd / "results.json").is_file():
            raise ConfigError(f"{rd} holds no results.csv/results.json",
                              "give folders written by `protoprune prune-filters`")  # fmt: skip
        meta = json.loads((rd / "results.json").read_text())
        cfg = yaml.safe_load((rd / "config.yaml").read_text()) if (rd / "config.yaml").is_file() else {}
        df = pd.read_csv(rd / "results.csv")
        if not (df["step"] > 0).any():
            log.warning("%s has no pruned step yet: left out of the comparison", rd)
            continue
        checkpoint = str(Path(meta["checkpoint"]).resolve())  # relative and absolute paths pair
        frames.append(df.assign(run=label, method=meta["method"], normalize=meta.get("normalize", "none"),
                                checkpoint=checkpoint, seed=cfg.get("seed"),
                                cap=meta.get("epochs"), patience=meta.get("patience")))  # fmt: skip
    if not frames:
        raise ConfigError("none of the runs has a pruned step", "let prune-filters finish at least one step")
    df = pd.concat(frames, ignore_index=True)
    # absent when no step was fine-tuned (finetune_flat: also in runs from before it was recorded)
    for col in ("finetune_epochs", "finetune_seconds", "finetune_flat"):
        if col not in df.columns:
            df[col] = np.nan
    fill_unpruned_step(df)  # a ProtoPNet's retention and localisation at step 0
    dup = df[df["step"] == 0].duplicated(["method", "normalize", "checkpoint"])
    if dup.any():
        raise ConfigError("two runs have the same criterion and baseline checkpoint",
                          "give one run per criterion and training seed")  # fmt: skip
    return df


def accuracy_at_macs(run: pd.DataFrame, macs: float, metric: str = METRIC) -> float:
    """A run's metric after fine-tuning, linearly interpolated between its steps at `macs`."""
    r = run.sort_values("macs")
    if not r["macs"].min() <= macs <= r["macs"].max():
        return float("nan")
    return float(np.interp(macs, r["macs"], r[metric]))


def final_rows(df: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """One row per run: its last step, its metric at the common MACs, and its stopping record."""
    finals = df.loc[df.groupby("run")["step"].idxmax()].copy()
    common = float(finals["macs"].max())  # every run's curve reaches the least-pruned final MACs
    at = {r: accuracy_at_macs(g, common, metric) for r, g in df.groupby("run")}
    tuned = df[df["step"] > 0]
    stopped = tuned["patience"].notna() & (tuned["finetune_epochs"] < tuned["cap"].astype(float))
    early = tuned.assign(early=stopped).groupby("run")["early"].agg(["sum", "count"])
    finals["at_common_macs"] = finals["run"].map(at)
    finals["common_macs"] = common
    finals["stopped_early"] = finals["run"].map(early["sum"]).astype(int)
    finals["steps_tuned"] = finals["run"].map(early["count"]).astype(int)
    recorded = tuned.dropna(subset=["finetune_flat"])  # train.convergence.plateau of each round
    flat = recorded.assign(f=recorded["finetune_flat"].astype(bool)).groupby("run")["f"].agg(["sum", "count"])
    finals["flat_rounds"] = finals["run"].map(flat["sum"])
    finals["flat_recorded"] = finals["run"].map(flat["count"])
    return finals.reset_index(drop=True)


def metric_label(metric: str) -> str:
    """A metric's name in a table heading: test_balanced_accuracy -> balanced accuracy."""
    return metric.removeprefix("test_").replace("_", " ")


def criterion_table(finals: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Per criterion: mean ± std over seeds of the final metric, MACs and the metric at equal MACs."""
    rows, name = [], metric_label(metric)
    for (m, n), g in finals.groupby(["method", "normalize"], sort=False):
        rows.append({
            "criterion": m, "normalize": n, "seeds": len(g),
            "removed": mean_std(g["pruned_ratio"], ".2f"),
            f"final {name}": mean_std(g[metric]),
            f"{name} before the last fine-tune": mean_std(g[f"{metric}_pruned"]) if f"{metric}_pruned" in g else "",
            "MMACs": mean_std(g["macs"] / 1e6, ".0f"),
            f"{name} at {g['common_macs'].iloc[0] / 1e6:.0f} MMACs": mean_std(g["at_common_macs"]),
            "rounds stopped by patience": f"{int(g['stopped_early'].sum())} of {int(g['steps_tuned'].sum())}",
            "rounds flat at the end": (f"{int(g['flat_rounds'].sum())} of {int(g['flat_recorded'].sum())}"
                                       if g["flat_recorded"].notna().any() else "n/a"),
            "fine-tune epochs per round": f"{g['mean_epochs'].mean():.1f}",
        })  # fmt: skip
    return pd.DataFrame(rows)


def paired_table(finals: pd.DataFrame, reference: str = "lrp", metric: str = METRIC) -> pd.DataFrame:
    """LRP (or `reference`) − each other criterion, paired by baseline checkpoint, 95 % t CI."""
    rows = []
    ref = finals[finals["method"] == reference].set_index(["checkpoint", "normalize"])
    for (m, n), g in finals[finals["method"] != reference].groupby(["method", "normalize"], sort=False):
        other = g.set_index(["checkpoint", "normalize"])
        for label, col in (("final", metric), ("at equal MACs", "at_common_macs")):
            joined = ref[[col]].join(other[[col]].rename(columns={col: f"{col}_b"}), how="inner")
            d = paired_t_interval((joined[col] - joined[f"{col}_b"]).to_numpy())
            rows.append({"difference": f"{reference} − {m}", "normalize": n, "compared": label, "n": d["n"],
                         "mean": f"{d['mean']:+.3f}",
                         "95 % CI": f"n/a ({d['n']} pairs)" if d["n"] < 2
                         else f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"})  # fmt: skip
    return pd.DataFrame(rows)
