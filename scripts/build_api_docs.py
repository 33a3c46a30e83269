"""Write the API reference (docs/api/) from the public modules' docstrings with pdoc.

    python scripts/build_api_docs.py [--out docs/api]

The modules listed are the public API: what README's "As a library" section and `examples/` use.
tests/api/test_api_docs.py rebuilds the pages and fails when the committed ones differ.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PUBLIC_MODULES = [
    "protoprune",  # the criteria, FilterPruner, oneshot_curve, lrp_batch, require_explainable
    "protoprune.config",  # load_config, RunConfig: every run's settings
    "protoprune.data.export",  # write_image_folder: a user's torch Dataset as files
    "protoprune.train.run",  # run_training, evaluate_checkpoint
    "protoprune.protopnet.repush",  # push_checkpoint
    "protoprune.explain.analysis",  # explain_files, analyse_checkpoint
    "protoprune.explain.localisation",  # heatmap against a lesion mask, with chance levels
    "protoprune.explain.sanity",  # randomisation checks of the explanations
    "protoprune.explain.retention",  # how much of its explanations a pruned ProtoPNet keeps
    "protoprune.report.html",  # build_report
    "protoprune.experiments.filter_pruning",  # prune_filters: the iterative schedule with fine-tuning
    "protoprune.experiments.pruning_curve",  # pruning_curve: one-shot cuts of a checkpoint
    "protoprune.experiments.repair_control",  # repair_control: trunk pruning's retention control
    "protoprune.prune.filters",  # run_schedule: the iterative schedule on a model
    "protoprune.prune.curve",  # CurveSettings, curve_block: the curve's one-shot cuts
    "protoprune.prune.compare",  # criterion and paired tables over runs
    "protoprune.study.retention",  # trunk pruning over seeds: criteria at equal MACs, the control
    "protoprune.report.pruning",  # summarize_schedules: the comparison of runs written out
    "protoprune.report.curves",  # summarize_curves: curves of several runs pooled
    "protoprune.protopnet.prototype_pruning",  # prune_prototypes
    "protoprune.demo",  # run_demo
]


def build(out: Path) -> list[Path]:
    """Render PUBLIC_MODULES into `out`; returns the files written."""
    import pdoc
    import pdoc.render

    import protoprune

    for name in protoprune.__all__:  # the lazy names, resolved so that pdoc sees them
        setattr(protoprune, name, getattr(protoprune, name))
    pdoc.render.configure(docformat="markdown", show_source=False, search=False)
    pdoc.pdoc(*PUBLIC_MODULES, output_directory=out)
    return sorted(p for p in out.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/api"))
    args = ap.parse_args()
    files = build(args.out)
    print(f"{len(files)} files -> {args.out}/ (open {args.out / 'protoprune.html'})")


if __name__ == "__main__":
    main()
