"""Training: the classifier loop, checkpoints, evaluation and whole runs."""

from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from .evaluate import evaluate_model, predict
from .loop import fit, train_one_epoch
from .run import evaluate_checkpoint, run_training

__all__ = [
    "evaluate_checkpoint",
    "evaluate_model",
    "fit",
    "load_checkpoint",
    "model_from_checkpoint",
    "predict",
    "run_training",
    "save_checkpoint",
    "train_one_epoch",
]
