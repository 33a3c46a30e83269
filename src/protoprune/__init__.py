"""protoprune: interpretable (ProtoPNet) and efficient (explanation-guided pruning) image classifiers."""

__version__ = "0.1.0"
