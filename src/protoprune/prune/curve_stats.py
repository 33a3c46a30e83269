"""Statistics on pruning-curve tables: areas, means over draws, paired differences, equal MACs.

Apart from the run that writes the curves and the reports that show them, so that pooled runs,
the study and scripts compute the same numbers from `curve.csv` tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..metrics import paired_t_interval


def fill_unpruned_step(df: pd.DataFrame, unit: str = "run") -> pd.DataFrame:
    """Step 0 (the unpruned model) of a ProtoPNet's trunk-pruning curves, in place: retention 1
    by definition, and each `localisation_` column the unpruned model's value (`<col>_unpruned`,
    or the chance level), which every later step of the same `unit` records."""
    for col in (c for c in df.columns if c.startswith("retention_")):
        df.loc[df["step"] == 0, col] = 1.0
    for col in (c for c in df.columns if c.startswith("localisation_") and not c.endswith("_unpruned")):
        source = f"{col}_unpruned" if f"{col}_unpruned" in df.columns else col
        first = df[df["step"] > 0].groupby(unit)[source].first()
        df.loc[df["step"] == 0, col] = df.loc[df["step"] == 0, unit].map(first)
    return df


def curve_area(ratios: np.ndarray, values: np.ndarray) -> float:
    """Area under an accuracy-vs-ratio curve divided by its ratio span: the curve's mean level."""
    order = np.argsort(ratios)
    r, v = np.asarray(ratios, float)[order], np.asarray(values, float)[order]
    span = r[-1] - r[0]
    return float(np.trapezoid(v, r) / span) if span > 0 else float(v[0])


def curve_summary(df: pd.DataFrame, metric: str = "test_balanced_accuracy") -> pd.DataFrame:
    """Mean +- std over draws (and training seeds, when pooled) per method x normalise x ratio."""
    keys = ["method", "normalize", "ratio"]
    g = df.groupby(keys, sort=False)[metric]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["macs"] = df.groupby(keys, sort=False)["macs"].mean().values
    return out


def curve_areas(df: pd.DataFrame, metric: str = "test_balanced_accuracy") -> pd.DataFrame:
    """The area under each curve (one per run x method x normalisation x draw)."""
    units = [c for c in ("run", "method", "normalize", "ref_seed") if c in df.columns]
    rows = [{**dict(zip(units, key)), "area": curve_area(g["ratio"].values, g[metric].values)}
            for key, g in df.groupby(units, sort=False)]  # fmt: skip
    return pd.DataFrame(rows)


def _paired_units(table: pd.DataFrame, a: tuple[str, str], b: tuple[str, str]) -> np.ndarray:
    """a − b per independent unit. Pooled runs (one per training seed): per run, its draws
    averaged first, since the draws of one run share its baseline (and a data-free criterion's
    draws are one cut), so counting them as pairs would narrow the interval falsely. One run: per
    reference draw."""
    pooled = "run" in table.columns and table["run"].nunique() > 1
    units = ["run"] if pooled else [c for c in ("run", "ref_seed") if c in table.columns]

    def side(m: str, n: str) -> pd.Series:
        t = table[(table["method"] == m) & (table["normalize"] == n)]
        return t.groupby(units)["value"].mean()

    joined = pd.concat([side(*a).rename("a"), side(*b).rename("b")], axis=1, join="inner").dropna()
    return (joined["a"] - joined["b"]).to_numpy()


def paired_difference(df: pd.DataFrame, a: tuple[str, str], b: tuple[str, str],
                      metric: str = "test_balanced_accuracy", ratio: float | None = None) -> dict:  # fmt: skip
    """Mean of (a - b) over paired units (runs, or draws of one run) with a 95 % t interval.

    `a`, `b` are (method, normalize); `ratio=None` compares the areas under the curves.
    """
    if ratio is None:
        table = curve_areas(df, metric).rename(columns={"area": "value"})
    else:
        table = df[np.isclose(df["ratio"], ratio)].rename(columns={metric: "value"})
    return {"a": "/".join(a), "b": "/".join(b), "ratio": ratio,
            **paired_t_interval(_paired_units(table, a, b))}  # fmt: skip


