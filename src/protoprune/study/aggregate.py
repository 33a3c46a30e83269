"""From per-seed rows to the study's table: deltas from the baseline, mean +/- std over seeds.

std is the sample standard deviation over seeds (pandas' default, ddof = 1): the seeds are a
sample of the training randomness, and the spread is what a new seed would show.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io import atomic_write_json, atomic_write_text
from ..metrics import HEADLINE
from ..train.convergence import RULE as CONVERGENCE_RULE

GROUP = ["arch", "arm", "method"]
ARM_LABELS = {
    "baseline": "Baseline CNN",
    "filter": "Filter pruning",
    "protopnet": "ProtoPNet",
    "protopnet_pruned": "ProtoPNet + prototype pruning",
    "protopnet_filter": "ProtoPNet + filter pruning",
}
METRIC_LABELS = {
    "accuracy": "acc.",
    "balanced_accuracy": "bal. acc.",
    "melanoma_sensitivity": "mel. sens.",
    "auroc_macro": "AUROC",
}


def arm_label(arm: str, method: str | None) -> str:
    label = ARM_LABELS.get(arm, arm)
    return f"{label} ({method})" if method else label


def add_deltas(per_seed: pd.DataFrame) -> pd.DataFrame:
    """delta_<metric> = final test metric minus the same arch and seed's baseline (NaN without one)."""
    df = per_seed.copy()
    for col in [f"test_{k}" for k in HEADLINE] + [f"test_{k}_pruned" for k in HEADLINE]:
        if col not in df.columns:
            df[col] = np.nan
        df[col] = pd.to_numeric(df[col], errors="coerce")
    base = df[df["arm"] == "baseline"].set_index(["arch", "seed"])
    for k in HEADLINE:
        ref = df.set_index(["arch", "seed"]).index.map(
            lambda i, k=k: base[f"test_{k}"].get(i, np.nan)
        )
        df[f"delta_{k}"] = df[f"test_{k}"] - np.asarray(ref, dtype=float)
    return df


def numeric_columns(df: pd.DataFrame) -> list[str]:
    skip = {"seed"}
    return [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])]


