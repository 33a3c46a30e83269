"""The comparison study: baseline CNN, filter pruning per criterion, ProtoPNet (+ prototype
pruning), over several seeds, resumable, with one results folder, tables, plots and an HTML report.
"""

from .aggregate import add_deltas, summarize, summary_markdown
from .config import ARMS, CRITERIA, StudyConfig, load_study_config, study_from_dict
from .controls import explanation_controls
from .runner import StudyLog, can_resume, run_study
from .units import Unit, plan_units

__all__ = [
    "ARMS",
    "CRITERIA",
    "StudyConfig",
    "StudyLog",
    "Unit",
    "add_deltas",
    "can_resume",
    "explanation_controls",
    "load_study_config",
    "plan_units",
    "run_study",
    "study_from_dict",
    "summarize",
    "summary_markdown",
]
