"""The study's figures (matplotlib, Agg): pruning curves, accuracy and latency vs MACs, recall,
and a pruned ProtoPNet's front of accuracy and explanation retention against MACs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..figures import CRITERION_COLOURS  # noqa: E402
from ..io import atomic_save_figure  # noqa: E402
from ..names import RETENTION_MEASURE_NAMES  # noqa: E402
from ..prune.curve_stats import fill_unpruned_step  # noqa: E402
from .aggregate import arm_label  # noqa: E402

# one colour per arm (filter pruning: per criterion) in every figure, whatever the arms present
ARM_COLOURS = {
    ("baseline", None): "tab:blue",
    **{("filter", m): c for m, c in CRITERION_COLOURS.items()},
    ("protopnet", None): "tab:brown",
    ("protopnet_pruned", None): "tab:pink",
    ("protopnet_filter", "lrp"): "tab:olive",
    ("protopnet_filter", "weight"): "tab:cyan",
    ("protopnet_filter", "grad"): "darkkhaki",
    ("protopnet_filter", "taylor"): "black",
    ("protopnet_filter", "random"): "silver",
}
ARCH_MARKERS = ("o", "s", "^", "D", "v", "P")  # several architectures: one marker each


def arm_colour(arm: str, method: str | None) -> str:
    """The arm's colour in every figure (an arm unknown here: grey-blue)."""
    if not isinstance(method, str) or not method:  # the rows hold "" (or NaN) for no criterion
        method = None
    return ARM_COLOURS.get((arm, method), "#5f7f9f")