def summarize(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per arch x arm x method: n_seeds, and <col>_mean / <col>_std of each number."""
    df = per_seed.copy()
    df["method"] = df["method"].fillna("")
    ok = df[df["status"] == "ok"]
    cols = numeric_columns(df)
    rows = []
    for key, group in df.groupby(GROUP, sort=False):
        good = ok.loc[ok.index.intersection(group.index)]
        row: dict[str, Any] = dict(zip(GROUP, key))
        row["status"] = "ok" if len(good) else str(group["status"].iloc[0])
        reasons = group.get("reason")
        row["reason"] = "" if reasons is None or len(good) else str(reasons.dropna().iloc[0])
        row["n_seeds"] = int(len(good))
        row["seeds"] = " ".join(str(s) for s in sorted(good["seed"]))
        for c in cols:
            values = pd.to_numeric(good[c], errors="coerce").dropna()
            row[f"{c}_mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{c}_std"] = float(values.std()) if len(values) > 1 else np.nan  # ddof = 1
        rows.append(row)
    return pd.DataFrame(rows)


def curves_table(results: list[dict]) -> pd.DataFrame:
    """Every pruning step of every filter-pruning unit (for the accuracy-vs-ratio plots)."""
    rows = [r for res in results for r in res.get("curves", [])]
    return pd.DataFrame(rows)


def convergence_table(results: list[dict]) -> pd.DataFrame:
    """How every recorded validation curve ended: a row per training run and per fine-tuning
    round (`units.training_convergence`, `units.schedule_convergence`)."""
    return pd.DataFrame([r for res in results for r in res.get("convergence", [])])


def convergence_summary(conv: pd.DataFrame) -> pd.DataFrame:
    """Per arm (and criterion): curves, how many ended flat, how many patience stopped, and the
    largest gain of the last evaluations (what a longer budget might still have added)."""
    if conv.empty:
        return pd.DataFrame()
    rows = []
    for (arm, method), g in conv.groupby(["arm", "method"], sort=False):
        stopped = g["stopped_by_patience"].dropna()
        rows.append({"arm": arm, "method": method, "curves": len(g), "flat": int(g["flat"].sum()),
                     "stopped_by_patience": int(stopped.sum()) if len(stopped) else None,
                     "evaluations_mean": float(g["evaluations"].mean()),
                     "gain_last_max": float(g["gain_last"].max())})  # fmt: skip
    return pd.DataFrame(rows)


def convergence_cells(conv: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-arm convergence table (empty rows: nothing recorded)."""
    head = ["arm", "curves", "flat at the end", "stopped by patience", "evaluations (mean)",
            "largest gain of the last evaluations"]  # fmt: skip
    summary = convergence_summary(conv)
    body = [[arm_label(r["arm"], r["method"]), str(r["curves"]), str(r["flat"]),
             "" if r["stopped_by_patience"] is None or pd.isna(r["stopped_by_patience"])
             else str(int(r["stopped_by_patience"])),
             f"{r['evaluations_mean']:.1f}",
             "n/a" if math.isnan(r["gain_last_max"]) else f"{r['gain_last_max']:+.3f}"]
            for _, r in summary.iterrows()]  # fmt: skip
    return head, body


def _pm(row: pd.Series, col: str, scale: float = 1.0, fmt: str = ".3f") -> str:
    mean, std = row.get(f"{col}_mean", np.nan), row.get(f"{col}_std", np.nan)
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    text = format(mean / scale, fmt)
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += " ± " + format(std / scale, fmt.lstrip("+"))  # a spread has no sign
    return text


def table_columns(summary: pd.DataFrame) -> list[tuple[str, str, float, str]]:
    """(heading, column, scale, format) of the results table, in the seed's shape."""
    cols = [
        ("after pruning: acc.", "test_accuracy_pruned", 1.0, ".3f"),
        ("after pruning: bal. acc.", "test_balanced_accuracy_pruned", 1.0, ".3f"),
    ]
    cols += [(f"after fine-tuning: {METRIC_LABELS[k]}", f"test_{k}", 1.0, ".3f") for k in HEADLINE]
    cols += [("Δ acc. vs baseline", "delta_accuracy", 1.0, "+.3f"),
             ("Δ bal. acc. vs baseline", "delta_balanced_accuracy", 1.0, "+.3f"),
             ("pruned ratio", "pruned_ratio", 1.0, ".2f"),
             ("MMACs", "macs", 1e6, ".1f"), ("params (M)", "params", 1e6, ".3f")]  # fmt: skip
    cols += [
        (f"latency b{c.rsplit('b', 1)[1]} (ms)", c, 1.0, ".2f")
        for c in sorted({c[: -len("_mean")] for c in summary.columns if c.startswith("latency_ms_b") and c.endswith("_mean")},
                        key=lambda c: int(c.rsplit("b", 1)[1]))
    ]  # fmt: skip
    if any(c.startswith("ext_") for c in summary.columns):
        cols += [(f"ISIC 2018: {METRIC_LABELS[k]}", f"ext_{k}", 1.0, ".3f") for k in HEADLINE]
    return cols


def table_cells(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headings and formatted cells (mean ± std), shared by the markdown and HTML tables."""
    cols = table_columns(summary)
    head = ["arch", "arm", "seeds"] + [h for h, *_ in cols]
    body = []
    for _, row in summary.iterrows():
        cells = [row["arch"], arm_label(row["arm"], row["method"]), str(row["n_seeds"])]
        if row["status"] != "ok":
            cells += [row["status"]] + [""] * (len(cols) - 1)
        else:
            cells += [_pm(row, c, s, f) for _, c, s, f in cols]
        body.append(cells)
    return head, body


EXPLANATION_COLUMNS = (
    ("peak-cell stability", "expl_mean_stability"),
    ("deletion AUC PRP", "expl_mean_deletion_auc_prp"),
    ("deletion AUC upsampled", "expl_mean_deletion_auc_upsample"),
    ("deletion AUC random", "expl_mean_deletion_auc_random"),
    ("on-lesion PRP (source)", "expl_mean_on_lesion_prp"),
    ("on-lesion upsampled (source)", "expl_mean_on_lesion_upsample"),
    ("chance (source)", "expl_chance_on_lesion"),
    ("on-lesion PRP (test)", "expl_mean_test_on_lesion_prp"),
    ("pointing PRP (test)", "expl_mean_test_pointing_prp"),
    ("pointing upsampled (test)", "expl_mean_test_pointing_upsample"),
    ("chance (test)", "expl_chance_test_on_lesion"),
    ("top-area IoU PRP (test)", "expl_mean_test_top_iou_prp"),
    ("IoU chance (test)", "expl_chance_test_top_iou"),
    ("background share", "expl_background_share"),
    ("its base rate", "expl_background_base_rate"),
    ("purity", "expl_mean_purity"),
    ("distinct sources", "expl_distinct_sources"),
    ("near-duplicates", "expl_near_duplicates"),
    ("max field share", "expl_max_rf_fraction"),
    ("effective field share", "expl_effective_rf_fraction"),
    ("sanity: PRP after randomisation", "expl_sanity_cascade_prp"),
    ("sanity: upsampled after randomisation", "expl_sanity_cascade_upsample"),
    ("sanity: PRP, random prototypes", "expl_sanity_prototypes_prp"),
    ("sanity: upsampled, random prototypes", "expl_sanity_prototypes_upsample"),
)  # fmt: skip


def explanation_markdown(summary: pd.DataFrame) -> list[str]:
    """Lines of the explanation-quality table (explain.metrics): one row per ProtoPNet arm."""
    cols = [(h, c) for h, c in EXPLANATION_COLUMNS if f"{c}_mean" in summary.columns]
    if not cols:
        return []
    rows = summary[summary[f"{cols[0][1]}_mean"].notna()]
    lines = ["", "## Explanation quality (ProtoPNet arms)", "",
             "Peak-cell stability: share of own-class test images whose peak latent cell stays "
             "under input noise; deletion AUC: similarity left while pixels are removed in a "
             "heatmap's order (lower is better; random is the control); on-lesion: heatmap mass "
             "inside the lesion mask, on each prototype's source image and its 3 nearest test "
             "images; pointing: the map's peak on the lesion; top-area IoU: the lesion against "
             "the map's top pixels, as many as the lesion has. Each chance column is what a map "
             "that ignores the image scores on the same images (the lesion's area share, for "
             "the IoU m / (2 - m)); the background flag's base rate is the share of latent "
             "cells the border rule flags on geometry alone.", "",
             "| arch | arm | " + " | ".join(h for h, _ in cols) + " |",
             "|" + "---|" * (len(cols) + 2)]  # fmt: skip
    for _, row in rows.iterrows():
        cells = [_pm(row, c, 1.0, ".3f") for _, c in cols]
        lines.append(f"| {row['arch']} | {arm_label(row['arm'], row['method'])} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    return lines


def summary_markdown(summary: pd.DataFrame, title: str) -> str:
    head, body = table_cells(summary)
    lines = [f"# {title}", "",
             "Test split of each seed (mean ± sample std over seeds); after pruning = before "
             "fine-tuning; Δ = final minus the same seed's baseline. Pruned ratio: fraction of "
             "filters (filter pruning) or prototypes (prototype pruning) removed.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    lines += explanation_markdown(summary)
    unavailable = summary[summary["status"] != "ok"]
    for _, row in unavailable.iterrows():
        lines += [
            "",
            f"*{arm_label(row['arm'], row['method'])}: {row['status']}* — {row['reason']}",
        ]
    return "\n".join(lines) + "\n"


def write_tables(
    folder: Path,
    per_seed: pd.DataFrame,
    summary: pd.DataFrame,
    curves: pd.DataFrame,
    convergence: pd.DataFrame | None = None,
) -> None:
    """results/per_seed, summary (csv, json, md), curves.csv and convergence.csv."""
    atomic_write_text(folder / "per_seed.csv", per_seed.to_csv(index=False))
    atomic_write_json(
        folder / "per_seed.json", per_seed.replace({np.nan: None}).to_dict(orient="records")
    )
    atomic_write_text(folder / "summary.csv", summary.to_csv(index=False))
    atomic_write_json(
        folder / "summary.json", summary.replace({np.nan: None}).to_dict(orient="records")
    )
    text = summary_markdown(summary, "Study results")
    head, body = convergence_cells(convergence if convergence is not None else pd.DataFrame())
    if body:
        text += "\n".join(["", "## Convergence of each budget", "", CONVERGENCE_RULE, "",
                            "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                            *("| " + " | ".join(r) + " |" for r in body)]) + "\n"  # fmt: skip
    atomic_write_text(folder / "summary.md", text)
    atomic_write_text(folder / "curves.csv", curves.to_csv(index=False))
    if convergence is not None:
        atomic_write_text(folder / "convergence.csv", convergence.to_csv(index=False))


def pool_pruning_curves(out: Path, results: list[dict]) -> dict[str, pd.DataFrame]:
    """Each architecture's pruning_curve units (one per seed) pooled into results/pruning_curve/
    (results/pruning_curve/<arch>/ with several architectures: curve.md, curve.png, curves.csv)
    and pruning_curve[_<arch>].png beside index.html; {arch: pooled cuts}, empty without the arm."""
    import shutil

    from ..report.curves import summarize_curves

    by_arch: dict[str, list[Path]] = {}
    for r in results:
        if r.get("kind") == "curve":
            by_arch.setdefault(r["unit"].split("/")[0], []).append(out / "runs" / r["unit"])
    pooled = {}
    for arch, dirs in by_arch.items():
        several = len(by_arch) > 1
        target = out / "results" / "pruning_curve" / (arch if several else "")
        pooled[arch] = summarize_curves(dirs, target)
        shutil.copy(target / "curve.png", out / (f"pruning_curve_{arch}.png" if several else "pruning_curve.png"))
    return pooled
