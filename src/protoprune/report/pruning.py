"""Reports of iterative filter-pruning runs: one figure of several runs, and the comparison of
runs per criterion and training seed (schedules.md, .csv, .png) from the tables of `prune.compare`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..io import atomic_write_text
from ..prune.compare import (
    METRIC,
    criterion_table,
    final_rows,
    load_runs,
    metric_label,
    paired_table,
)
from ..train.convergence import RULE
from .tables import markdown_table

RETENTION_PANEL = "retention_topk_jaccard"  # a ProtoPNet's runs: the third panel (explain.retention)


def plot_pruning_curves(
    run_dirs: Sequence[str | Path],
    out_path: str | Path,
    metric: str = "test_accuracy",
    title: str | None = None,
) -> Path:
    """Accuracy (or another results column) vs removed-filter ratio, one line per run (criterion)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    for rd in run_dirs:
        rd = Path(rd)
        if not (rd / "results.csv").is_file():
            raise ConfigError(
                f"{rd} holds no results.csv", "give folders written by `protoprune prune-filters`"
            )
        df = pd.read_csv(rd / "results.csv")
        if metric not in df.columns:
            raise ConfigError(
                f"{rd / 'results.csv'} has no column {metric!r}",
                f"choose one of: {', '.join(df.columns)}",
            )
        import json

        meta = (
            json.loads((rd / "results.json").read_text()) if (rd / "results.json").is_file() else {}
        )
        label = f"{meta.get('method', rd.name)} ({meta.get('scope', '?')})"
        ax.plot(df["pruned_ratio"], df[metric], marker="o", label=label)
        if f"{metric}_pruned" in df.columns:  # before fine-tuning, dashed, same colour
            ax.plot(
                df["pruned_ratio"],
                df[f"{metric}_pruned"],
                ls="--",
                color=ax.lines[-1].get_color(),
                alpha=0.6,
            )
    ax.set_xlabel("fraction of filters removed")
    ax.set_ylabel(metric.replace("_", " ") + " (dashed: before fine-tuning)")
    ax.set_title(title or "Filter pruning")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = atomic_save_figure(fig, out_path, dpi=150)
    plt.close(fig)
    return path


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
            f"Mean ± std over training seeds of the {metric_label(metric)} ({metric}) after the last step's "
            "fine-tuning, and interpolated (linearly in MACs, after fine-tuning) at the largest final "
            f"MACs of all runs. A round stopped by patience ended before its epoch cap. {RULE}\n",
            markdown_table(criterion_table(finals, metric)), "\n## Paired differences, 95 % t interval\n",
            markdown_table(paired_table(finals, metric=metric))]  # fmt: skip
    atomic_write_text(out / "schedules.md", "\n".join(text) + "\n")
    plot_schedules(df, out / "schedules.png", metric)
    return finals
