"""Explanations kept under a ProtoPNet's trunk pruning, over seeds: each criterion's balanced
accuracy and explanation retention at equal MACs, and LRP − each criterion paired by seed.

Criteria remove filters of different layers, so one filter ratio is not one cost: the criteria
are compared at fractions of the unpruned MACs, each seed's curve interpolated linearly in MACs
between its pruned steps (`prune.curve_stats.curve_at_macs`). Never from step 0, the unpruned
model: its retention is 1 by definition (`explain.retention`), but one repair moves the
prototypes without removing a filter (`experiments.repair_control`), so a line from 1 to the
first step would report retention no model was measured at. A fraction above a criterion's
first step is left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..metrics import paired_t_interval
from ..names import RETENTION_MEASURE_NAMES
from ..prune.curve_stats import curve_at_macs, fill_unpruned_step

ARM = "protopnet_filter"
# what the table compares, higher is better for each: accuracy, every retention measure, and the
# share of the PRP heatmaps' mass on the lesion (its unpruned and chance levels are other columns)
MEASURES = ("test_balanced_accuracy", *(f"retention_{m}" for m in RETENTION_MEASURE_NAMES),
            "localisation_on_lesion")  # fmt: skip
MACS_FRACTIONS = (0.6, 0.4, 0.3)  # inside LRP's and random's HAM10000 steps: first at 61-68 %, last at 16-25 %


def trunk_pruning_curves(results: Sequence[dict]) -> pd.DataFrame:
    """Every step of every ProtoPNet trunk-pruning unit of a study's `result.json` files, with a
    `run` column (arch and seed: the unit the criteria are paired on)."""
    rows = [r for res in results for r in res.get("curves", []) if r.get("arm") == ARM]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["run"] = df["arch"].astype(str) + "/seed" + df["seed"].astype(str)
    unit = df["run"] + "/" + df["method"].astype(str)  # one curve: its step 0 from its later steps
    return fill_unpruned_step(df.assign(curve=unit), unit="curve").drop(columns="curve")


def _at_macs(curves: pd.DataFrame, fractions: Sequence[float], measures: Sequence[str]) -> pd.DataFrame:
    """Long table: run, method, macs_fraction, measure, value (NaN outside a run's pruned steps)."""
    unpruned = curves[curves["step"] == 0].groupby(["run", "method"])["macs"].first().rename("macs_unpruned")
    pruned = curves[curves["step"] > 0].join(unpruned, on=["run", "method"])
    parts = [curve_at_macs(pruned[["run", "method", "macs", "macs_unpruned", m]].dropna(), fractions, metric=m)
             .assign(measure=m) for m in measures if m in pruned.columns and pruned[m].notna().any()]  # fmt: skip
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def at_equal_macs(curves: pd.DataFrame, fractions: Sequence[float] = MACS_FRACTIONS,
                  measures: Sequence[str] = MEASURES) -> pd.DataFrame:  # fmt: skip
    """Per criterion, MACs fraction and measure: the mean over runs with its 95 % t interval
    (a fraction outside every run's pruned steps of a criterion is left out)."""
    long = _at_macs(curves, fractions, measures)
    rows = [{"method": method, "macs_fraction": f, "measure": m, **paired_t_interval(g["value"])}
            for (method, f, m), g in long.groupby(["method", "macs_fraction", "measure"], sort=False)]  # fmt: skip
    return pd.DataFrame([r for r in rows if r["n"]], columns=["method", "macs_fraction", "measure", "n", "mean",
                                                               "ci_low", "ci_high"])  # fmt: skip


def _direction(low: float, high: float, reference: str) -> str:
    if np.isnan(low) or np.isnan(high):
        return "too few seeds"
    if low > 0:
        return f"{reference} higher"
    return f"{reference} lower" if high < 0 else "not distinguishable"


def reference_minus_each(curves: pd.DataFrame, fractions: Sequence[float] = MACS_FRACTIONS,
                         measures: Sequence[str] = MEASURES, reference: str = "lrp") -> pd.DataFrame:  # fmt: skip
    """`reference` − each other criterion at equal MACs, paired by run, with a 95 % t interval and
    which way it fell (every measure here: higher is better)."""
    long = _at_macs(curves, fractions, measures)
    rows = []
    for (f, m), g in long.groupby(["macs_fraction", "measure"], sort=False):
        wide = g.pivot(index="run", columns="method", values="value")
        if reference not in wide.columns:
            continue
        for other in (c for c in wide.columns if c != reference):
            d = paired_t_interval((wide[reference] - wide[other]).to_numpy())
            rows.append({"difference": f"{reference} - {other}", "macs_fraction": f, "measure": m, **d,
                         "direction": _direction(d["ci_low"], d["ci_high"], reference)})  # fmt: skip
    columns = ["difference", "macs_fraction", "measure", "n", "mean", "ci_low", "ci_high", "direction"]
    return pd.DataFrame(rows, columns=columns)  # no other criterion yet: empty, with its columns


def minus_repair_control(curves: pd.DataFrame, control: pd.DataFrame,
                         measures: Sequence[str] = MEASURES) -> pd.DataFrame:  # fmt: skip
    """Each criterion's step k minus the same seed's unpruned model after k repairs
    (`experiments.repair_control`), paired by run, 95 % t interval: what the pruning changed
    beyond what the repairs alone change."""
    ctrl = control.assign(run=control["arch"].astype(str) + "/seed" + control["seed"].astype(str))
    ctrl = ctrl[ctrl["step"] > 0].set_index(["run", "step"])
    rows = []
    for (method, step), g in curves[curves["step"] > 0].groupby(["method", "step"], sort=False):
        g = g.set_index(["run", "step"])
        both = g.index.intersection(ctrl.index)
        for m in (m for m in measures if m in g.columns and m in ctrl.columns):
            d = paired_t_interval((g.loc[both, m] - ctrl.loc[both, m]).astype(float).to_numpy())
            rows.append({"method": method, "step": int(step), "measure": m, **d,
                         "direction": _direction(d["ci_low"], d["ci_high"], method)})  # fmt: skip
    return pd.DataFrame(rows)


__all__ = ["MEASURES", "MACS_FRACTIONS", "trunk_pruning_curves", "at_equal_macs", "reference_minus_each",
           "minus_repair_control"]