def _marker(archs: list[str], arch: str) -> str:
    return ARCH_MARKERS[sorted(archs).index(arch) % len(ARCH_MARKERS)]


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    path = atomic_save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def _empty(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777")


def plot_pruning_curves(curves: pd.DataFrame, path: Path, metric: str = "test_accuracy") -> Path:
    """`metric` vs fraction of filters removed, one colour per criterion, mean over seeds (band: std).

    Solid: after fine-tuning; dashed: right after pruning (before fine-tuning).
    """
    archs = sorted(curves["arch"].unique()) if len(curves) else [""]
    fig, axes = plt.subplots(1, len(archs), figsize=(6 * len(archs), 4), squeeze=False)
    for ax, arch in zip(axes[0], archs):
        sub = curves[curves["arch"] == arch] if len(curves) else curves
        if not len(sub):  # e.g. a study of baseline vs ProtoPNet only: curves has no columns
            _empty(ax, "no filter-pruning runs")
        groups = sub.groupby(["arm", "method"], sort=False) if len(sub) else []
        for (arm, method), g in groups:
            stats = g.groupby("step").agg(
                x=("pruned_ratio", "mean"), y=(metric, "mean"), s=(metric, "std"),
                yp=(f"{metric}_pruned", "mean"),
            )  # fmt: skip
            (line,) = ax.plot(stats.x, stats.y, marker="o", label=arm_label(arm, method),
                              color=arm_colour(arm, method))  # fmt: skip
            ax.fill_between(stats.x, stats.y - stats.s.fillna(0), stats.y + stats.s.fillna(0),
                            color=line.get_color(), alpha=0.15)  # fmt: skip
            ax.plot(stats.x, stats.yp, ls="--", marker="x", color=line.get_color(), alpha=0.7)
        ax.set_title(f"{arch}: {metric.replace('_', ' ')} (dashed: before fine-tuning)")
        ax.set_xlabel("fraction of filters removed")
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
        if len(sub):
            ax.legend(fontsize=8)
    return _save(fig, path)


def _final_points(per_seed: pd.DataFrame, y: str) -> pd.DataFrame:
    ok = per_seed[(per_seed["status"] == "ok") & per_seed[y].notna() & per_seed["macs"].notna()]
    return ok.groupby(["arch", "arm", "method"], sort=False).agg(
        x=("macs", "mean"), y=(y, "mean"), s=(y, "std")
    ).reset_index()  # fmt: skip


def plot_metric_vs_macs(
    per_seed: pd.DataFrame, curves: pd.DataFrame, path: Path, y: str, ylabel: str, title: str
) -> Path:
    """Each arm's final models (mean over seeds, error bar: std); pruning steps as thin lines."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if y in curves.columns and len(curves):
        for _, g in curves.groupby(["arch", "method"], sort=False):
            stats = g.groupby("step").agg(x=("macs", "mean"), y=(y, "mean"))
            ax.plot(stats.x / 1e6, stats.y, color="#bbb", lw=1, zorder=1)
    points = (
        _final_points(per_seed, y)
        if y in per_seed.columns and "macs" in per_seed
        else pd.DataFrame()
    )
    if not len(points):
        _empty(ax, f"no {ylabel} measured")
    archs = sorted(points["arch"].unique()) if len(points) else []
    for _, p in points.iterrows():
        label = f"{p['arch']}: {arm_label(p['arm'], p['method'])}"
        ax.errorbar(p["x"] / 1e6, p["y"], yerr=0 if np.isnan(p["s"]) else p["s"],
                    fmt=_marker(archs, p["arch"]), color=arm_colour(p["arm"], p["method"]),
                    capsize=3, label=label, zorder=2)  # fmt: skip
    ax.set_xlabel("MMACs per image")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(points):
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def plot_per_class_recall(per_seed: pd.DataFrame, path: Path) -> Path:
    """Test recall per class and arm (mean over seeds, error bar: std): who loses which class."""
    cols = [c for c in per_seed.columns if c.startswith("recall_")]
    ok = per_seed[per_seed["status"] == "ok"]
    groups = list(ok.groupby(["arch", "arm", "method"], sort=False))
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(cols)), 4.5))
    if not cols or not groups:
        _empty(ax, "no per-class recall")
    width = 0.8 / max(1, len(groups))
    x = np.arange(len(cols))
    archs = sorted({arch for (arch, _, _), _ in groups})
    hatches = {a: h for a, h in zip(archs, ("", "//", "..", "xx", "\\\\", "++"))}
    for i, ((arch, arm, method), g) in enumerate(groups):
        means = g[cols].astype(float).mean().to_numpy()
        stds = g[cols].astype(float).std().fillna(0).to_numpy()
        ax.bar(x + i * width - 0.4 + width / 2, means, width, yerr=stds, capsize=2,
               color=arm_colour(arm, method), hatch=hatches.get(arch, ""),
               label=f"{arch}: {arm_label(arm, method)}")  # fmt: skip
    ax.set_xticks(x, [c[len("recall_") :] for c in cols])
    ax.set_ylabel("test recall")
    ax.set_ylim(0, 1.05)
    ax.set_title("Per-class recall (mean over seeds)")
    ax.grid(alpha=0.3, axis="y")
    if groups:
        ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def at_common_macs(g: pd.DataFrame, y: str, points: int = 25) -> pd.DataFrame:
    """One criterion's `y` over its seeds at equal compute: each seed's step curve interpolated
    linearly in MACs onto a common grid over the range every seed reaches; mean and sample std
    (NaN for one seed) per grid point. Steps where `y` is missing are left out."""
    runs = [r.dropna(subset=[y, "macs"]).sort_values("macs") for _, r in g.groupby("seed")]
    runs = [r for r in runs if len(r)]
    if not runs:
        return pd.DataFrame(columns=["macs", "mean", "std", "seeds"])
    lo, hi = max(r["macs"].min() for r in runs), min(r["macs"].max() for r in runs)
    grid = np.linspace(lo, hi, points) if hi > lo else np.array([hi])
    ys = np.stack([np.interp(grid, r["macs"].to_numpy(float), r[y].to_numpy(float)) for r in runs])
    std = ys.std(axis=0, ddof=1) if len(runs) > 1 else np.full(len(grid), np.nan)
    return pd.DataFrame({"macs": grid, "mean": ys.mean(axis=0), "std": std, "seeds": len(runs)})


# the front's panels: the headline, the PRP heatmaps' localisation, then each explanation
# retention measure (explain.retention); the last cell of the grid holds the legend
FRONT_PANELS = {"test_balanced_accuracy": "test balanced accuracy",
                "localisation_on_lesion": "PRP heatmap mass on the lesion",
                **{f"retention_{m}": f"retention: {m.replace('_', ' ')}" for m in RETENTION_MEASURE_NAMES}}  # fmt: skip


def _front_criterion(ax: plt.Axes, g: pd.DataFrame, col: str, colour: str, label: str) -> None:
    """One criterion's seeds: the band between its pruned steps (interpolated at equal MACs, as
    the table is), a marker at each step's mean, and a dashed line from the unpruned model, where
    no model was measured (one repair alone moves prototypes: the repair control)."""
    pruned = at_common_macs(g[g["step"] > 0], col)
    steps = g.groupby("step").agg(x=("macs", "mean"), y=(col, "mean")).dropna()
    x, y = pruned["macs"] / 1e6, pruned["mean"]
    ax.plot(x, y, color=colour, label=label)
    ax.fill_between(x, y - pruned["std"].fillna(0), y + pruned["std"].fillna(0), color=colour, alpha=0.15)
    ax.plot(steps["x"] / 1e6, steps["y"], "o", color=colour, markersize=4)
    if 0 in steps.index and len(pruned):
        first = pruned["macs"].idxmax()
        ax.plot([steps.loc[0, "x"] / 1e6, x[first]], [steps.loc[0, "y"], y[first]], "--", color=colour, lw=1)


def _front_control(ax: plt.Axes, control: pd.DataFrame, col: str, macs: float) -> None:
    """The unpruned model after k repairs (k = 1, 2, ...), drawn at the unpruned MACs."""
    means = control[control["step"] > 0].groupby("step")[col].mean()
    if means.empty:
        return
    ax.plot([macs / 1e6] * len(means), means, "x", color="#d62728", markersize=7, label="repair only, no pruning")
    for k, v in means.items():
        ax.annotate(f"{k}", (macs / 1e6, v), xytext=(5, 0), textcoords="offset points", fontsize=7, va="center")


def plot_retention_front(curves: pd.DataFrame, path: Path, control: pd.DataFrame | None = None) -> Path:
    """A ProtoPNet's trunk pruning per criterion: balanced accuracy, the PRP heatmaps' mass on the
    lesion and each retention measure (1 = the unpruned model's explanations) against MACs, mean
    over seeds (band: std) and, given `scripts/repair_control.py`'s curves, the repair control."""
    sub = curves[curves["arm"] == "protopnet_filter"].copy() if "arm" in curves.columns else curves.iloc[:0]
    if len(sub):  # step 0 is the unpruned model: retention 1, its own localisation
        unit = sub["arch"].astype(str) + "/seed" + sub["seed"].astype(str) + "/" + sub["method"].astype(str)
        sub = fill_unpruned_step(sub.assign(unit=unit), unit="unit")
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5), squeeze=False)
    for ax, (col, label) in zip(axes.ravel(), FRONT_PANELS.items()):
        have = col in sub.columns and sub[col].notna().any()
        if not have:
            _empty(ax, "no ProtoPNet trunk-pruning runs" if not len(sub) else f"{label}: not measured")
        for (arch, method), g in (sub.groupby(["arch", "method"], sort=False) if have else []):
            _front_criterion(ax, g, col, arm_colour("protopnet_filter", method),
                             f"{arch}: {arm_label('protopnet_filter', method)}")  # fmt: skip
        if have and control is not None and col in control.columns:
            _front_control(ax, control, col, float(sub.loc[sub["step"] == 0, "macs"].mean()))
        if have and col == "localisation_on_lesion" and "localisation_on_lesion_chance" in sub.columns:
            ax.axhline(sub["localisation_on_lesion_chance"].mean(), color="#777", ls=":", lw=1,
                       label="chance: the lesion's share of the image")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("MMACs per image")
        ax.grid(alpha=0.3)
    legend = axes.ravel()[-1]
    legend.axis("off")
    handles = {lab: h for ax in axes.ravel()[:-1] for h, lab in zip(*ax.get_legend_handles_labels())}
    if handles:  # one legend: the colours are the same in every panel
        handles["unpruned model to the first step: no model measured between"] = plt.Line2D([], [], ls="--", color="#555")
        legend.legend(handles.values(), handles.keys(), loc="center", fontsize=8, frameon=False)
    fig.suptitle("ProtoPNet trunk pruning: accuracy and explanations kept, against MACs "
                 "(mean over seeds at each step, band: std between the pruned steps)", fontsize=11)  # fmt: skip
    return _save(fig, path)


