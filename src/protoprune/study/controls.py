"""Each explanation metric of the study beside its control, over seeds.

A localisation number means something only beside what a map that ignores the image scores on
the same images (its chance level: the lesion's area share, or the top-area IoU's chance); a
heatmap's deletion or insertion curve only beside the random order's; the background flag only
beside the share the border rule flags on the grid's geometry alone; a sanity check's rank
correlation only beside the limit above which a map "did not change" when the model did. Per
ProtoPNet arm and metric: the mean over seeds with its 95 % t interval, the control's mean, and
metric minus control paired by seed with its 95 % t interval, and which way it fell.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..explain.sanity import SANITY_LIMIT
from ..io import atomic_write_text
from ..metrics import paired_t_interval
from .aggregate import arm_label

HIGHER, LOWER = "higher", "lower"  # which way of the control is better
SETS = (("", "source images"), ("test_", "nearest test images"))
MAPS = (("prp", "PRP"), ("upsample", "upsampled"))


def _localisation() -> list[tuple[str, str, str | float, str]]:
    rows = []
    for prefix, images in SETS:
        for measure, name, chance in (("on_lesion", "on-lesion share", "on_lesion"),
                                      ("pointing", "pointing game", "pointing"),
                                      ("top_iou", "top-area IoU", "top_iou")):  # fmt: skip
            rows += [(f"{name}, {label}, {images}", f"expl_mean_{prefix}{measure}_{kind}",
                      f"expl_chance_{prefix}{chance}", HIGHER) for kind, label in MAPS]  # fmt: skip
    return rows


def _orders() -> list[tuple[str, str, str | float, str]]:
    rows = []
    for variant, name, better in (("deletion_auc", "deletion AUC, mean-colour substrate", LOWER),
                                  ("blur_deletion_auc", "deletion AUC, blurred substrate", LOWER),
                                  ("blur_insertion_auc", "insertion AUC, blurred substrate", HIGHER)):  # fmt: skip
        rows += [(f"{name}, {label} order", f"expl_mean_{variant}_{kind}",
                  f"expl_mean_{variant}_random", better) for kind, label in MAPS]  # fmt: skip
    return rows


def _sanity() -> list[tuple[str, str, str | float, str]]:
    return [(f"sanity: {label} map, {what} randomised", f"expl_sanity_{test}_{kind}", SANITY_LIMIT, LOWER)
            for test, what in (("cascade", "trunk and add-on"), ("prototypes", "prototypes"))
            for kind, label in MAPS]  # fmt: skip


# (what, metric column, control column or constant, which way of the control is better)
CONTROLS: tuple[tuple[str, str, str | float, str], ...] = (
    *_localisation(),
    ("source box on the lesion", "expl_mean_source_box_on_lesion", "expl_chance_on_lesion", HIGHER),
    ("background flag share", "expl_background_share", "expl_background_base_rate", LOWER),
    *_orders(),
    *_sanity(),
)


def _verdict(low: float, high: float, better: str) -> str:
    """Which way the metric fell against its control, by the paired interval."""
    if math.isnan(low) or math.isnan(high):
        return "too few seeds"
    if low > 0 or high < 0:
        good = (low > 0) == (better == HIGHER)
        return "better than control" if good else "worse than control"
    return "not distinguishable"


def _row(df: pd.DataFrame, what: str, metric: str, control: str | float, better: str) -> dict | None:
    if metric not in df or df[metric].notna().sum() == 0:
        return None
    value = pd.to_numeric(df[metric], errors="coerce")
    ctrl = pd.Series(float(control), index=df.index) if isinstance(control, float) else (
        pd.to_numeric(df[control], errors="coerce") if control in df else pd.Series(np.nan, index=df.index))
    ok = value.notna() & ctrl.notna()
    # where some seeds have the control, only those count (metric and control on the same seeds)
    mean = paired_t_interval(value[ok if ok.any() else value.notna()].to_numpy())
    diff = paired_t_interval((value - ctrl)[ok].to_numpy())
    return {"metric": what, "column": metric, "better": better, "n_seeds": int(mean["n"]),
            "mean": mean["mean"], "ci_low": mean["ci_low"], "ci_high": mean["ci_high"],
            "control": float(ctrl[ok].mean()) if ok.any() else float("nan"),
            "control_is": "constant" if isinstance(control, float) else control,
            "minus_control": diff["mean"], "minus_control_low": diff["ci_low"],
            "minus_control_high": diff["ci_high"],
            "verdict": _verdict(diff["ci_low"], diff["ci_high"], better)}  # fmt: skip


def explanation_controls(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per (arch, ProtoPNet arm, method) and metric present in the study's rows."""
    ok = per_seed[per_seed["status"] == "ok"] if "status" in per_seed else per_seed
    ok = ok.assign(method=ok["method"].astype(object).fillna(""))
    rows = []
    for (arch, arm, method), group in ok.groupby(["arch", "arm", "method"], sort=False):
        for spec in CONTROLS:
            if (row := _row(group, *spec)) is not None:
                rows.append({"arch": arch, "arm": arm, "method": method, **row})
    return pd.DataFrame(rows)


