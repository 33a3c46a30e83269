"""Collect the ProtoPNet trunk-pruning units of a study folder (`protoprune study
configs/study_ham10000.yaml`, arm protopnet_filter_pruning, or a kept copy such as
studies/ham10000 without checkpoints) into docs/results.md's tables, and draw the front.

Reads the finished units' result.json files (a unit still running is left out), so it needs
neither the data nor the models. Prints, as markdown: each criterion's steps as measured (MACs,
balanced accuracy, each retention measure, PRP mass on the lesion beside the unpruned model's and
chance), then at equal MACs the mean over seeds with a 95 % t interval, and LRP − each criterion
paired by seed (`protoprune.study.retention`), each seed's curve interpolated between its pruned
steps only.

Usage: python scripts/trunk_pruning_retention.py STUDY_DIR [--figure PNG] [--macs 0.6,0.4,0.3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from protoprune.metrics import mean_std
from protoprune.prune.curve_stats import fill_unpruned_step
from protoprune.study.controls import interval_text
from protoprune.study.plots import plot_retention_front
from protoprune.study.retention import (
    MACS_FRACTIONS,
    MEASURES,
    at_equal_macs,
    minus_repair_control,
    reference_minus_each,
    trunk_pruning_curves,
)

LABELS = {"test_balanced_accuracy": "bal. acc.", "retention_same_source_image": "same source image",
          "retention_same_source_cell": "same source cell", "retention_topk_jaccard": "top-3 Jaccard",
          "retention_same_strongest": "same strongest", "retention_prp_spearman": "PRP Spearman",
          "localisation_on_lesion": "PRP on lesion"}  # fmt: skip


def _results(study: Path, pattern: str = "protopnet-filter-*") -> list[dict]:
    return [json.loads((p / "result.json").read_text())
            for p in sorted(study.glob(f"runs/*/seed*/{pattern}")) if (p / "done.json").is_file()]  # fmt: skip


def control_curves(study: Path) -> pd.DataFrame:
    """The repair control's curves (scripts/repair_control.py), step 0 with retention 1."""
    rows = [r for res in _results(study, "protopnet-repair-control") for r in res["curves"]]
    df = pd.DataFrame(rows)
    return fill_unpruned_step(df.assign(run=df["seed"]), unit="run") if not df.empty else df


