"""The pruning curve of Yeom et al. (2021): accuracy vs pruned ratio with no fine-tuning.

For every criterion, score normalisation and reference-set draw, the filters of the trained model
are scored once and removed one-shot at each ratio (a fresh copy of the model each time, so the
ratios are nested cuts of one ranking), then the pruned model is evaluated as it is (optionally
after re-estimating its BatchNorm statistics on training batches). This is where criteria differ
most: fine-tuning repairs most of what any criterion removes, so a comparison after fine-tuning
ranks the fine-tuning budget as much as the criterion.

Writes `curve.csv` (one row per method x normalisation x draw x ratio, appended as each block
finishes, so an interrupted run resumes), `curve.md` (mean +- std and the area under each curve)
and `curve.png`. `summarize_curves` pools several runs (training seeds) and gives paired
differences with 95 % confidence intervals.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import distributed
from ..errors import ConfigError
from ..figures import CRITERION_COLOURS
from ..io import atomic_write_json, atomic_write_text
from ..metrics import compute_metrics, paired_t_interval
from ..names import CRITERION_NAMES
from ..progress import tqdm
from .filters import markdown_table, reference_set
from .importance import CRITERIA, build_importance
from .measure import count_macs_params
from .relevance import input_bounds, never_pruned, prunable_modules
from .structural import FilterPruner

log = logging.getLogger(__name__)

METRICS = ("accuracy", "balanced_accuracy", "auroc_macro")
BLOCK = ["method", "normalize", "ref_seed"]


def parse_ratios(text: str) -> list[float]:
    """`0.05:0.6:0.05` (start:stop:step, stop included) or `0.05,0.1,0.3`."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if step <= 0:
                raise ValueError
            n = int(np.floor((stop - start) / step + 1e-9)) + 1
            ratios = [round(start + k * step, 10) for k in range(n)]
        else:
            ratios = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"cannot read pruning ratios {text!r}", "give start:stop:step (e.g. 0.05:0.6:0.05) "
            "or a comma-separated list (e.g. 0.05,0.1,0.3)"
        ) from None
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise ConfigError(f"pruning ratios {ratios} must lie in (0, 1)", "e.g. 0.05:0.6:0.05")
    return sorted(set(ratios))


@dataclass
class CurveSettings:
    methods: Sequence[str] = CRITERION_NAMES
    ratios: Sequence[float] = tuple(round(0.05 * k, 2) for k in range(1, 13))
    ref_seeds: int = 3
    normalizations: Sequence[str] = ("none",)
    bn_recalibrate: bool = False
    bn_batches: int = 20
    splits: Sequence[str] = ("val", "test")  # evaluated after each cut

    def check(self) -> None:
        if not self.splits or any(s not in ("val", "test") for s in self.splits) or "test" not in self.splits:
            raise ConfigError(f"splits {list(self.splits)} must be test, or val and test (the curve's "
                              "tables report the test split)", "e.g. --splits test")  # fmt: skip
        for m in self.methods:
            CRITERIA.get(m)  # a clear error for an unknown name
        for n in self.normalizations:
            if n not in ("none", "reference", "sum", "l2"):
                raise ConfigError(
                    f"unknown normalisation {n!r}", "use none (default) and/or reference (--norm)"
                )
        if self.ref_seeds < 1 or self.bn_batches < 1:
            raise ConfigError("--ref-seeds and --bn-batches must be >= 1", "e.g. --ref-seeds 3")


def _preload(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*[(x, y) for x, y in loader])
    return torch.cat(xs), torch.cat(ys)