def interval_text(mean: float, low: float, high: float, sign: str = "") -> str:
    """'mean [low, high]' to 3 decimals (`sign='+'`: signed), the mean alone without an interval."""
    if math.isnan(mean):
        return "—"
    text = format(mean, f"{sign}.3f")
    return text if math.isnan(low) else f"{text} [{low:{sign}.3f}, {high:{sign}.3f}]"


def controls_cells(table: pd.DataFrame) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per arm: its label, the header and the rows (the markdown and the HTML report share them)."""
    head = ["metric", "seeds", "mean [95 % CI]", "control", "metric − control [95 % CI]", "better when", "verdict"]
    out = []
    for (arch, arm, method), g in table.groupby(["arch", "arm", "method"], sort=False):
        body = [[r["metric"], str(r["n_seeds"]), interval_text(r["mean"], r["ci_low"], r["ci_high"]),
                 "—" if math.isnan(r["control"]) else f"{r['control']:.3f}",
                 interval_text(r["minus_control"], r["minus_control_low"], r["minus_control_high"], "+"),
                 r["better"], r["verdict"]]
                for _, r in g.iterrows()]  # fmt: skip
        out.append((f"{arch}: {arm_label(arm, method)}", head, body))
    return out


RULE = (
    "Controls: the chance level is what a map that ignores the image scores on the same images "
    "(the lesion's area share; for the top-area IoU m / (2 - m)); for the source box the lesion's "
    "area share too, a lenient control (a box placed at random on the same image covers more of a "
    "central lesion: explain.source_boxes gives that stricter chance); the random order's AUC for "
    "deletion and insertion; the border rule's base rate from the grid's geometry for the "
    f"background flag; {SANITY_LIMIT} for the sanity checks, whose value is the rank correlation of "
    "each map with the trained model's once part of the model is randomised (above the limit: the "
    "map did not change when the model did). Intervals: 95 % t over the seeds that have both the "
    "metric and its control; metric − control is paired by seed."
)


def controls_markdown(table: pd.DataFrame) -> list[str]:
    """Lines of the section (none when no ProtoPNet arm has explanation metrics)."""
    if table.empty:
        return []
    lines = ["", "## Explanation metrics beside their controls", "", RULE]
    for label, head, body in controls_cells(table):
        lines += ["", f"### {label}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                  *("| " + " | ".join(r) + " |" for r in body)]  # fmt: skip
    return lines


def write_controls(folder: Path, per_seed: pd.DataFrame) -> pd.DataFrame:
    """results/explanation_controls.{csv,md} (not written without explanation metrics)."""
    table = explanation_controls(per_seed)
    if not table.empty:
        atomic_write_text(folder / "explanation_controls.csv", table.to_csv(index=False))
        atomic_write_text(folder / "explanation_controls.md",
                          "\n".join(controls_markdown(table)[1:]).replace("## ", "# ", 1) + "\n")  # fmt: skip
    return table
