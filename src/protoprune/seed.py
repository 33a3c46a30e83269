"""Seeds set in one place, for reproducible CPU runs."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from .devices import check_device


def set_seed(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch.Generator for samplers and loaders."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def resolve_device(name: str = "auto") -> torch.device:
    """The named device (auto: CUDA when present); a misspelt or absent one is a ConfigError."""
    check_device(name, "--device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
