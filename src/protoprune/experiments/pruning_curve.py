"""The pruning curve of a classifier checkpoint as a run folder that resumes.

`prune.curve` cuts and evaluates; this runs every criterion x normalisation x reference-set draw
on the checkpoint and writes `curve.csv` and `curve_layers.csv` (appended as each draw finishes,
so an interrupted run resumes), `curve.json`, and the report (`curve.md`, `curve.png`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import distributed
from ..errors import ConfigError
from ..io import atomic_write_json, atomic_write_text
from ..progress import tqdm
from ..prune.curve import METRICS, CurveSettings, curve_block, evaluate_preloaded, preload
from ..prune.filters import reference_set
from ..prune.importance import build_importance
from ..prune.measure import count_macs_params
from ..prune.relevance import input_bounds, never_pruned, prunable_modules
from ..report.curves import write_curve_report

log = logging.getLogger(__name__)

BLOCK = ["method", "normalize", "ref_seed"]


def pruning_curve(
    checkpoint_path: str | Path,
    out_dir: str | Path | None = None,
    settings: CurveSettings | None = None,
    cfg=None,
    *,
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Run the no-fine-tune pruning curve of a classifier checkpoint; returns the curve table."""
    settings = settings or CurveSettings()
    settings.check()
    source, out, done = _open_curve_run(checkpoint_path, out_dir, settings, cfg, force, resume)
    ckpt, cfg = source.ckpt, source.cfg
    device = distributed.resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    loaders, _ = source.data(run_dir=out)
    model = source.model(device).eval()
    evals = {split: preload(getattr(loaders, split)) for split in settings.splits}
    names = loaders.class_names
    base = {f"{s}_{k}": v for s, d in evals.items()
            for k, v in _subset(evaluate_preloaded(model, d, names, device)).items()}  # fmt: skip
    macs0, params0 = count_macs_params(model, cfg.data.image_size, device)
    zero = {"ratio": 0.0, "filters_removed_ratio": 0.0, "channels_removed_ratio": 0.0,
            "filters_removed": 0, "macs": macs0, "params": params0, **base}  # fmt: skip
    bn_batches = None
    if settings.bn_recalibrate:
        it = iter(loaders.train)
        bn_batches = [next(it) for _ in range(min(settings.bn_batches, len(loaders.train)))]
    rows = [done] if len(done) else []
    # draw-major: an interrupted run holds whole draws of every criterion
    blocks = [(m, n, s) for s in range(settings.ref_seeds) for m in settings.methods
              for n in _norms(m, settings.normalizations)]  # fmt: skip
    finished = set(map(tuple, done[BLOCK].values.tolist())) if len(done) else set()
    cache: dict[tuple[str, str], list[dict]] = {}  # a data-free criterion's block, for every draw
    never = never_pruned(model, prune_linear=cfg.prune_filters.prune_linear)
    initial = {n: x.weight.shape[0] for n, x in prunable_modules(model, never).items()}
    widths = pd.read_csv(out / "curve_layers.csv").to_dict("records") \
        if resume and (out / "curve_layers.csv").is_file() else []  # fmt: skip
    for method, norm, seed in tqdm(blocks, desc="pruning curve", disable=not progress):
        if (method, norm, seed) in finished:
            continue
        pf = dataclasses.replace(cfg.prune_filters, normalize=norm)
        imp = build_importance(pf, method, ignored_layers=never, seed=seed,
                               bounds=input_bounds(cfg.data.mean, cfg.data.std))  # fmt: skip
        deterministic = not imp.needs_data and method != "random"  # weight: same cut every draw
        if deterministic and (method, norm) not in cache:  # resumed: an earlier draw's cut serves
            cache.update(_finished_block(done, widths, method, norm))
        if deterministic and (method, norm) in cache:
            block = cache[(method, norm)]
        else:
            reference = reference_set(loaders.push.dataset, pf.ref_per_class, seed,
                                      cfg.data.batch_size)  # fmt: skip
            block = curve_block(model, imp, reference, settings.ratios, evals, names,
                                cfg.data.image_size, device, pf.ratio_unit, 1, bn_batches,
                                pf.prune_linear)  # fmt: skip
            if deterministic:
                cache[(method, norm)] = block
        widths.extend({"method": method, "normalize": norm, "ref_seed": seed, "ratio": r["ratio"],
                       "layer": n, "filters": w, "initial": initial[n]}
                      for r in block for n, w in r["_widths"].items())  # fmt: skip
        rows.append(_block_frame(block, zero, method, norm, seed))
        _write_progress(out, rows, widths)
    df = pd.concat(rows, ignore_index=True)
    write_curve_report(df, out, f"Pruning curve (no fine-tuning): {cfg.model.arch}, {ckpt['path']}",
                       pd.DataFrame(widths))  # fmt: skip
    return df