@torch.inference_mode()
def _evaluate(model: nn.Module, data, class_names, device, batch: int = 512) -> dict:
    x, y = data
    model.eval()
    probs = [torch.softmax(model(x[i : i + batch].to(device)).float(), 1).cpu()
             for i in range(0, len(x), batch)]  # fmt: skip
    return compute_metrics(y.numpy(), torch.cat(probs).numpy(), class_names)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches, device) -> None:
    """Re-estimate every BatchNorm's running statistics on `batches` (cumulative average):
    a pruned model's channels no longer have the statistics their BN was fitted to."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for x, _ in batches:
        model(x.to(device))
    for m, mom in zip(norms, saved):
        m.momentum = mom
    model.eval()


def curve_block(model, importance, reference, ratios, evals, class_names, image_size, device,
                ratio_unit="filters", round_to=1, bn_batches=None, prune_linear=False) -> list[dict]:  # fmt: skip
    """One criterion x draw: score `model` once, prune a copy one-shot to each ratio, evaluate."""
    raw = importance.prepare(model, reference)
    example = torch.zeros(1, 3, image_size, image_size, device=device)
    rows = []
    for ratio in ratios:
        m = copy.deepcopy(model)
        importance.bind(m, raw)
        pruner = FilterPruner(m, importance, [ratio], example, round_to=round_to, ratio_unit=ratio_unit,
                              ignored_layers=never_pruned(m, prune_linear=prune_linear))  # fmt: skip
        pruner.step()
        if bn_batches is not None:
            recalibrate_batchnorm(m, bn_batches, device)
        macs, params = count_macs_params(m, image_size, device)
        widths = {n: x.weight.shape[0] for n, x in prunable_modules(m, pruner.ignored_layers).items()}
        row = {"ratio": ratio, "filters_removed_ratio": pruner.pruned_filter_fraction(),
               "channels_removed_ratio": pruner.pruned_channel_fraction(),
               "filters_removed": pruner.initial_filters - pruner.filters(),
               "macs": macs, "params": params, "_widths": widths}  # fmt: skip
        for split, data in evals.items():
            metrics = _evaluate(m, data, class_names, device)
            row.update({f"{split}_{k}": metrics[k] for k in METRICS})
        rows.append(row)
    return rows


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
    evals = {split: _preload(getattr(loaders, split)) for split in settings.splits}
    names = loaders.class_names
    base = {f"{s}_{k}": v for s, d in evals.items()
            for k, v in _subset(_evaluate(model, d, names, device)).items()}  # fmt: skip
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


def curve_area(ratios: np.ndarray, values: np.ndarray) -> float:
    """Area under an accuracy-vs-ratio curve divided by its ratio span: the curve's mean level."""
    order = np.argsort(ratios)
    r, v = np.asarray(ratios, float)[order], np.asarray(values, float)[order]
    span = r[-1] - r[0]
    return float(np.trapezoid(v, r) / span) if span > 0 else float(v[0])


def curve_summary(df: pd.DataFrame, metric: str = "test_balanced_accuracy") -> pd.DataFrame:
    """Mean +- std over draws (and training seeds, when pooled) per method x normalise x ratio."""
    keys = ["method", "normalize", "ratio"]
    g = df.groupby(keys, sort=False)[metric]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["macs"] = df.groupby(keys, sort=False)["macs"].mean().values
    return out


def curve_areas(df: pd.DataFrame, metric: str = "test_balanced_accuracy") -> pd.DataFrame:
    """The area under each curve (one per run x method x normalisation x draw)."""
    units = [c for c in ("run", "method", "normalize", "ref_seed") if c in df.columns]
    rows = [{**dict(zip(units, key)), "area": curve_area(g["ratio"].values, g[metric].values)}
            for key, g in df.groupby(units, sort=False)]  # fmt: skip
    return pd.DataFrame(rows)


def _paired_units(table: pd.DataFrame, a: tuple[str, str], b: tuple[str, str]) -> np.ndarray:
    """a − b per independent unit. Pooled runs (one per training seed): per run, its draws
    averaged first, since the draws of one run share its baseline (and a data-free criterion's
    draws are one cut), so counting them as pairs would narrow the interval falsely. One run: per
    reference draw."""
    pooled = "run" in table.columns and table["run"].nunique() > 1
    units = ["run"] if pooled else [c for c in ("run", "ref_seed") if c in table.columns]

    def side(m: str, n: str) -> pd.Series:
        t = table[(table["method"] == m) & (table["normalize"] == n)]
        return t.groupby(units)["value"].mean()

    joined = pd.concat([side(*a).rename("a"), side(*b).rename("b")], axis=1, join="inner").dropna()
    return (joined["a"] - joined["b"]).to_numpy()


def paired_difference(df: pd.DataFrame, a: tuple[str, str], b: tuple[str, str],
                      metric: str = "test_balanced_accuracy", ratio: float | None = None) -> dict:  # fmt: skip
    """Mean of (a - b) over paired units (runs, or draws of one run) with a 95 % t interval.

    `a`, `b` are (method, normalize); `ratio=None` compares the areas under the curves.
    """
    if ratio is None:
        table = curve_areas(df, metric).rename(columns={"area": "value"})
    else:
        table = df[np.isclose(df["ratio"], ratio)].rename(columns={metric: "value"})
    return {"a": "/".join(a), "b": "/".join(b), "ratio": ratio,
            **paired_t_interval(_paired_units(table, a, b))}  # fmt: skip


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {0 if np.isnan(std) else std:.3f}"


def curve_table(df: pd.DataFrame, metric: str = "test_balanced_accuracy") -> pd.DataFrame:
    """Wide table: one row per method x normalisation, one column per ratio, plus the area."""
    s = curve_summary(df, metric)
    areas = curve_areas(df, metric).groupby(["method", "normalize"], sort=False)["area"]
    rows = []
    for (m, n), g in s.groupby(["method", "normalize"], sort=False):
        row = {"method": m, "normalize": n}
        row.update({f"{r:.2f}": _pm(mu, sd) for r, mu, sd in zip(g["ratio"], g["mean"], g["std"])})
        a = areas.get_group((m, n))
        row["area"] = _pm(a.mean(), a.std())
        rows.append(row)
    return pd.DataFrame(rows)


