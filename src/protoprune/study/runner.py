"""`run_study`: every unit of a study, resumable, then the tables, plots and the HTML report."""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import time
import traceback
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..errors import ConfigError
from ..io import atomic_write_json, atomic_write_text, prepare_run_dir
from ..progress import tqdm
from .config import StudyConfig, load_study_config, study_from_dict
from .units import ExternalTest, Unit, fingerprint, plan_units, run_unit, unit_config, unit_dir

log = logging.getLogger(__name__)

LOG_FILE = "study_log.jsonl"
RESUMABLE_KINDS = ("baseline", "protopnet", "curve")  # the units with a checkpoint to continue


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
        # one write of one short line in append mode: whole lines, also when the parallel
        # workers of `run_study(jobs=N)` log at the same time (a read-and-rewrite would lose some)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def events(self, invocation: str | None = None) -> list[dict]:
        if not self.path.is_file():
            return []
        rows = [json.loads(s) for s in self.path.read_text().splitlines() if s.strip()]
        return [r for r in rows if invocation is None or r["invocation"] == invocation]

    def last_start(self, unit: str) -> str | None:
        """The fingerprint the unit was last started with (by any invocation), or None."""
        starts = [e for e in self.events() if e["unit"] == unit and e["event"] == "started"]
        return starts[-1].get("fingerprint") if starts else None


def can_resume(unit: Unit, folder: Path, started_with: str | None, expected: str) -> bool:
    """Whether an interrupted attempt at `unit` can be continued instead of started over: it was
    started with the same settings (fingerprint), and it left a checkpoint to continue from (a
    training's unfinished last.pt, a pruning curve's finished rows). A study killed an hour into a
    ProtoPNet training then loses at most the epoch or stage in progress."""
    if started_with != expected or unit.kind not in RESUMABLE_KINDS:
        return False
    if unit.kind == "curve":
        return (folder / "curve.csv").is_file()
    last = folder / "checkpoints" / "last.pt"
    if not last.is_file():
        return False
    from ..errors import CheckpointError
    from ..train.checkpoint import checkpoint_finished

    try:
        return not checkpoint_finished(last)
    except CheckpointError:  # a torn or foreign file: start over, the folder is kept aside
        return False


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
        resume = can_resume(unit, folder, logger.last_start(unit.key), expected)
        log.info("study: %s %s", "resuming" if resume else "running", unit.key)
        logger(unit.key, "started", fingerprint=expected, resumed=resume)
        t0 = time.perf_counter()
        result = run_unit(unit, cfg, study, out, external, resume=resume)
        seconds = time.perf_counter() - t0
        results.append(result)
        run_ids[unit.key] = uuid.uuid4().hex
        result["seconds"] = seconds
        atomic_write_json(folder / "result.json", result)
        atomic_write_json(folder / "done.json", {"unit": unit.key, "fingerprint": expected,
                                                 "run_id": run_ids[unit.key], "seconds": seconds,
                                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})  # fmt: skip
        logger(unit.key, "ran", seconds=round(seconds, 2), resumed=resume)
    return results


def seed_groups(study: StudyConfig) -> list[StudyConfig]:
    """One study a (architecture, seed): the units of one seed depend only on each other, so
    the groups can run side by side; a unit's fingerprint does not depend on the other seeds."""
    return [dataclasses.replace(study, archs=[a], seeds=[s]) for a in study.archs for s in study.seeds]


def _run_group(study: dict, out: str, threads: int) -> str | None:
    """A worker of `run_in_parallel`: the group's units; returns the traceback if one failed."""
    import torch

    from .. import progress

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    progress.switch_off()  # bars of several processes would overwrite each other: a line an epoch
    torch.set_num_threads(threads)  # a unit with train.threads set still uses its own
    try:
        run_units(study_from_dict(study), Path(out), progress=False)
    except BaseException:  # noqa: BLE001 (reported to the parent, which raises)
        return traceback.format_exc()
    return None


def run_in_parallel(study: StudyConfig, out: Path, jobs: int) -> None:
    """Run the seed groups in `jobs` processes (spawned: safe with CUDA), each on
    cpu_count // jobs intra-op threads. On 2 AVX2 cores a training step of the small-image
    ResNet18 (128 images at 28 px) took 9.8 s on one thread and 5.7 s on two, so two 1-thread
    processes get 1.15x the throughput of one 2-thread process; on a GPU these small models leave
    the device mostly idle, and seeds side by side share it."""
    groups = seed_groups(study)
    threads = max(1, (os.cpu_count() or 1) // min(jobs, len(groups)))
    log.info("study: %d seed groups in %d processes, intra-op threads each: %d", len(groups), jobs, threads)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {f"{g.archs[0]}/seed{g.seeds[0]}": pool.submit(_run_group, g.to_dict(), str(out), threads)
                   for g in groups}  # fmt: skip
        failed = [(k, tb) for k, f in futures.items() if (tb := f.result()) is not None]
    if failed:
        key, tb = failed[0]
        raise RuntimeError(f"study group {key} failed (the other groups' finished units are kept):\n{tb}")


def run_study(
    cfg_path_or_obj: str | Path | StudyConfig | dict,
    out_dir: str | Path,
    force: bool = False,
    resume: bool = True,
    overrides: list[str] | None = None,
    progress: bool = True,
    jobs: int = 1,
) -> pd.DataFrame:
    """Run (or resume) a study in `out_dir`; returns the per-seed results table.

    Units already done with the same settings are skipped (`resume`, the default); `force`
    moves an existing `out_dir` aside (to `<name>.old-N`) and starts over. `jobs` > 1 runs the
    seeds in that many processes (`run_in_parallel`); the results are the same as in one
    process at the same thread count. Writes results/per_seed.*, results/summary.* (mean +/- std
    over seeds), results/curves.csv, results/convergence.csv, results/explanation_controls.* (each explanation
    metric beside its control), the plots and index.html.
    """
    from .aggregate import (
        add_deltas,
        convergence_table,
        curves_table,
        pool_pruning_curves,
        summarize,
        write_tables,
    )
    from .controls import write_controls
    from .report import write_report

    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"--jobs {jobs!r}: the number of processes must be a positive integer",
                          "e.g. --jobs 3 to run three seeds side by side, or 1")  # fmt: skip
    study = load_study_config(cfg_path_or_obj, overrides)
    out = prepare_run_dir(out_dir, force=force, resume=resume and not force)  # force: start over
    atomic_write_text(out / "study.yaml", yaml.safe_dump(study.to_dict(), sort_keys=False))
    if jobs > 1:
        run_in_parallel(study, out, jobs)
    results = run_units(study, out, progress)  # after run_in_parallel: reads what it finished
    per_seed = add_deltas(pd.DataFrame([r for res in results for r in res["rows"]]))
    curves = curves_table(results)
    summary = summarize(per_seed)
    convergence = convergence_table(results)
    write_tables(out / "results", per_seed, summary, curves, convergence)
    controls = write_controls(out / "results", per_seed)
    pooled = pool_pruning_curves(out, results)
    write_report(out, study, per_seed, summary, curves, results, pooled, convergence, controls)
    log.info("study %s: %d units -> %s", study.name, len(results), out / "index.html")
    return per_seed


__all__ = ["run_study", "run_units", "run_in_parallel", "seed_groups", "unit_state", "can_resume",
           "StudyLog", "Unit"]
