"""Experiments on a checkpoint: each opens a run folder, runs a part of the pruning library on
the checkpoint and writes the results with their reports."""
