"""Collect a study folder of baseline and ProtoPNet units (`protoprune study
configs/study_protopnet.yaml` or `configs/study_ham10000.yaml`, or a kept copy such as
studies/ham10000 without checkpoints) into docs/results.md's tables, and draw its per-class
recall figure.

Reads the finished units' result.json files (a unit still running is left out), so it needs
neither the data nor the study's own tables. Prints, as markdown: each model and ProtoPNet stage
(mean ± std over seeds), the paired gap to the same seed's baseline with a 95 % t interval, what
each push cost, what prototype pruning removed (per class), the external test (ISIC 2018), how
each training curve ended, and every explanation metric beside its control (`study.controls`).

Usage: python scripts/protopnet_results.py STUDY_DIR [--figures docs/figures] [--figure-name NAME] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from protoprune.metrics import mean_std, paired_t_interval
from protoprune.study.aggregate import add_deltas, convergence_table
from protoprune.study.controls import controls_markdown, explanation_controls
from protoprune.study.plots import plot_per_class_recall

METRICS = ("accuracy", "balanced_accuracy", "auroc_macro", "melanoma_sensitivity")
STAGES = {"before_push": "ProtoPNet, before push", "after_push": "ProtoPNet, after push",
          "after_last_layer": "ProtoPNet, after last-layer stage"}  # fmt: skip


def _units(study: Path, name: str, seeds: set[int] | None = None) -> dict[int, Path]:
    """The finished units of that name by seed (a unit still running has no done.json)."""
    found = {int(p.parent.name.removeprefix("seed")): p for p in sorted(study.glob(f"runs/*/seed*/{name}"))
             if (p / "done.json").is_file()}  # fmt: skip
    return {k: p for k, p in found.items() if seeds is None or k in seeds}


def _row(label: str, values: dict[str, list[float]]) -> str:
    return f"| {label} | " + " | ".join(mean_std(values[m]) for m in METRICS) + " |"


def stage_table(study: Path, per_seed: pd.DataFrame, seeds: set[int] | None) -> str:
    lines = ["| model, stage | accuracy | balanced accuracy | macro AUROC | melanoma sensitivity |",
             "|---|---|---|---|---|"]  # fmt: skip
    base = per_seed[per_seed["arm"] == "baseline"]
    lines.append(_row("baseline CNN", {m: base[f"test_{m}"].tolist() for m in METRICS}))
    results = [json.loads((p / "result.json").read_text()) for p in _units(study, "protopnet", seeds).values()]
    for stage, label in STAGES.items():
        lines.append(_row(label, {m: [r["stages"][stage][f"test_{m}"] for r in results] for m in METRICS}))
    pruned = per_seed[per_seed["arm"] == "protopnet_pruned"]
    lines.append(_row("+ prototype pruning, fine-tuned", {m: pruned[f"test_{m}"].tolist() for m in METRICS}))
    return "\n".join(lines)


def gap_table(per_seed: pd.DataFrame) -> str:
    lines = ["| difference (same seed) | balanced accuracy, points | per seed | macro AUROC, points | per seed |",
             "|---|---|---|---|---|"]  # fmt: skip
    by = {arm: df.set_index("seed") for arm, df in per_seed.groupby("arm")}
    for arm, label in (("protopnet", "ProtoPNet − baseline"), ("protopnet_pruned", "pruned ProtoPNet − baseline")):
        cells = []
        for m in ("balanced_accuracy", "auroc_macro"):
            d = 100 * (by[arm][f"test_{m}"] - by["baseline"][f"test_{m}"]).dropna()
            ci = paired_t_interval(d.to_numpy())
            cells += [f"{ci['mean']:+.1f} [{ci['ci_low']:+.1f}, {ci['ci_high']:+.1f}]",
                      ", ".join(f"{v:+.1f}" for v in d)]  # fmt: skip
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def push_costs(study: Path, seeds: set[int] | None) -> str:
    rows = []
    for seed, p in _units(study, "protopnet", seeds).items():
        for push in json.loads((p / "metrics.json").read_text()).get("pushes", []):
            before = push["before_push"]["test"]["balanced_accuracy"]
            after = push["after_push"]["test"]["balanced_accuracy"]
            rows.append(f"seed {seed} epoch {push['epoch']}: {100 * (after - before):+.1f}")
    return "push cost, test balanced accuracy after minus before, points: " + "; ".join(rows)


def pruning_table(study: Path, seeds: set[int] | None) -> str:
    per_class: dict[str, list[str]] = {}
    shares = []
    for p in _units(study, "protopnet-pruned", seeds).values():
        d = json.loads((p / "prototype_pruning.json").read_text())
        shares.append(1 - d["prototypes_after"] / d["prototypes_before"])
        for c in d["per_class"]:
            per_class.setdefault(c["class"], []).append(f"{c['before']}→{c['after']}")
    lines = [f"prototypes removed: {mean_std([100 * s for s in shares], '.0f')} %", "",
             "| class | prototypes before → after (per seed) |", "|---|---|"]  # fmt: skip
    lines += [f"| {c} | {', '.join(v)} |" for c, v in per_class.items()]
    return "\n".join(lines)


def external_table(per_seed: pd.DataFrame) -> str:
    lines = ["| model | accuracy | balanced accuracy | macro AUROC | melanoma sensitivity |", "|---|---|---|---|---|"]
    for arm, label in (("baseline", "baseline CNN"), ("protopnet", "ProtoPNet"),
                       ("protopnet_pruned", "+ prototype pruning")):  # fmt: skip
        df = per_seed[per_seed["arm"] == arm]
        lines.append(f"| {label} | " + " | ".join(mean_std(df[f"ext_{m}"]) for m in METRICS) + " |")
    return "\n".join(lines)


def convergence_lines(results: list[dict]) -> str:
    conv = convergence_table(results)
    out = []
    for arm, df in conv.groupby("arm"):
        out.append(f"{arm}: {int(df['flat'].sum())} of {len(df)} training curves flat "
                   f"(gain of the last 2 evaluations {', '.join(f'{g:.3f}' for g in df['gain_last'])})")  # fmt: skip
    return "\n".join(out)


def finished_results(study: Path, seeds: set[int] | None = None) -> list[dict]:
    """result.json of every finished unit (done.json present) of those seeds, in seed order."""
    return [json.loads((p / "result.json").read_text()) for p in sorted(study.glob("runs/*/seed*/*"))
            if (p / "done.json").is_file()
            and (seeds is None or int(p.parent.name.removeprefix("seed")) in seeds)]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--figures", type=Path, default=Path("docs/figures"))
    ap.add_argument("--figure-name", default="protopnet_vs_baseline_per_class_recall.png")
    ap.add_argument("--seeds", help="comma-separated seeds (default: every finished one), e.g. the "
                    "seeds whose every unit has finished")  # fmt: skip
    args = ap.parse_args()
    seeds = None if args.seeds is None else {int(s) for s in args.seeds.split(",")}
    results = finished_results(args.study, seeds)
    if not results:
        ap.exit(2, f"error: no finished unit under {args.study}/runs\nfix: give a study folder\n")
    per_seed = add_deltas(pd.DataFrame([r for res in results for r in res["rows"]]))
    for title, text in (("Test split", stage_table(args.study, per_seed, seeds)), ("Gap", gap_table(per_seed)),
                        ("Pushes", push_costs(args.study, seeds)), ("Prototype pruning", pruning_table(args.study, seeds)),
                        ("External test", external_table(per_seed)),
                        ("Convergence", convergence_lines(results))):  # fmt: skip
        print(f"## {title}\n\n{text}\n")
    print("\n".join(controls_markdown(explanation_controls(per_seed))))
    args.figures.mkdir(parents=True, exist_ok=True)
    print(f"figure: {plot_per_class_recall(per_seed, args.figures / args.figure_name)}")


if __name__ == "__main__":
    main()
