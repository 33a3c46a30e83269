"""The units of work of a study (one arm x architecture x seed each) and what each one runs.

Each unit writes its own folder under `<study>/runs/<arch>/seed<k>/<unit>/`, then `result.json`
(the rows it contributes to the tables) and last `done.json` (its fingerprint). A unit is done
when `done.json` matches the fingerprint it would have now: the unit's RunConfig and the run ids
of the units it builds on, so a rerun baseline also reruns the arms that start from it. A unit that
was started with that fingerprint but not finished (the process was killed) continues from its
checkpoint where it has one (trainings, pruning curves); the others start over.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..config import RunConfig
from ..errors import ConfigError
from ..metrics import HEADLINE
from ..models.backbones import family
from .config import StudyConfig

log = logging.getLogger(__name__)

KINDS = ("baseline", "curve", "filter", "protopnet", "protopnet_pruned", "protopnet_filter")
ARM_UNITS = {
    "baseline": ("baseline",),
    "filter_pruning": ("filter",),
    "protopnet": ("protopnet", "protopnet_pruned"),
    "protopnet_filter_pruning": ("protopnet_filter",),
    "pruning_curve": ("curve",),
}


@dataclass(frozen=True)
class Unit:
    """One run of the study: `kind` of model on `arch` with `seed` (and a pruning `method`)."""

    arch: str
    seed: int
    kind: str
    method: str | None = None

    @property
    def name(self) -> str:
        base = self.kind.replace("_", "-")
        return f"{base}-{self.method}" if self.method else base

    @property
    def key(self) -> str:
        return f"{self.arch}/seed{self.seed}/{self.name}"

    def deps(self) -> list[Unit]:
        """The units whose outputs (split, checkpoint) this one starts from."""
        base = Unit(self.arch, self.seed, "baseline")
        proto = Unit(self.arch, self.seed, "protopnet")
        return {
            "baseline": [],
            "curve": [base],
            "filter": [base],
            "protopnet": [base],
            "protopnet_pruned": [base, proto],
            "protopnet_filter": [base, proto],
        }[self.kind]


def plan_units(study: StudyConfig) -> list[Unit]:
    """All units, in an order where every unit comes after the units it depends on."""
    units = []
    for arch in study.archs:
        for seed in study.seeds:
            for arm in study.arms:
                for kind in ARM_UNITS[arm]:
                    if kind == "filter":
                        units += [Unit(arch, seed, kind, m) for m in study.criteria]
                    elif kind == "protopnet_filter":
                        units += [Unit(arch, seed, kind, m) for m in study.protopnet_criteria]
                    else:
                        units.append(Unit(arch, seed, kind))
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(units, key=lambda u: (u.arch, u.seed, order[u.kind]))


def unit_dir(out: Path, unit: Unit) -> Path:
    return out / "runs" / unit.arch / f"seed{unit.seed}" / unit.name


def unit_config(study: StudyConfig, unit: Unit, out: Path) -> RunConfig:
    """The unit's RunConfig: the shared run section + seed, arch, model type, method, split."""
    cfg = study.base_config()
    cfg.seed = unit.seed
    cfg.model.arch = unit.arch
    cfg.name = f"{study.name}-{unit.key.replace('/', '-')}"
    cfg.output_dir = str(out / "runs")
    if unit.kind != "baseline":  # every arm of a seed on the baseline's split
        cfg.data.split_file = str(
            unit_dir(out, Unit(unit.arch, unit.seed, "baseline")) / "split.csv"
        )
    if unit.kind.startswith("protopnet"):
        cfg.model.type = "protopnet"
    if unit.method:
        cfg.prune_filters.method = unit.method
    return cfg.validate()


# the config sections each kind of unit reads: a changed ProtoPNet setting reruns the ProtoPNet
# units, not the baseline and its filter pruning
SECTIONS = {
    "baseline": ("data", "model", "train"),
    "filter": ("data", "model", "train", "prune_filters"),
    "curve": ("data", "model", "train", "prune_filters"),
    "protopnet": ("data", "model", "train", "protopnet"),
    "protopnet_pruned": ("data", "model", "train", "protopnet", "prune_prototypes"),
    "protopnet_filter": ("data", "model", "train", "protopnet", "prune_filters"),
}


