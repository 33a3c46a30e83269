"""Compare iterative filter-pruning runs: one `prune-filters` folder per criterion and training seed.

The schedule's question is which criterion leaves the most accurate model once every step has been
fine-tuned, so the table pairs runs by their baseline checkpoint (one per training seed) and
reports, per criterion, the final accuracy and MACs (mean ± std over seeds), the accuracy at equal
MACs (criteria cut different layers, so equal filter ratios are not equal compute), how many
fine-tuning rounds stopped by patience before their cap, and the paired differences LRP − each
other criterion with 95 % t intervals. `protoprune prune-filters --summarize RUNS --out DIR`.
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
from ..io import atomic_write_text
from ..metrics import mean_std, paired_t_interval
from ..train.convergence import RULE

METRIC = "test_balanced_accuracy"
RETENTION_PANEL = "retention_topk_jaccard"  # a ProtoPNet's runs: the third panel (explain.retention)
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
    for col in (c for c in df.columns if c.startswith("retention_")):  # a ProtoPNet's retention:
        df.loc[df["step"] == 0, col] = 1.0  # step 0 is the unpruned model itself (1 by definition)
    for col in (c for c in df.columns if c.startswith("localisation_") and not c.endswith("_unpruned")):
        # step 0's localisation: the unpruned model's (and the chance level), recorded on every step
        source = f"{col}_unpruned" if f"{col}_unpruned" in df.columns else col
        first = df[df["step"] > 0].groupby("run")[source].first()
        df.loc[df["step"] == 0, col] = df.loc[df["step"] == 0, "run"].map(first)
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


def _label(metric: str) -> str:
    return metric.removeprefix("test_").replace("_", " ")


def criterion_table(finals: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Per criterion: mean ± std over seeds of the final metric, MACs and the metric at equal MACs."""
    rows, name = [], _label(metric)
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


def plot_schedules(df: pd.DataFrame, path: Path, metric: str = METRIC) -> Path:
    """Metric vs filters removed and vs MACs, mean over seeds (band: std); dashed: before fine-tuning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..figures import CRITERION_COLOURS
    from ..io import atomic_save_figure

    kept = RETENTION_PANEL if RETENTION_PANEL in df.columns and metric != RETENTION_PANEL else None
    fig, axes = plt.subplots(1, 3 if kept else 2, figsize=(16 if kept else 11, 4))
    for (m, n), g in df.groupby(["method", "normalize"], sort=False):
        g = g.assign(yp=g[f"{metric}_pruned"] if f"{metric}_pruned" in g else np.nan)
        s = g.groupby("step").agg(x=("pruned_ratio", "mean"), macs=("macs", "mean"), y=(metric, "mean"),
                                  sd=(metric, "std"), yp=("yp", "mean"))  # fmt: skip
        colour = CRITERION_COLOURS.get(m)
        label = m if n == "none" else f"{m} ({n})"
        for ax, x in zip(axes, (s["x"], s["macs"] / 1e6)):
            ax.plot(x, s["y"], marker="o", ms=3, color=colour, label=label)
            ax.fill_between(x, s["y"] - s["sd"].fillna(0), s["y"] + s["sd"].fillna(0), color=colour, alpha=0.15)
            if s["yp"].notna().any():
                ax.plot(x, s["yp"], ls="--", marker="x", ms=3, color=colour, alpha=0.6)
        if kept:  # the explanations kept, against the compute left
            r = g.groupby("step").agg(macs=("macs", "mean"), y=(kept, "mean"), sd=(kept, "std"))
            axes[2].plot(r["macs"] / 1e6, r["y"], marker="o", ms=3, color=colour, label=label)
            axes[2].fill_between(r["macs"] / 1e6, r["y"] - r["sd"].fillna(0), r["y"] + r["sd"].fillna(0),
                                 color=colour, alpha=0.15)  # fmt: skip
    axes[0].set_xlabel("fraction of filters removed")
    for ax in axes[1:]:
        ax.set_xlabel("MMACs per image")
        ax.invert_xaxis()
    for ax in axes:
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    if kept:
        axes[2].set_ylabel("explanation retention: top-3 evidence Jaccard")
        axes[2].set_ylim(0, 1.02)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Iterative filter pruning over {df['checkpoint'].nunique()} seeds: after each step's "
                 "fine-tuning (solid, band = std) and right after the cut (dashed)", fontsize=9)  # fmt: skip
    fig.tight_layout()
    out = atomic_save_figure(fig, path, dpi=150)
    plt.close(fig)
    return out


def summarize_schedules(run_dirs: Sequence[str | Path], out_dir: str | Path,
                        metric: str = METRIC) -> pd.DataFrame:  # fmt: skip
    """Write schedules.csv (every step of every run), schedules.md and schedules.png into `out_dir`."""
    from .filters import markdown_table

    df = load_runs(run_dirs)
    if metric not in df.columns:
        raise ConfigError(f"the runs have no column {metric!r}", f"choose one of: {', '.join(df.columns)}")
    tuned = df[df["step"] > 0]
    df["mean_epochs"] = df["run"].map(tuned.groupby("run")["finetune_epochs"].mean())
    finals = final_rows(df, metric)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "schedules.csv", df.to_csv(index=False))
    text = [f"# Iterative filter pruning: {df['run'].nunique()} runs, {df['checkpoint'].nunique()} baselines\n",
            f"Mean ± std over training seeds of the {_label(metric)} ({metric}) after the last step's "
            "fine-tuning, and interpolated (linearly in MACs, after fine-tuning) at the largest final "
            f"MACs of all runs. A round stopped by patience ended before its epoch cap. {RULE}\n",
            markdown_table(criterion_table(finals, metric)), "\n## Paired differences, 95 % t interval\n",
            markdown_table(paired_table(finals, metric=metric))]  # fmt: skip
    atomic_write_text(out / "schedules.md", "\n".join(text) + "\n")
    plot_schedules(df, out / "schedules.png", metric)
    return finals
