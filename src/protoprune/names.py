"""The names every layer agrees on, declared once, in the order tables and plots list them.

The registries that hold the implementations (`prune.importance.CRITERIA`,
`models.factory.MODEL_TYPES`, `train.run.TRAINERS`) are built from these and refuse any other
name; the config's choices, the CLI's, the study's and the curve's defaults read them from here.
They sit at the bottom of the package so that `config` (which must not import the models or the
pruning code) can validate a name before any long work.
"""

from __future__ import annotations

# filter-pruning criteria (Yeom et al.'s four and the random control)
CRITERION_NAMES = ("lrp", "weight", "grad", "taylor", "random")
# what a run trains (model.type)
MODEL_TYPE_NAMES = ("classifier", "protopnet")
# explanation retention under trunk pruning (explain.retention)
RETENTION_MEASURE_NAMES = ("same_source_image", "same_source_cell", "topk_jaccard", "same_strongest",
                           "prp_spearman")  # fmt: skip
