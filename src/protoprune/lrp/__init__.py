"""LRP for protoprune's models: zennit rules, composites and canonizers, and the prototype layer's
PRP rule. Below both `explain` (heatmaps) and `prune` (filter scores), which share them."""
