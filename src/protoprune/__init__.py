"""protoprune: interpretable (ProtoPNet) and efficient (explanation-guided pruning) image classifiers.

The library's public names, for models protoprune did not build (see `examples/`):

- filter-pruning criteria as torch-pruning `Importance`s: `LRPImportance`, `WeightImportance`,
  `GradImportance`, `TaylorImportance`, `RandomImportance` (call `prepare(model, batches)` before
  each pruning step), and `CRITERIA`, the registry of their names;
- `FilterPruner` (iterative pruning to cumulative ratios over torch-pruning's dependency graph),
  `oneshot_curve` (score once, prune copies to each ratio, evaluate) and `paired_comparison`
  (a criterion minus the random control per ratio, with a 95 % interval over seeds or draws);
- `lrp_batch` (the LRP relevance of a batch at any layers' outputs) and `require_explainable`.

They are imported on first use, so `import protoprune` and the command line stay fast.

The pipeline the command line runs is a set of functions too: `protoprune.config.load_config`
(a run's settings from YAML and overrides), `protoprune.data.export.write_image_folder` (your
torch Datasets written once as the image folder a run reads), `protoprune.train.run.run_training` (a baseline or a
ProtoPNet with its push and last-layer stage), `protoprune.explain.analysis.explain_files` (an
explanation of any image), `protoprune.report.html.build_report` (the HTML report, with the
explanation metrics of `protoprune.explain.localisation` and `protoprune.explain.sanity`),
`protoprune.experiments.filter_pruning.prune_filters` (the iterative schedule with fine-tuning),
`protoprune.experiments.pruning_curve.pruning_curve`, `protoprune.prune.compare` (tables over
runs; `protoprune.report.pruning` and `protoprune.report.curves` write their reports),
`protoprune.protopnet.prototype_pruning.prune_prototypes` and `protoprune.demo.run_demo`.
"""

from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "LRPImportance": "prune.importance",
    "WeightImportance": "prune.importance",
    "GradImportance": "prune.importance",
    "TaylorImportance": "prune.importance",
    "RandomImportance": "prune.importance",
    "FilterImportance": "prune.importance",
    "CRITERIA": "prune.importance",
    "FilterPruner": "prune.structural",
    "oneshot_curve": "prune.oneshot",
    "paired_comparison": "prune.oneshot",
    "lrp_batch": "prune.relevance",
    "require_explainable": "lrp.composites",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'protoprune' has no attribute {name!r}")