def write_plots(out: Path, per_seed: pd.DataFrame, curves: pd.DataFrame) -> dict[str, Path]:
    """Every figure of the report, next to index.html; returns {name: path}."""
    lat = sorted((c for c in per_seed.columns if c.startswith("latency_ms_b")),
                 key=lambda c: int(c.rsplit("b", 1)[1]))  # fmt: skip
    plots = {
        "accuracy_vs_ratio": plot_pruning_curves(curves, out / "accuracy_vs_ratio.png"),
        "balanced_accuracy_vs_ratio": plot_pruning_curves(
            curves, out / "balanced_accuracy_vs_ratio.png", "test_balanced_accuracy"
        ),
        "accuracy_vs_macs": plot_metric_vs_macs(
            per_seed, curves, out / "accuracy_vs_macs.png", "test_accuracy", "test accuracy",
            "Accuracy vs compute (grey: pruning steps)",
        ),
        "latency_vs_macs": plot_metric_vs_macs(
            per_seed, pd.DataFrame(), out / "latency_vs_macs.png", lat[0] if lat else "latency",
            f"CPU latency, {lat[0].rsplit('_', 1)[1] if lat else ''} (ms)", "Measured latency vs MACs",
        ),
        "per_class_recall": plot_per_class_recall(per_seed, out / "per_class_recall.png"),
        "retention_front": plot_retention_front(curves, out / "retention_front.png"),
    }  # fmt: skip
    return plots