def layer_removal(layers: pd.DataFrame, ratio: float) -> pd.DataFrame:
    """Fraction of each layer group's filters (top-level module: conv1, layer1, ..., features)
    removed at `ratio`, mean over draws (and runs), one row per criterion x normalisation."""
    d = layers[np.isclose(layers["ratio"], ratio)].copy()
    if d.empty:
        return d
    d["group"] = d["layer"].str.split(".").str[0]
    units = [c for c in ("run", "method", "normalize", "ref_seed") if c in d.columns]
    g = d.groupby(units + ["group"], sort=False)[["filters", "initial"]].sum().reset_index()
    g["removed"] = 1 - g["filters"] / g["initial"]
    table = g.pivot_table(index=["method", "normalize"], columns="group", values="removed",
                          aggfunc="mean", sort=False)  # fmt: skip
    return table.reset_index()


def write_curve_report(df: pd.DataFrame, out: Path, title: str,
                       layers: pd.DataFrame | None = None) -> None:  # fmt: skip
    """curve.md (tables of test balanced accuracy and accuracy, areas, paired differences, the
    filters each criterion removes per layer group) and curve.png."""
    lines = [f"# {title}\n", "Mean ± std over reference-set draws"
             + (" and training seeds" if "run" in df.columns else "") + "; columns: fraction of "
             "filters removed (no fine-tuning); area: mean level of the curve (its area divided "
             "by the ratio span).\n"]  # fmt: skip
    for metric in [m for m in ("test_balanced_accuracy", "test_accuracy", "val_balanced_accuracy")
                   if m in df.columns]:  # fmt: skip
        lines += [f"\n## {metric.replace('_', ' ')}\n", markdown_table(curve_table(df, metric))]
    diffs = paired_differences(df)
    if len(diffs):
        lines += ["\n## Paired differences (test balanced accuracy), 95 % t confidence interval\n",
                  "Unit: the training run (its reference draws averaged) when runs are pooled, "
                  "else the draw; n: units.\n",
                  markdown_table(diffs, ".3f")]  # fmt: skip
    lines += ["\n## At equal compute: test balanced accuracy at a fraction of the unpruned MACs\n",
              "Each unit interpolated linearly in MACs between its cuts; blank: not reached.\n",
              markdown_table(equal_macs_table(df))]  # fmt: skip
    diffs = equal_macs_differences(df)
    if len(diffs):
        lines += ["\n## Paired differences at equal MACs, 95 % t confidence interval\n",
                  markdown_table(diffs, ".3f")]  # fmt: skip
    if layers is not None and len(layers):
        for ratio in sorted(r for r in set(layers["ratio"]) if r in (0.15, 0.3)):
            lines += [f"\n## Fraction of each layer group's filters removed at {ratio:.2f}\n",
                      markdown_table(layer_removal(layers, ratio), ".2f")]  # fmt: skip
    atomic_write_text(out / "curve.md", "\n".join(lines))
    plot_curve(df, out / "curve.png", title)


def _lrp_pairs(df: pd.DataFrame) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """(lrp, norm) against each other criterion present, at the same norm (random: raw)."""
    methods = set(df["method"])
    pairs = []
    for norm in sorted(set(df["normalize"])):
        for other in ("weight", "random", "grad", "taylor"):
            b_norm = "none" if other == "random" else norm
            if "lrp" in methods and other in methods and ((df["method"] == other)
                                                          & (df["normalize"] == b_norm)).any():
                pairs.append((("lrp", norm), (other, b_norm)))
    return pairs


def paired_differences(df: pd.DataFrame) -> pd.DataFrame:
    """LRP - weight and LRP - random (areas and each ratio), for each normalisation present."""
    rows = []
    ratios = sorted(r for r in set(df["ratio"]) if r > 0)
    for a, b in _lrp_pairs(df):
        for ratio in [None, *ratios]:
            d = paired_difference(df, a, b, ratio=ratio)
            if d["n"]:
                rows.append({"difference": f"{d['a']} - {d['b']}",
                             "at": "area" if ratio is None else f"{ratio:.2f}", "n": d["n"],
                             "mean": d["mean"], "ci_low": d["ci_low"], "ci_high": d["ci_high"]})  # fmt: skip
    return pd.DataFrame(rows)


MACS_FRACTIONS = (0.9, 0.8, 0.7, 0.6)