def _lrp_pairs(df: pd.DataFrame) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """(lrp, norm) against each other criterion present, at the same norm (random: raw)."""
    methods = set(df["method"])
    pairs = []
    for norm in sorted(set(df["normalize"])):
        for other in ("weight", "random", "grad", "taylor"):
            b_norm = "none" if other == "random" else norm
            if "lrp" in methods and other in methods and ((df["method"] == other)
                                                          & (df["normalize"] == b_norm)).any():
                pairs.append((("lrp", norm), (other, b_norm)))
    return pairs


def paired_differences(df: pd.DataFrame) -> pd.DataFrame:
    """LRP - weight and LRP - random (areas and each ratio), for each normalisation present."""
    rows = []
    ratios = sorted(r for r in set(df["ratio"]) if r > 0)
    for a, b in _lrp_pairs(df):
        for ratio in [None, *ratios]:
            d = paired_difference(df, a, b, ratio=ratio)
            if d["n"]:
                rows.append({"difference": f"{d['a']} - {d['b']}",
                             "at": "area" if ratio is None else f"{ratio:.2f}", "n": d["n"],
                             "mean": d["mean"], "ci_low": d["ci_low"], "ci_high": d["ci_high"]})  # fmt: skip
    return pd.DataFrame(rows)


MACS_FRACTIONS = (0.9, 0.8, 0.7, 0.6)


def curve_at_macs(df: pd.DataFrame, fractions: Sequence[float] = MACS_FRACTIONS,
                  metric: str = "test_balanced_accuracy") -> pd.DataFrame:  # fmt: skip
    """Each unit's metric at equal compute: linearly interpolated in MACs between its cuts, at
    `fractions` of the unpruned MACs (NaN outside the MACs its cuts span). Criteria that remove
    filters of different layers reach different MACs at one filter ratio. The unpruned MACs are
    the largest of a unit's rows, or its `macs_unpruned` column where the rows leave the unpruned
    model out (then nothing is interpolated from it)."""
    units = [c for c in ("run", "method", "normalize", "ref_seed") if c in df.columns]
    rows = []
    for key, g in df.groupby(units, sort=False):
        g = g.sort_values("macs")
        full = float(g["macs_unpruned"].iloc[0]) if "macs_unpruned" in g.columns else float(g["macs"].max())
        for f in fractions:
            target = f * full
            inside = g["macs"].min() <= target <= g["macs"].max()
            rows.append({**dict(zip(units, key)), "macs_fraction": f,
                         "value": float(np.interp(target, g["macs"], g[metric])) if inside else np.nan})  # fmt: skip
    return pd.DataFrame(rows)


def equal_macs_differences(df: pd.DataFrame, metric: str = "test_balanced_accuracy") -> pd.DataFrame:
    """LRP − each criterion at equal MACs, paired as `paired_difference` pairs, 95 % t interval."""
    at = curve_at_macs(df, metric=metric)
    rows = []
    for a, b in _lrp_pairs(df):
        for f in MACS_FRACTIONS:
            d = paired_t_interval(_paired_units(at[at["macs_fraction"] == f], a, b))
            if d["n"]:
                rows.append({"difference": f"{'/'.join(a)} - {'/'.join(b)}", "at": f"{f:.0%} MACs",
                             "n": d["n"], "mean": d["mean"], "ci_low": d["ci_low"],
                             "ci_high": d["ci_high"]})  # fmt: skip
    return pd.DataFrame(rows)


def layer_removal(layers: pd.DataFrame, ratio: float) -> pd.DataFrame:
    """Fraction of each layer group's filters (top-level module: conv1, layer1, ..., features)
    removed at `ratio`, mean over draws (and runs), one row per criterion x normalisation."""
    d = layers[np.isclose(layers["ratio"], ratio)].copy()
    if d.empty:
        return d
    d["group"] = d["layer"].str.split(".").str[0]
    units = [c for c in ("run", "method", "normalize", "ref_seed") if c in d.columns]
    g = d.groupby(units + ["group"], sort=False)[["filters", "initial"]].sum().reset_index()
    g["removed"] = 1 - g["filters"] / g["initial"]
    table = g.pivot_table(index=["method", "normalize"], columns="group", values="removed",
                          aggfunc="mean", sort=False)  # fmt: skip
    return table.reset_index()
