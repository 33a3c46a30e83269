"""The study's self-contained HTML report: index.html with its PNGs next to it (no external URLs).

Reuses the page frame of `protoprune.report.html` (style and the in-page image check).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..io import atomic_write_text
from ..metrics import HEADLINE
from ..report.html import render_html
from .aggregate import CONVERGENCE_RULE, arm_label, convergence_cells, table_cells
from .config import StudyConfig
from .controls import RULE as CONTROLS_RULE
from .controls import controls_cells, interval_text
from .plots import write_plots


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(head: list[str], body: list[list[str]]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    rows = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><tr>{th}</tr>{rows}</table>"


def _fig(name: str, caption: str) -> str:
    return f'<figure><img src="{_e(name)}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'


def _stages_table(results: list[dict]) -> str:
    """ProtoPNet test metrics at its training stages, per seed."""
    rows = []
    for res in results:
        for stage, m in (res.get("stages") or {}).items():
            rows.append([res["unit"], stage.replace("_", " ")] + [
                "n/a" if m.get(f"test_{k}") is None else f"{m[f'test_{k}']:.3f}" for k in HEADLINE
            ])  # fmt: skip
    if not rows:
        return "<p class=muted>No ProtoPNet runs in this study.</p>"
    return _table(["unit", "stage", *HEADLINE], rows)


def _retention_table(results: list[dict]) -> str:
    """LRP − each criterion at equal MACs, paired by seed (`study.retention`)."""
    from .retention import MEASURES, reference_minus_each, trunk_pruning_curves

    curves = trunk_pruning_curves(results)
    diffs = reference_minus_each(curves) if not curves.empty else pd.DataFrame()
    if diffs.empty:
        return "<p class=muted>No LRP trunk pruning beside another criterion: nothing to compare.</p>"
    cols = [m for m in MEASURES if m in set(diffs["measure"])]
    body = []
    for (diff, f), g in diffs.groupby(["difference", "macs_fraction"], sort=False):
        r = g.set_index("measure")
        body.append([diff, f"{f:.0%}", str(int(r["n"].max()))] + [
            interval_text(*r.loc[c, ["mean", "ci_low", "ci_high"]], "+") if c in r.index else "n/a"
            for c in cols])  # fmt: skip
    note = ("<p>At equal MACs (each seed's curve interpolated between its pruned steps, never from the "
            "unpruned model), the difference paired by seed with its 95 % t interval; every measure: "
            "higher is better.</p>")
    return note + _table(["difference", "MACs", "seeds", *(c.replace("_", " ") for c in cols)], body)


def _convergence_section(conv: pd.DataFrame | None) -> str:
    """Whether each arm's budget was long enough, read off its validation curves."""
    head, body = convergence_cells(conv if conv is not None else pd.DataFrame())
    if not body:
        return "<p class=muted>No validation curves recorded.</p>"
    note = " One row a training run or fine-tuning round in <code>results/convergence.csv</code>."
    return f"<p>{_e(CONVERGENCE_RULE)}{note}</p>" + _table(head, body)


def _curve_section(df: pd.DataFrame, figure: str, folder: str) -> str:
    """The pooled no-fine-tune curve: figure, mean ± std per ratio with areas, paired differences."""
    from ..prune.curve_stats import equal_macs_differences, paired_differences
    from ..report.curves import curve_table

    table = curve_table(df)
    diffs = pd.concat([paired_differences(df), equal_macs_differences(df)], ignore_index=True)
    fmt = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in r] for r in diffs.itertuples(index=False)]
    return (
        "<p>Every criterion scores the baseline once per reference-set draw and its filters are cut "
        "one-shot at each ratio, with no fine-tuning (Yeom et al.'s comparison). Test balanced "
        "accuracy, mean ± std over seeds × draws; area: the curve's mean level. Tables: "
        f"<code>{_e(folder)}/curve.md</code>.</p>"
        + _fig(figure, "Test balanced accuracy vs filters removed and vs MACs, no fine-tuning")
        + _table(list(table.columns), table.astype(str).values.tolist())
        + "<p>Paired differences (unit: the seed, its draws averaged), 95 % t interval, at each filter ratio and at "
        "equal compute (a fraction of the unpruned MACs):</p>"
        + _table(list(diffs.columns), fmt)
    )


def _curve_sections(pooled: dict[str, pd.DataFrame]) -> list[tuple[str, str, str]]:
    """One report section per architecture's pooled curve (names as pool_pruning_curves writes)."""
    several = len(pooled) > 1
    return [(f"curve-{arch}", "Pruning curve without fine-tuning" + (f" ({arch})" if several else ""),
             _curve_section(df, f"pruning_curve_{arch}.png" if several else "pruning_curve.png",
                            f"results/pruning_curve/{arch}" if several else "results/pruning_curve"))
            for arch, df in pooled.items()]  # fmt: skip


