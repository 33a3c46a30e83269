"""The demo pipeline: what `protoprune demo` runs on the bundled real data."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from .config import load_config
from .io import prepare_run_dir
from .train.run import run_training

log = logging.getLogger(__name__)


def packaged_config(name: str) -> Path:
    """Path of a config shipped with the package (src/protoprune/configs/NAME)."""
    return Path(str(resources.files("protoprune").joinpath("configs", name)))


def run_demo(out: str | Path = "runs/demo", force: bool = False, epochs: int | None = None) -> dict:
    """Train the baseline on the bundled data; every stage writes its own sub-folder of `out`."""
    out = prepare_run_dir(out, force=force)
    overrides = [] if epochs is None else [f"train.epochs={epochs}"]
    cfg = load_config(packaged_config("demo.yaml"), overrides)
    results = {"baseline": run_training(cfg, out / "baseline")}
    return results
