"""ProtoPNet (Chen et al. 2019) in one place: the model, its training phases, the push, the
last-layer stage, prototype pruning, re-pushing a checkpoint and the repair that keeps a
ProtoPNet whole while its trunk is pruned.

A slice through the layers rather than one layer: each module is ranked on its own in
`tests/core/test_layering.py` (the model sits beside `models`, the phases and the push on top of
`train`, prototype pruning and the trunk repair on top of `explain`), so importing this package
imports nothing; import the module you need, e.g. `from protoprune.protopnet.push import
push_prototypes`.
"""