# Settings added after studies were run, with the value that reproduces the behaviour from before
# they existed: left out of the fingerprint at that value, so an older study folder still resumes
# instead of rerunning its units (tests/study/test_fingerprint.py holds known fingerprints).
ADDED_LATER = {
    ("protopnet", "trunk_epochs"): 0,
    ("train", "channels_last"): False,
    ("prune_filters", "patience"): None,
    ("protopnet", "joint_lr_step_at"): "end",
    ("data", "jpeg_draft"): False,
    ("protopnet", "push_amp"): False,  # the push on CPU was float32 before the setting existed
    ("protopnet", "trunk_layers"): None,
    ("prune_filters", "repair_epochs"): None,
    ("prune_filters", "lrp_batchnorm"): "eval",
    ("prune_filters", "schedule"): "cumulative",
    ("prune_filters", "prune_linear"): True,
    ("prune_filters", "min_retention"): None,
    ("prune_filters", "retention_measure"): "topk_jaccard",
}
# the random control draws one score per group channel since this marker (before: one per layer,
# summed over each group, which favoured the blocks' first convs): its units rerun
RANDOM_CONTROL = "per-group-channel"


def _drop_inert_settings(d: dict) -> None:
    """Leave out settings that cannot change this unit's result: when the joint StepLR never
    reaches a step within the joint epochs, stepping it before or after each epoch is the same."""
    p = d.get("protopnet")
    if p and (p["joint_epochs"] < p["joint_lr_step"] or p["joint_lr_gamma"] == 1):
        p.pop("joint_lr_step_at", None)
    f = d.get("prune_filters")
    if f and family(d["model"]["arch"]) != "vgg":  # only VGG has hidden Linear layers
        f.pop("prune_linear", None)


def fingerprint(study: StudyConfig, unit: Unit, cfg: RunConfig, dep_ids: dict[str, str]) -> str:
    """Hash of everything that decides the unit's result (not paths, progress bars, threads, nor
    the sections the unit does not read)."""
    d = {k: v for k, v in cfg.to_dict().items() if k == "seed" or k in SECTIONS[unit.kind]}
    for section, key in (("data", "split_file"), ("data", "num_workers"), ("data", "cache"),
                         ("data", "cache_dir"), ("data", "masks"), ("train", "progress"),
                         ("train", "threads"),
                         ("prune_filters", "retention_images")):  # fmt: skip  (measured, not trained)
        d.get(section, {}).pop(key, None)
    for (section, key), old_behaviour in ADDED_LATER.items():
        if section in d and d[section].get(key) == old_behaviour:
            del d[section][key]
    _drop_inert_settings(d)
    payload = {
        "unit": unit.key,
        "config": d,
        "deps": dep_ids,
        "external_test": study.external_test,
        "latency": [study.latency_batch_sizes, study.latency_repeats],
        "min_prototypes_per_class": study.min_prototypes_per_class,
    }
    if study.explanation_images != 3:  # added later: left out at the value from before
        payload["explanation_images"] = study.explanation_images
    if unit.kind == "curve":  # its own settings and criteria (other units' hashes stay as they were)
        payload["curve"] = [study.curve, study.criteria]
    if "random" in ((study.criteria if unit.kind == "curve" else []) + [unit.method or ""]):
        payload["random_control"] = RANDOM_CONTROL
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


# --- evaluating a final model --------------------------------------------------------------


class ExternalTest:
    """The external test set (ISIC 2018), decoded and resized once per image size, kept in memory.

    Decoding ~1500 full-size JPEGs per evaluated model would dominate the study; the resized,
    normalised tensors are the same for every model of one input size, so they are cached.
    """

    def __init__(self, root: str | None):
        self.root = root
        self._cache: dict[tuple, tuple[TensorDataset, list[str]]] = {}

    def loader(self, cfg: RunConfig) -> tuple[DataLoader, list[str]] | None:
        if not self.root:
            return None
        from ..data.isic2018 import load_isic2018
        from ..data.transforms import build_transform

        d = cfg.data
        key = (d.image_size, tuple(d.mean), tuple(d.std))
        if key not in self._cache:
            ds = load_isic2018(self.root).with_transform(
                build_transform(d.image_size, d.mean, d.std, train=False)
            )
            items = [ds[i] for i in range(len(ds))]
            x = torch.stack([t for t, _ in items])
            y = torch.tensor([int(c) for _, c in items])
            self._cache[key] = (TensorDataset(x, y), list(ds.class_names))
        data, names = self._cache[key]
        return DataLoader(data, batch_size=d.batch_size, shuffle=False), names


def headline(metrics: dict[str, Any], prefix: str, suffix: str = "") -> dict[str, Any]:
    return {f"{prefix}{k}{suffix}": metrics.get(k) for k in HEADLINE}


