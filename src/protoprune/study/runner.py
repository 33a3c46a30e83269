"""`run_study`: every unit of a study, resumable, then the tables, plots and the HTML report."""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..io import atomic_write_json, atomic_write_text, prepare_run_dir
from ..progress import tqdm
from .config import StudyConfig, load_study_config
from .units import ExternalTest, Unit, fingerprint, plan_units, run_unit, unit_config, unit_dir

log = logging.getLogger(__name__)

LOG_FILE = "study_log.jsonl"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def unit_state(folder: Path, expected: str) -> dict | None:
    """The unit's done marker when it is complete and current (same fingerprint), else None."""
    done = _read_json(folder / "done.json")
    if not isinstance(done, dict) or done.get("fingerprint") != expected:
        return None
    if not isinstance(_read_json(folder / "result.json"), dict):
        return None
    return done


class StudyLog:
    """An append-only record of what each invocation ran or skipped (read by humans and tests)."""

    def __init__(self, out: Path):
        self.path = out / LOG_FILE
        self.invocation = uuid.uuid4().hex[:12]

    def __call__(self, unit: str, event: str, **extra: Any) -> None:
        line = json.dumps({"invocation": self.invocation, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                           "unit": unit, "event": event, **extra})  # fmt: skip
        old = self.path.read_text() if self.path.is_file() else ""
        atomic_write_text(self.path, old + line + "\n")  # small file: rewrite, never half-written

    def events(self, invocation: str | None = None) -> list[dict]:
        if not self.path.is_file():
            return []
        rows = [json.loads(s) for s in self.path.read_text().splitlines() if s.strip()]
        return [r for r in rows if invocation is None or r["invocation"] == invocation]


def run_units(study: StudyConfig, out: Path, progress: bool = True) -> list[dict]:
    """Run every unit that is not done (in dependency order); returns every unit's result."""
    units = plan_units(study)
    external = ExternalTest(study.external_test)
    logger = StudyLog(out)
    run_ids: dict[str, str] = {}
    results = []
    for unit in tqdm(units, desc=f"study {study.name}", disable=not progress):
        folder = unit_dir(out, unit)
        cfg = unit_config(study, unit, out)
        deps = {d.key: run_ids.get(d.key, "") for d in unit.deps()}
        expected = fingerprint(study, unit, cfg, deps)
        done = unit_state(folder, expected)
        if done is not None:
            run_ids[unit.key] = done["run_id"]
            results.append(_read_json(folder / "result.json"))
            logger(unit.key, "skipped")
            continue
        log.info("study: running %s", unit.key)
        t0 = time.perf_counter()
        result = run_unit(unit, cfg, study, out, external)
        seconds = time.perf_counter() - t0
        results.append(result)
        run_ids[unit.key] = uuid.uuid4().hex
        result["seconds"] = seconds
        atomic_write_json(folder / "result.json", result)
        atomic_write_json(folder / "done.json", {"unit": unit.key, "fingerprint": expected,
                                                 "run_id": run_ids[unit.key], "seconds": seconds,
                                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})  # fmt: skip
        logger(unit.key, "ran", seconds=round(seconds, 2))
    return results


def run_study(
    cfg_path_or_obj: str | Path | StudyConfig | dict,
    out_dir: str | Path,
    force: bool = False,
    resume: bool = True,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run (or resume) a study in `out_dir`; returns the per-seed results table.

    Units already done with the same settings are skipped (`resume`, the default); `force`
    moves an existing `out_dir` aside (to `<name>.old-N`) and starts over. Writes
    results/per_seed.*, results/summary.* (mean +/- std over seeds), results/curves.csv, the
    plots and index.html.
    """
    from .aggregate import add_deltas, curves_table, pool_pruning_curves, summarize, write_tables
    from .report import write_report

    study = load_study_config(cfg_path_or_obj, overrides)
    out = prepare_run_dir(out_dir, force=force, resume=resume and not force)  # force: start over
    atomic_write_text(out / "study.yaml", yaml.safe_dump(study.to_dict(), sort_keys=False))
    results = run_units(study, out, progress)
    per_seed = add_deltas(pd.DataFrame([r for res in results for r in res["rows"]]))
    curves = curves_table(results)
    summary = summarize(per_seed)
    write_tables(out / "results", per_seed, summary, curves)
    pooled = pool_pruning_curves(out, results)
    write_report(out, study, per_seed, summary, curves, results, pooled)
    log.info("study %s: %d units -> %s", study.name, len(results), out / "index.html")
    return per_seed


__all__ = ["run_study", "run_units", "unit_state", "StudyLog", "Unit"]
