"""The demo pipeline: what `protoprune demo` runs on the bundled real data.

Stages, each in its own sub-folder of the demo folder: a baseline ResNet18, a ProtoPNet on the same
trunk (warm-up, joint, push, last-layer stage). A summary table compares them.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from .config import load_config
from .io import atomic_write_json, atomic_write_text, prepare_run_dir
from .metrics import HEADLINE
from .train.run import run_training

log = logging.getLogger(__name__)


def packaged_config(name: str) -> Path:
    """Path of a config shipped with the package (src/protoprune/configs/NAME)."""
    return Path(str(resources.files("protoprune").joinpath("configs", name)))


def _row(stage: str, metrics: dict) -> dict:
    return {"stage": stage, **{k: metrics.get(k) for k in HEADLINE}}


def summary_markdown(rows: list[dict]) -> str:
    lines = ["# protoprune demo: test metrics per stage", "",
             "| stage | " + " | ".join(HEADLINE) + " |", "|---" * (len(HEADLINE) + 1) + "|"]
    for r in rows:
        cells = ["n/a" if r[k] is None else f"{r[k]:.4f}" for k in HEADLINE]
        lines.append(f"| {r['stage']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_demo(out: str | Path = "runs/demo", force: bool = False, epochs: int | None = None) -> dict:
    """Run every stage on the bundled data; returns the per-stage results and writes summary.md."""
    out = prepare_run_dir(out, force=force)
    overrides = [] if epochs is None else [f"train.epochs={epochs}"]
    results: dict = {}
    rows: list[dict] = []

    base_cfg = load_config(packaged_config("demo.yaml"), overrides)
    results["baseline"] = run_training(base_cfg, out / "baseline")
    rows.append(_row("baseline CNN", results["baseline"]["test"]))

    proto_cfg = load_config(packaged_config("demo_protopnet.yaml"))
    results["protopnet"] = run_training(proto_cfg, out / "protopnet")
    stages = results["protopnet"]["stages"]
    rows.append(_row("ProtoPNet before push", stages["before_push"]["test"]))
    rows.append(_row("ProtoPNet after push", stages["after_push"]["test"]))
    rows.append(_row("ProtoPNet after last-layer stage", stages["after_last_layer"]["test"]))

    atomic_write_json(out / "summary.json", rows)
    atomic_write_text(out / "summary.md", summary_markdown(rows))
    log.info("\n%s", summary_markdown(rows))
    return results
