"""Reports of pruning curves: the mean ± std tables, curve.md, curve.png and pooled runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..figures import CRITERION_COLOURS
from ..io import atomic_write_text
from ..prune.curve_stats import (
    curve_areas,
    curve_at_macs,
    curve_summary,
    equal_macs_differences,
    layer_removal,
    paired_differences,
)
from .tables import markdown_table


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {0 if np.isnan(std) else std:.3f}"


def curve_table(df: pd.DataFrame, metric: str = "test_balanced_accuracy") -> pd.DataFrame:
    """Wide table: one row per method x normalisation, one column per ratio, plus the area."""
    s = curve_summary(df, metric)
    areas = curve_areas(df, metric).groupby(["method", "normalize"], sort=False)["area"]
    rows = []
    for (m, n), g in s.groupby(["method", "normalize"], sort=False):
        row = {"method": m, "normalize": n}
        row.update({f"{r:.2f}": _pm(mu, sd) for r, mu, sd in zip(g["ratio"], g["mean"], g["std"])})
        a = areas.get_group((m, n))
        row["area"] = _pm(a.mean(), a.std())
        rows.append(row)
    return pd.DataFrame(rows)


def equal_macs_table(df: pd.DataFrame, metric: str = "test_balanced_accuracy") -> pd.DataFrame:
    """Mean ± std of each criterion's metric at 90/80/70/60 % of the unpruned MACs."""
    at = curve_at_macs(df, metric=metric)
    rows = []
    for (m, n), g in at.groupby(["method", "normalize"], sort=False):
        row = {"method": m, "normalize": n}
        for f, h in sorted(g.groupby("macs_fraction"), key=lambda kv: -kv[0]):  # 90 % first
            v = h["value"].dropna()  # units that reached it: n shown where some did not
            cell = _pm(v.mean(), v.std()) if len(v) else ""
            row[f"{f:.0%} MACs"] = cell + (f" (n = {len(v)})" if 0 < len(v) < len(h) else "")
        rows.append(row)
    return pd.DataFrame(rows)


def write_curve_report(df: pd.DataFrame, out: Path, title: str,
                       layers: pd.DataFrame | None = None) -> None:  # fmt: skip
    """curve.md (tables of test balanced accuracy and accuracy, areas, paired differences, the
    filters each criterion removes per layer group) and curve.png."""
    lines = [f"# {title}\n", "Mean ± std over reference-set draws"
             + (" and training seeds" if "run" in df.columns else "") + "; columns: fraction of "
             "filters removed (no fine-tuning); area: mean level of the curve (its area divided "
             "by the ratio span).\n"]  # fmt: skip
    for metric in [m for m in ("test_balanced_accuracy", "test_accuracy", "val_balanced_accuracy")
                   if m in df.columns]:  # fmt: skip
        lines += [f"\n## {metric.replace('_', ' ')}\n", markdown_table(curve_table(df, metric))]
    diffs = paired_differences(df)
    if len(diffs):
        lines += ["\n## Paired differences (test balanced accuracy), 95 % t confidence interval\n",
                  "Unit: the training run (its reference draws averaged) when runs are pooled, "
                  "else the draw; n: units.\n",
                  markdown_table(diffs, ".3f")]  # fmt: skip
    lines += ["\n## At equal compute: test balanced accuracy at a fraction of the unpruned MACs\n",
              "Each unit interpolated linearly in MACs between its cuts; blank: not reached.\n",
              markdown_table(equal_macs_table(df))]  # fmt: skip
    diffs = equal_macs_differences(df)
    if len(diffs):
        lines += ["\n## Paired differences at equal MACs, 95 % t confidence interval\n",
                  markdown_table(diffs, ".3f")]  # fmt: skip
    if layers is not None and len(layers):
        for ratio in sorted(r for r in set(layers["ratio"]) if r in (0.15, 0.3)):
            lines += [f"\n## Fraction of each layer group's filters removed at {ratio:.2f}\n",
                      markdown_table(layer_removal(layers, ratio), ".2f")]  # fmt: skip
    atomic_write_text(out / "curve.md", "\n".join(lines))
    plot_curve(df, out / "curve.png", title)


def plot_curve(df: pd.DataFrame, path: Path, title: str) -> Path:
    """Test balanced accuracy vs pruned ratio and vs MACs, bands = std, one colour a method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_save_figure

    s = curve_summary(df)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (m, n), g in s.groupby(["method", "normalize"], sort=False):
        colour = CRITERION_COLOURS.get(m)
        ls = "-" if n == "none" else "--"
        std = g["std"].fillna(0)
        for ax, x in zip(axes, (g["ratio"], g["macs"] / 1e6)):
            ax.plot(x, g["mean"], ls=ls, marker="o", ms=3, color=colour, label=f"{m} ({n})")
            ax.fill_between(x, g["mean"] - std, g["mean"] + std, color=colour, alpha=0.15)
    axes[0].set_xlabel("fraction of filters removed")
    axes[1].set_xlabel("MMACs per image")
    axes[1].invert_xaxis()
    for ax in axes:
        ax.set_ylabel("test balanced accuracy (no fine-tuning)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = atomic_save_figure(fig, path, dpi=150)
    plt.close(fig)
    return out


def summarize_curves(run_dirs: Sequence[str | Path], out_dir: str | Path) -> pd.DataFrame:
    """Pool the curves of several runs (e.g. one per training seed) into one report."""
    frames, layer_frames = [], []
    dirs = [Path(rd) for rd in run_dirs]
    names = [d.name for d in dirs]  # a study's units share a name (seed0/curve, seed1/curve)
    labels = names if len(set(names)) == len(names) else [str(d) for d in dirs]
    for rd, label in zip(dirs, labels):
        p = rd / "curve.csv"
        if not p.is_file():
            raise ConfigError(f"{rd} holds no curve.csv", "give folders written by `protoprune prune-curve`")
        frames.append(pd.read_csv(p).assign(run=label))
        if (rd / "curve_layers.csv").is_file():
            layer_frames.append(pd.read_csv(rd / "curve_layers.csv").assign(run=label))
    df = pd.concat(frames, ignore_index=True)
    layers = pd.concat(layer_frames, ignore_index=True) if layer_frames else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "curves.csv", df.to_csv(index=False))
    write_curve_report(df, out, f"Pruning curves pooled over {len(frames)} runs", layers)
    return df
