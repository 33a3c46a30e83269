"""Explanation-guided filter pruning (Yeom et al. 2021) with physical removal (torch-pruning)."""

from .importance import CRITERIA, FilterImportance, build_importance
from .structural import FilterPruner, prune_step

__all__ = ["CRITERIA", "FilterImportance", "FilterPruner", "build_importance", "prune_step"]