def final_row(
    model: nn.Module,
    cfg: RunConfig,
    loaders: Any,
    external: ExternalTest,
    study: StudyConfig,
    device: torch.device,
) -> dict[str, Any]:
    """Test (and external) metrics, per-class recall, parameters, MACs and CPU latency."""
    from ..prune.measure import measure_model
    from ..train.evaluate import evaluate_model

    model = model.to(device).eval()
    m = evaluate_model(model, loaders.test, loaders.class_names, device)
    row = headline(m, "test_")
    row.update({f"recall_{c}": pc["recall"] for c, pc in m["per_class"].items()})
    ext = external.loader(cfg)
    if ext is not None:
        ext_loader, ext_names = ext
        if ext_names != loaders.class_names:
            raise ConfigError(
                f"the external test set's classes {ext_names} differ from the model's "
                f"{loaders.class_names}",
                "use external_test only with HAM10000-class data (DermaMNIST, HAM10000), "
                "or set external_test: null",
            )
        row.update(headline(evaluate_model(model, ext_loader, ext_names, device), "ext_"))
    sizes = tuple(study.latency_batch_sizes)
    row.update(
        measure_model(model, cfg.data.image_size, sizes or (1,), study.latency_repeats, bool(sizes))
    )
    return row


# --- running one unit ----------------------------------------------------------------------


def _curve_label(unit: Unit) -> dict[str, Any]:
    return {"unit": unit.key, "arch": unit.arch, "seed": unit.seed, "arm": unit.kind, "method": unit.method or ""}


def training_convergence(unit: Unit, folder: Path, metric: str) -> list[dict[str, Any]]:
    """How the unit's validation curve ended (`train.convergence.plateau`): its training run's
    history, or each fine-tuning round of a filter-pruning schedule."""
    import pandas as pd

    from ..train.convergence import plateau

    label = _curve_label(unit)
    history = folder / "history.csv"
    if unit.kind in ("baseline", "protopnet") and history.is_file():
        h = pd.read_csv(history)
        col = f"val_{metric}" if f"val_{metric}" in h else "val_accuracy"
        values = h[col].dropna().tolist() if col in h else []
        return [{**label, "curve": "training", **plateau(values), "stopped_by_patience": None}]
    return []


def schedule_convergence(unit: Unit, df: Any, cap: int, patience: int | None) -> list[dict[str, Any]]:
    """One row a fine-tuning round of a classifier's pruning schedule (`finetune_*` columns)."""
    if "finetune_epochs" not in df or "finetune_gain_last" not in df:
        return []
    label = _curve_label(unit)
    return [
        {**label, "curve": f"step {int(r['step'])}", "evaluations": int(r["finetune_epochs"]),
         "best_evaluation": int(r["finetune_best_epoch"]), "gain_last": float(r["finetune_gain_last"]),
         "flat": bool(r["finetune_flat"]),
         "stopped_by_patience": bool(patience) and int(r["finetune_epochs"]) < cap}
        for _, r in df[df["step"] > 0].iterrows()
    ]  # fmt: skip


def _label(unit: Unit) -> dict[str, Any]:
    return {"arch": unit.arch, "seed": unit.seed, "arm": unit.kind, "method": unit.method or "",
            "unit": unit.key, "status": "ok"}  # fmt: skip


def _train_unit(cfg: RunConfig, folder: Path, resume: bool) -> dict:
    """Train a baseline or ProtoPNet unit, continuing its last.pt when `resume`. A resume that
    run_training refuses (a setting outside the fingerprint changed, e.g. the study folder moved
    and with it the split file's path) starts the unit over; the old folder is kept aside."""
    from ..errors import CheckpointError
    from ..train.run import run_training

    if resume:
        try:
            return run_training(cfg, folder, resume=True)
        except CheckpointError as e:
            log.warning("study: cannot resume %s (%s): starting it over", folder, e)
    return run_training(cfg, folder, force=True)


def run_unit(
    unit: Unit, cfg: RunConfig, study: StudyConfig, out: Path, external: ExternalTest,
    resume: bool = False,
) -> dict[str, Any]:
    """Run one unit in its folder; returns {"rows": [...], "status": "ok", ...}.

    `resume` (see runner.can_resume): continue an interrupted training or pruning curve from its
    checkpoint instead of starting over; its `train_seconds` then count this invocation only."""
    from ..models.pretrained import resolve_pretrained
    from ..seed import resolve_device

    cfg = resolve_pretrained(cfg)  # every evaluation below normalises as the training did
    folder = unit_dir(out, unit)
    device = resolve_device(cfg.train.device)
    row = _label(unit)
    result: dict[str, Any] = {"unit": unit.key, "kind": unit.kind}

    if unit.kind == "curve":  # a table of cuts, not a final model: no row, a folder to pool
        from ..experiments.pruning_curve import pruning_curve

        base_ckpt = unit_dir(out, Unit(unit.arch, unit.seed, "baseline")) / "checkpoints" / "best.pt"
        pruning_curve(base_ckpt, folder, study.curve_settings(), cfg, force=not resume,
                      resume=resume, progress=False)  # fmt: skip
        return {**result, "status": "ok", "rows": []}
    run = {"baseline": _trained_unit, "protopnet": _trained_unit,
           "protopnet_pruned": _prototype_pruning_unit}.get(unit.kind, _filter_pruning_unit)  # fmt: skip
    model, loaders = run(unit, cfg, study, out, folder, row, result, resume)
    row.update(final_row(model, cfg, loaders, external, study, device))
    if unit.kind.startswith("protopnet"):  # explanation quality of every ProtoPNet arm
        from ..explain.analysis import explanation_summary
        from ..prune.relevance import input_bounds

        bounds = input_bounds(cfg.data.mean, cfg.data.std)
        row.update(explanation_summary(model, loaders, cfg.prune_prototypes.k, device,
                                       images=study.explanation_images, bounds=bounds))  # fmt: skip
    result["status"] = row["status"]
    result["rows"] = [row]
    return result