def curve_at_macs(df: pd.DataFrame, fractions: Sequence[float] = MACS_FRACTIONS,
                  metric: str = "test_balanced_accuracy") -> pd.DataFrame:  # fmt: skip
    """Each unit's metric at equal compute: linearly interpolated in MACs between its cuts, at
    `fractions` of the unpruned MACs (NaN below the fewest MACs the unit reached). Criteria that
    remove filters of different layers reach different MACs at one filter ratio."""
    units = [c for c in ("run", "method", "normalize", "ref_seed") if c in df.columns]
    rows = []
    for key, g in df.groupby(units, sort=False):
        g = g.sort_values("macs")
        full = float(g["macs"].max())
        for f in fractions:
            target = f * full
            inside = g["macs"].min() <= target <= full
            rows.append({**dict(zip(units, key)), "macs_fraction": f,
                         "value": float(np.interp(target, g["macs"], g[metric])) if inside else np.nan})  # fmt: skip
    return pd.DataFrame(rows)


def equal_macs_table(df: pd.DataFrame, metric: str = "test_balanced_accuracy") -> pd.DataFrame:
    """Mean ± std of each criterion's metric at 90/80/70/60 % of the unpruned MACs."""
    at = curve_at_macs(df, metric=metric)
    rows = []
    for (m, n), g in at.groupby(["method", "normalize"], sort=False):
        row = {"method": m, "normalize": n}
        for f, h in sorted(g.groupby("macs_fraction"), key=lambda kv: -kv[0]):  # 90 % first
            v = h["value"].dropna()  # units that reached it: n shown where some did not
            cell = _pm(v.mean(), v.std()) if len(v) else ""
            row[f"{f:.0%} MACs"] = cell + (f" (n = {len(v)})" if 0 < len(v) < len(h) else "")
        rows.append(row)
    return pd.DataFrame(rows)


def equal_macs_differences(df: pd.DataFrame, metric: str = "test_balanced_accuracy") -> pd.DataFrame:
    """LRP − each criterion at equal MACs, paired as `paired_difference` pairs, 95 % t interval."""
    at = curve_at_macs(df, metric=metric)
    rows = []
    for a, b in _lrp_pairs(df):
        for f in MACS_FRACTIONS:
            d = paired_t_interval(_paired_units(at[at["macs_fraction"] == f], a, b))
            if d["n"]:
                rows.append({"difference": f"{'/'.join(a)} - {'/'.join(b)}", "at": f"{f:.0%} MACs",
                             "n": d["n"], "mean": d["mean"], "ci_low": d["ci_low"],
                             "ci_high": d["ci_high"]})  # fmt: skip
    return pd.DataFrame(rows)


def plot_curve(df: pd.DataFrame, path: Path, title: str) -> Path:
    """Test balanced accuracy vs pruned ratio and vs MACs, bands = std, one colour a method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_save_figure

    s = curve_summary(df)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (m, n), g in s.groupby(["method", "normalize"], sort=False):
        colour = CRITERION_COLOURS.get(m)
        ls = "-" if n == "none" else "--"
        std = g["std"].fillna(0)
        for ax, x in zip(axes, (g["ratio"], g["macs"] / 1e6)):
            ax.plot(x, g["mean"], ls=ls, marker="o", ms=3, color=colour, label=f"{m} ({n})")
            ax.fill_between(x, g["mean"] - std, g["mean"] + std, color=colour, alpha=0.15)
    axes[0].set_xlabel("fraction of filters removed")
    axes[1].set_xlabel("MMACs per image")
    axes[1].invert_xaxis()
    for ax in axes:
        ax.set_ylabel("test balanced accuracy (no fine-tuning)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = atomic_save_figure(fig, path, dpi=150)
    plt.close(fig)
    return out


def summarize_curves(run_dirs: Sequence[str | Path], out_dir: str | Path) -> pd.DataFrame:
    """Pool the curves of several runs (e.g. one per training seed) into one report."""
    frames, layer_frames = [], []
    dirs = [Path(rd) for rd in run_dirs]
    names = [d.name for d in dirs]  # a study's units share a name (seed0/curve, seed1/curve)
    labels = names if len(set(names)) == len(names) else [str(d) for d in dirs]
    for rd, label in zip(dirs, labels):
        p = rd / "curve.csv"
        if not p.is_file():
            raise ConfigError(f"{rd} holds no curve.csv", "give folders written by `protoprune prune-curve`")
        frames.append(pd.read_csv(p).assign(run=label))
        if (rd / "curve_layers.csv").is_file():
            layer_frames.append(pd.read_csv(rd / "curve_layers.csv").assign(run=label))
    df = pd.concat(frames, ignore_index=True)
    layers = pd.concat(layer_frames, ignore_index=True) if layer_frames else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "curves.csv", df.to_csv(index=False))
    write_curve_report(df, out, f"Pruning curves pooled over {len(frames)} runs", layers)
    return df