def control_table(curves: pd.DataFrame, control: pd.DataFrame) -> str:
    """The repair control by step (mean ± std), then each criterion − control, paired by seed."""
    cols = [m for m in MEASURES if m in control.columns]
    head = ["", "step (repairs)", "seeds", *(LABELS[c] for c in cols)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for step, g in control.groupby("step"):
        lines.append(f"| repair only (control) | {step} | {g['seed'].nunique()} | "
                     + " | ".join(mean_std(g[c]) for c in cols) + " |")  # fmt: skip
    diffs = minus_repair_control(curves, control)
    for (method, step), g in (diffs.groupby(["method", "step"], sort=False) if not diffs.empty else []):
        r = g.set_index("measure")
        lines.append(f"| {method} − control (paired, n = {int(r['n'].max())}) | {step} | | " + " | ".join(
            f"{_ci(r.loc[c, 'mean'], r.loc[c, 'ci_low'], r.loc[c, 'ci_high'], True)}" if c in r.index else "n/a"
            for c in cols) + " |")  # fmt: skip
    return "\n".join(lines)


def steps_table(curves: pd.DataFrame) -> str:
    """Each criterion's measured steps, mean ± std over seeds."""
    cols = [m for m in MEASURES if m in curves.columns]
    head = ["criterion", "step", "filters removed", "MACs (fraction)", "seeds", *(LABELS[c] for c in cols),
            "PRP on lesion: unpruned / chance"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    curves = curves.assign(macs_fraction=curves["macs"] / curves.groupby("run")["macs"].transform("max"))
    for (method, step), g in curves.groupby(["method", "step"], sort=False):
        ref = (f"{g['localisation_on_lesion_unpruned'].mean():.3f} / {g['localisation_on_lesion_chance'].mean():.3f}"
               if step and "localisation_on_lesion_chance" in g else "")  # fmt: skip
        cells = [method, str(step), f"{g['pruned_ratio'].mean():.2f}", mean_std(g["macs_fraction"], ".2f"),
                 str(g["seed"].nunique()), *(mean_std(g[c]) for c in cols), ref]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ci(mean: float, low: float, high: float, signed: bool = False) -> str:
    return interval_text(mean, low, high, "+" if signed else "")


def equal_macs_tables(curves: pd.DataFrame, fractions: tuple[float, ...]) -> str:
    """Per MACs fraction: each criterion's mean [95 % CI], then LRP − each criterion."""
    means, diffs = at_equal_macs(curves, fractions), reference_minus_each(curves, fractions)
    out = []
    for f in fractions:
        m, d = means[means["macs_fraction"] == f], diffs[diffs["macs_fraction"] == f]
        if m.empty:  # interpolation stays between pruned steps (study.retention)
            out.append(f"**{f:.0%} of the unpruned MACs**: no criterion has pruned steps on both sides")
            continue
        cols = [c for c in MEASURES if c in set(m["measure"])]
        head = ["at " + f"{f:.0%} of the MACs", *(LABELS[c] for c in cols)]
        lines = [f"**{f:.0%} of the unpruned MACs**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method, g in m.groupby("method", sort=False):
            r = g.set_index("measure")
            lines.append(f"| {method} (n = {int(r['n'].min())}) | " + " | ".join(
                _ci(r.loc[c, "mean"], r.loc[c, "ci_low"], r.loc[c, "ci_high"]) if c in r.index else "n/a"
                for c in cols) + " |")  # fmt: skip
        for diff, g in d.groupby("difference", sort=False):
            r = g.set_index("measure")
            lines.append(f"| {diff} (paired, n = {int(r['n'].max())}) | " + " | ".join(
                f"{_ci(r.loc[c, 'mean'], r.loc[c, 'ci_low'], r.loc[c, 'ci_high'], True)} ({r.loc[c, 'direction']})"
                if c in r.index else "n/a" for c in cols) + " |")  # fmt: skip
        out.append("\n".join(lines))
    return "\n\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--figure", type=Path, help="write the front (balanced accuracy, retention vs MACs) here")
    ap.add_argument("--macs", default=",".join(str(f) for f in MACS_FRACTIONS),
                    help="fractions of the unpruned MACs to compare at (default %(default)s)")
    args = ap.parse_args()
    try:
        fractions = tuple(float(x) for x in args.macs.split(","))
    except ValueError:
        ap.exit(2, f"error: --macs {args.macs!r} is not a list of numbers\nfix: e.g. --macs 0.6,0.4,0.3\n")
    if not all(0 < f <= 1 for f in fractions):
        ap.exit(2, f"error: --macs {args.macs}: fractions of the unpruned MACs lie in (0, 1]\n"
                   "fix: e.g. --macs 0.6,0.4,0.3\n")
    curves = trunk_pruning_curves(_results(args.study))
    if curves.empty:
        ap.exit(2, f"error: no finished protopnet-filter-* units under {args.study}/runs\n"
                   "fix: give a study folder whose protopnet_filter_pruning arm has finished units\n")
    units = curves.groupby("method")["seed"].unique()
    print("Units:", "; ".join(f"{m}: seeds {', '.join(str(s) for s in sorted(v))}" for m, v in units.items()))
    print("\n## Steps as measured (mean ± std over seeds)\n")
    print(steps_table(curves))
    control = control_curves(args.study)
    if not control.empty:
        print("\n## Beside the repair control: the unpruned model repaired as often (scripts/repair_control.py)\n")
        print(control_table(curves, control))
    print("\n## At equal MACs (mean [95 % t interval] over seeds; LRP − each criterion paired by seed)\n")
    print(equal_macs_tables(curves, fractions))
    if args.figure:
        print(f"\nfigure: {plot_retention_front(curves, args.figure, control)}")


if __name__ == "__main__":
    main()