def _trained_unit(unit: Unit, cfg: RunConfig, study: StudyConfig, out: Path, folder: Path, row: dict,
                  result: dict, resume: bool):  # fmt: skip
    """A baseline or a ProtoPNet trained in `folder`; returns (its best model, loaders)."""
    from ..train.checkpoint import model_from_checkpoint
    from ..train.run import prepare_data

    trained = _train_unit(cfg, folder, resume)
    loaders, _ = prepare_data(cfg)
    model = model_from_checkpoint(folder / "checkpoints" / "best.pt")
    row.update({"pruned": "", "pruned_ratio": 0.0})
    if "stages" in trained:  # ProtoPNet: before push / after push / after last layer
        result["stages"] = {
            s: headline(v["test"], "test_")
            for s, v in trained["stages"].items()
            if isinstance(v, dict) and "test" in v
        }
    result["train_seconds"] = trained.get("train_seconds")
    result["convergence"] = training_convergence(unit, folder, cfg.train.select_metric)
    return model, loaders


def _prototype_pruning_unit(unit: Unit, cfg: RunConfig, study: StudyConfig, out: Path, folder: Path,
                            row: dict, result: dict, resume: bool):  # fmt: skip
    """Prototype pruning of the seed's ProtoPNet; returns (the pruned model, loaders)."""
    from ..protopnet.prototype_pruning import prune_prototypes
    from ..train.checkpoint import model_from_checkpoint
    from ..train.run import prepare_data

    proto_ckpt = unit_dir(out, Unit(unit.arch, unit.seed, "protopnet")) / "checkpoints" / "best.pt"
    summary = prune_prototypes(
        proto_ckpt, cfg, folder, min_per_class=study.min_prototypes_per_class,
        device=cfg.train.device, force=True,
    )  # fmt: skip
    loaders, _ = prepare_data(cfg)
    model = model_from_checkpoint(summary["checkpoint"])
    n0, n1 = summary["prototypes_before"], summary["prototypes_after"]
    row.update({"pruned": "prototypes", "pruned_ratio": 1 - n1 / n0})
    row.update(headline(summary["metrics"]["after_pruning"]["test"], "test_", "_pruned"))
    result["prototypes"] = {"before": n0, "after": n1, "per_class": summary["per_class"]}
    return model, loaders


def _filter_pruning_unit(unit: Unit, cfg: RunConfig, study: StudyConfig, out: Path, folder: Path,
                         row: dict, result: dict, resume: bool):  # fmt: skip
    """Filter pruning of the baseline (`filter`) or of the ProtoPNet's trunk; returns (the last
    step's model, loaders) and keeps the per-step curve (with a ProtoPNet's retention columns)."""
    from ..experiments.filter_pruning import prune_filters
    from ..train.checkpoint import model_from_checkpoint
    from ..train.run import prepare_data

    source_kind = "baseline" if unit.kind == "filter" else "protopnet"
    source = unit_dir(out, Unit(unit.arch, unit.seed, source_kind)) / "checkpoints" / "best.pt"
    df = prune_filters(source, cfg, folder, force=True, export=True, latency=False)
    last = df.iloc[-1]
    row.update({"pruned": "filters", "pruned_ratio": float(last["pruned_ratio"])})
    row.update({f"test_{k}_pruned": last.get(f"test_{k}_pruned") for k in HEADLINE})
    loaders, _ = prepare_data(cfg)
    k = int(last["step"])  # step 0 (nothing pruned) is not exported: it is the source
    step = folder / "models" / f"step_{k:02d}.pt" if k else Path(source)
    model = model_from_checkpoint(step)  # a pruned step too (a regular checkpoint)
    keep = ["step", "pruned_ratio", "params", "macs"] + [
        c for c in df.columns if c.startswith(("test_", "retention_", "localisation_"))
    ]
    curve = df[keep].assign(arch=unit.arch, seed=unit.seed, arm=unit.kind, method=unit.method)
    result["curves"] = curve.replace({np.nan: None}).to_dict(orient="records")
    if unit.kind == "filter":  # a ProtoPNet's repair runs fixed epochs: no curve to read
        pf = cfg.prune_filters
        result["convergence"] = schedule_convergence(unit, df, pf.epochs, pf.patience)
    return model, loaders