def _open_curve_run(checkpoint_path, out_dir, settings: CurveSettings, cfg, force: bool, resume: bool):
    """Check the checkpoint and the folder, then record the run: (source, folder, rows done)."""
    from ..config import save_config
    from ..io import check_run_dir, prepare_run_dir
    from ..train.run import open_checkpoint

    source = open_checkpoint(checkpoint_path, cfg)
    ckpt, cfg = source.ckpt, source.cfg
    if ckpt.get("model_type") != "classifier":
        raise ConfigError(
            f"prune-curve needs a classifier checkpoint, got {ckpt.get('model_type')!r}",
            "give the best.pt of a baseline run (`protoprune train` with model.type: classifier)",
        )
    out = Path(out_dir or Path(cfg.output_dir) / f"{cfg.name}-prune-curve")
    check_run_dir(out, force=force, resume=resume)
    meta = {"checkpoint": str(ckpt["path"]), "settings": _settings_dict(settings),
            "ref_per_class": cfg.prune_filters.ref_per_class,
            "round_to": 1, "ratio_unit": cfg.prune_filters.ratio_unit}  # fmt: skip
    done = _resume_rows(out, meta) if resume else pd.DataFrame()
    prepare_run_dir(out, force=force, resume=resume)
    save_config(cfg, out / "config.yaml", {"checkpoint": str(ckpt["path"]), "curve": meta["settings"]})
    atomic_write_json(out / "curve.json", meta)
    return source, out, done


def _block_frame(block: list[dict], zero: dict, method: str, norm: str, seed: int) -> pd.DataFrame:
    """One criterion's draw as curve rows, the unpruned model first; logged."""
    block = [{k: v for k, v in r.items() if k != "_widths"} for r in block]
    frame = pd.DataFrame([zero, *block]).assign(method=method, normalize=norm, ref_seed=seed)
    log.info("%s (%s) draw %d: test balanced accuracy %s", method, norm, seed,
             ", ".join(f"{r['ratio']:.2f}: {r['test_balanced_accuracy']:.3f}" for r in block))  # fmt: skip
    return frame[BLOCK + [c for c in frame.columns if c not in BLOCK]]


def _write_progress(out: Path, rows: list[pd.DataFrame], widths: list[dict]) -> None:
    """curve.csv and curve_layers.csv after every finished draw (what --resume reads back)."""
    atomic_write_text(out / "curve_layers.csv", pd.DataFrame(widths).to_csv(index=False))
    atomic_write_text(out / "curve.csv", pd.concat(rows, ignore_index=True).to_csv(index=False))


def _finished_block(done: pd.DataFrame, widths: list[dict], method: str, norm: str) -> dict:
    """{(method, norm): block} rebuilt from a resumed run's rows and widths of one earlier draw."""
    if not len(done):
        return {}
    rows = done[(done["method"] == method) & (done["normalize"] == norm) & (done["ratio"] > 0)]
    if not len(rows):
        return {}
    seed = rows["ref_seed"].min()
    rows = rows[rows["ref_seed"] == seed]
    cut = [w for w in widths if (w["method"], w["normalize"], w["ref_seed"]) == (method, norm, seed)]
    block = []
    for r in rows.drop(columns=BLOCK).to_dict("records"):
        layer = {w["layer"]: w["filters"] for w in cut if np.isclose(w["ratio"], r["ratio"])}
        if not layer:  # widths not recorded for that draw: cut again
            return {}
        block.append({**r, "_widths": layer})
    return {(method, norm): block}


def _subset(metrics: dict) -> dict:
    return {k: metrics[k] for k in METRICS}


def _norms(method: str, normalizations: Sequence[str]) -> list[str]:
    """The normalisations a criterion is run with: random's scores have no scale to normalise."""
    return ["none"] if method == "random" else list(dict.fromkeys(normalizations))


def _settings_dict(s: CurveSettings) -> dict[str, Any]:
    return {"methods": list(s.methods), "ratios": [float(r) for r in s.ratios],
            "ref_seeds": s.ref_seeds, "normalizations": list(s.normalizations),
            "bn_recalibrate": s.bn_recalibrate, "bn_batches": s.bn_batches,
            "splits": list(s.splits)}  # fmt: skip


def _resume_rows(out: Path, meta: dict) -> pd.DataFrame:
    """Rows of an interrupted run with the same checkpoint and ratios (other blocks are redone)."""
    import json

    if not (out / "curve.csv").is_file() or not (out / "curve.json").is_file():
        return pd.DataFrame()
    old = json.loads((out / "curve.json").read_text())
    same = all(old.get(k) == meta[k] for k in ("checkpoint", "ref_per_class", "ratio_unit")) and (
        old["settings"]["ratios"] == meta["settings"]["ratios"]
        and old["settings"]["bn_recalibrate"] == meta["settings"]["bn_recalibrate"]
        and old["settings"].get("splits") == meta["settings"]["splits"]
    )
    if not same:
        raise ConfigError(
            f"{out} holds a curve of another checkpoint or other ratios",
            "use --force to start over (the old folder is kept) or choose another --out",
        )
    return pd.read_csv(out / "curve.csv")