def _controls_section(controls: pd.DataFrame | None) -> list[tuple[str, str, str]]:
    if controls is None or controls.empty:
        return []
    tables = "".join(f"<h3>{_e(label)}</h3>" + _table(head, body) for label, head, body in controls_cells(controls))
    return [("controls", "Explanation metrics beside their controls", f"<p>{_e(CONTROLS_RULE)}</p>" + tables)]


def write_report(
    out: Path,
    study: StudyConfig,
    per_seed: pd.DataFrame,
    summary: pd.DataFrame,
    curves: pd.DataFrame,
    results: list[dict],
    pooled_curve: dict[str, pd.DataFrame] | None = None,
    convergence: pd.DataFrame | None = None,
    controls: pd.DataFrame | None = None,
) -> Path:
    """index.html + the plots in `out` (`pooled_curve`: the pruning_curve arm's cuts per arch;
    `convergence`: how each validation curve ended; `controls`: `controls.explanation_controls`)."""
    write_plots(out, per_seed, curves)
    head, body = table_cells(summary)
    unavailable = summary[summary["status"] != "ok"]
    notes = "".join(
        f"<li><b>{_e(arm_label(r['arm'], r['method']))}</b> ({_e(r['arch'])}): {_e(r['status'])} — "
        f"{_e(r['reason'])}</li>"
        for _, r in unavailable.iterrows()
    )
    overview = (
        f"<p>Architectures: {_e(', '.join(study.archs))}; seeds: {_e(study.seeds)}; arms: "
        f"{_e(', '.join(study.arms))}; filter-pruning criteria: {_e(', '.join(study.criteria))}.</p>"
        "<p>Every arm of a seed uses that seed's baseline split (split.csv). Metrics are on each "
        "seed's test split: mean ± sample standard deviation over seeds. <i>After pruning</i> is "
        "before fine-tuning; Δ is the final value minus the same seed's baseline. MACs and "
        "parameters by torch-pruning's counter; latency is the median CPU wall time of one forward "
        "pass, measured when each model finished (a shared machine makes it noisy).</p>"
        + (f"<p>External test set (ISIC 2018 Task 3, resized to the model input): "
           f"<code>{_e(study.external_test)}</code>.</p>" if study.external_test else "")
        + (f"<ul>{notes}</ul>" if notes else "")
    )  # fmt: skip
    per_seed_cols = ["unit", "status"] + [
        c for c in per_seed.columns
        if c.startswith(("test_", "delta_", "ext_")) or c in ("pruned_ratio", "macs", "params")
        or c.startswith("latency_ms_b")
    ]  # fmt: skip
    ps = per_seed[per_seed_cols]
    ps_body = [
        [("" if pd.isna(v) else (f"{v:.4g}" if isinstance(v, float) else str(v))) for v in row]
        for row in ps.itertuples(index=False)
    ]
    sections = [
        ("overview", "Study", overview),
        ("results", "Results (mean ± std over seeds)", _table(head, body)),
        ("pruning", "Accuracy vs pruned ratio",
         _fig("accuracy_vs_ratio.png", "Test accuracy vs fraction of filters removed, per criterion")
         + _fig("balanced_accuracy_vs_ratio.png", "Test balanced accuracy vs fraction of filters removed")),
        ("cost", "Accuracy, latency and MACs",
         _fig("accuracy_vs_macs.png", "Test accuracy vs MACs of the final models")
         + _fig("latency_vs_macs.png", "Measured CPU latency vs MACs")),
        ("retention", "Explanations kept under trunk pruning",
         _fig("retention_front.png", "A ProtoPNet's trunk pruned by each criterion: test balanced "
              "accuracy and explanation retention (1: as the unpruned model explains) against MACs")
         + _retention_table(results)),
        *_curve_sections(pooled_curve or {}),
        ("recall", "Per-class recall", _fig("per_class_recall.png", "Test recall per class and arm")),
        ("protopnet", "ProtoPNet stages", _stages_table(results)),
        *_controls_section(controls),
        ("convergence", "Convergence of each budget", _convergence_section(convergence)),
        ("per-seed", "Per-seed results", _table(per_seed_cols, ps_body)),
        ("config", "Study configuration",
         f"<pre>{_e(yaml.safe_dump(study.to_dict(), sort_keys=False))}</pre>"),
    ]  # fmt: skip
    sections = [s for s in sections if s[0] not in _sections_without_arms(study)]
    return atomic_write_text(
        out / "index.html", render_html(f"protoprune study: {study.name}", sections)
    )


def _sections_without_arms(study: StudyConfig) -> set[str]:
    """Sections whose figures would be empty: no arm of the study draws them."""
    hidden = set()
    if not {"filter_pruning", "protopnet_filter_pruning"} & set(study.arms):
        hidden.add("pruning")
    if "protopnet_filter_pruning" not in study.arms:
        hidden.add("retention")
    return hidden
