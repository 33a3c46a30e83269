"""All explanations of one ProtoPNet checkpoint in one folder (used by `explain` and `report`).

out_dir/
  gallery/          prototype_<j>_source.png (source image, boxed) and _crop.png, gallery.csv
  local/            sample_<n>_<image id>.png/.json: local explanations of test images
  global/           nearest_{train,test}.csv and per-class neighbour grids
  quality/          prototype_quality.csv/.png
  explanations.json index of everything above
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..config import RunConfig
from ..errors import CheckpointError, ConfigError
from ..io import atomic_write_json, atomic_write_text
from ..lrp.composites import input_bounds
from ..models.receptive_field import (
    latent_effective_field,
    localisation,
    receptive_field_or_none,
)
from ..seed import resolve_device
from .global_ import global_analysis
from .local import PrototypeSources, explain_image, prototype_sources, save_explanation
from .nearest import k_nearest_patches, require_k_images
from .quality import background_base_rate, prototype_quality, top_match_counts, write_quality
from .sanity import choose_pairs, sanity_checks, sanity_summary

log = logging.getLogger(__name__)

MELANOMA = "mel"


def choose_samples(y: np.ndarray, pred: np.ndarray, class_names: list[str], n: int) -> list[int]:
    """Test images to explain: melanoma first (a correct and a wrong one), then per class one
    correct and one wrong, round-robin, until n are chosen."""
    order = sorted(range(len(class_names)), key=lambda c: class_names[c] != MELANOMA)
    queues = []
    for c in order:
        for correct in (True, False):
            idx = np.nonzero((y == c) & ((pred == y) == correct))[0].tolist()
            queues.append(idx)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(chosen) < n:
                chosen.append(q[depth])
        depth += 1
    return chosen


def _save_gallery(sources: PrototypeSources, classes: list[str], out: Path) -> pd.DataFrame:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for j in range(len(sources.image_index)):
        row = {"prototype": j, "class": classes[j], "source_image": sources.image_id[j],
               "source_class": sources.image_class[j], "distance": sources.distance[j],
               "rf_box": sources.rf_boxes[j] if sources.rf_boxes else None,
               "rf_fraction": sources.rf_fraction[j] if sources.rf_fraction else None,
               "source": "", "crop": ""}  # fmt: skip
        if sources.framed[j] is not None:
            stem = f"prototype_{j:04d}"
            Image.fromarray(sources.framed[j]).save(out / f"{stem}_source.png")
            Image.fromarray(sources.crops[j]).save(out / f"{stem}_crop.png")
            row.update(source=f"{stem}_source.png", crop=f"{stem}_crop.png")
        rows.append(row)
    table = pd.DataFrame(rows)
    atomic_write_text(out / "gallery.csv", table.to_csv(index=False))
    return table


def analyse_checkpoint(
    checkpoint: str | Path | dict,
    out_dir: str | Path,
    *,
    cfg: RunConfig | None = None,
    k: int | None = None,
    samples: int = 8,
    top: int = 10,
    hires: bool = True,
    device: str = "auto",
    progress: bool | None = None,
    heatmap: str = "both",
    masks: str | Path | None = None,
    quality_images: int = 3,
) -> dict[str, Any]:
    """Gallery, local explanations of `samples` test images, global analysis and quality.

    `heatmap` (upsample | prp | both) picks the local explanations' heatmaps; the index records
    how far the model localises (`localisation`: receptive field, share of the image, warning).
    The quality table adds the explanation metrics (`explain.metrics`: stability, deletion AUC
    on each prototype's `quality_images` nearest test images, on-lesion share with the masks in
    folder `masks` or the proxy); `quality/summary.json` holds the per-model means."""
    from ..train.run import open_checkpoint
    from .lesion import mask_folder

    masks = mask_folder(masks)  # checked before any long work
    require_top(top)
    source = open_checkpoint(checkpoint, cfg, protopnet=True)
    ckpt, cfg = source.ckpt, source.cfg
    k = k or cfg.prune_prototypes.k
    progress = cfg.train.progress if progress is None else progress
    out = Path(out_dir)
    dev = resolve_device(device)
    loaders, _ = source.data("explain")
    masks = masks or loaders.test.dataset.mask_dir  # the data's own lesion masks (data.masks)
    class_names = loaders.class_names
    require_k_images(k, len(loaders.push.dataset))
    model = source.model(dev)
    train_ds, test_ds = loaders.push.dataset, loaders.test.dataset
    nearest_train = k_nearest_patches(model, loaders.push, k, dev, progress, "nearest train")
    sources = prototype_sources(model, nearest_train, train_ds, class_names, dev, hires=hires)
    proto_classes = [class_names[int(c)] for c in model.prototype_classes.cpu()]
    gallery = _save_gallery(sources, proto_classes, out / "gallery")

    local = _local_samples(model, loaders, cfg, sources, out / "local", samples, top, hires, dev, heatmap)
    glob = global_analysis(
        model, {"train": (loaders.push, train_ds), "test": (loaders.test, test_ds)}, class_names,
        out / "global", k, dev, sources, {"train": nearest_train}, progress,
    )  # fmt: skip
    loc, fields = field_summary(model, nearest_train, test_ds, dev)
    quality, qfiles, summary = _quality(model, loaders, cfg, nearest_train, glob["nearest"]["test"],
                                        sources, out / "quality", dev, masks, quality_images, fields)  # fmt: skip
    atomic_write_json(out / "quality" / "summary.json", summary)
    index = {"checkpoint": ckpt.get("path"), "k": k, "hires": hires, "heatmap": heatmap,
             "localisation": loc, "prototypes": model.num_prototypes,
             "gallery": gallery.to_dict(orient="records"), "local": local, "global": glob["files"],
             "quality": {**qfiles,
                         "background_prototypes": quality.loc[quality["background"], "prototype"].tolist(),
                         "mean_purity": float(quality["purity"].mean()), "summary": summary}}  # fmt: skip
    atomic_write_json(out / "explanations.json", index)
    log.info("explanations of %d prototypes and %d test images -> %s", model.num_prototypes, len(local), out)
    return index


def _local_samples(model, loaders, cfg: RunConfig, sources, out: Path, samples: int, top: int,
                   hires: bool, dev, heatmap: str) -> list[dict[str, Any]]:  # fmt: skip
    """Local explanations of `samples` test images (`choose_samples`), saved under `out`."""
    from ..train.evaluate import predict

    test_ds, class_names = loaders.test.dataset, loaders.class_names
    y, probs = predict(model, loaders.test, dev)
    local = []
    for n, i in enumerate(choose_samples(y, probs.argmax(1), class_names, samples)):
        expl = explain_image(
            model, test_ds.load_image(i), class_names, image_size=cfg.data.image_size,
            mean=cfg.data.mean, std=cfg.data.std, top=top, hires=hires, device=dev,
            label=int(y[i]), image_id=test_ds.image_ids[i], heatmap=heatmap,
        )  # fmt: skip
        files = save_explanation(expl, sources, out, f"sample_{n:02d}_{test_ds.image_ids[i]}")
        local.append({**files, **{k_: expl.record[k_] for k_ in ("image_id", "label", "predicted_class", "correct")}})
    return local


def _quality(model, loaders, cfg: RunConfig, nearest_train, nearest_test, sources, out: Path, dev,
             masks, quality_images: int, fields: dict[str, Any]):  # fmt: skip
    """The per-prototype quality table with the explanation metrics and the sanity checks
    (written under `out`); returns (table, files, per-model summary with the `fields`)."""
    from .metrics import explanation_metrics, model_summary

    train_ds, test_ds, class_names = loaders.push.dataset, loaders.test.dataset, loaders.class_names
    counts = top_match_counts(model, loaders.test, dev)
    quality = prototype_quality(model, nearest_train, sources, counts, class_names)
    bounds = input_bounds(cfg.data.mean, cfg.data.std)
    metrics = explanation_metrics(model, nearest_test, sources, train_ds, loaders.test,
                                  test_ds, dev, masks, quality_images, bounds)  # fmt: skip
    quality = quality.merge(metrics, on="prototype")
    quality["rf_fraction"] = sources.rf_fraction
    qfiles = write_quality(quality, class_names, out)
    sanity = sanity_checks(model, test_ds, choose_pairs(nearest_test), dev, bounds)
    atomic_write_text(out / "sanity.csv", sanity.to_csv(index=False))
    summary = {**model_summary(quality), **fields, **sanity_summary(sanity),
               "lesion_masks": "folder" if masks else "proxy"}  # fmt: skip
    return quality, qfiles, summary


ERF_IMAGES = 16  # test images whose input gradients give the effective receptive field


def field_summary(
    model: Any, nearest_train: Any, dataset: Any, device: torch.device | str = "cpu"
) -> tuple[dict[str, Any], dict[str, float]]:
    """The localisation record (analytic and effective field of a latent cell, the warning) and
    the per-model numbers that stand beside the localisation metrics: the largest analytic and
    the effective field share, and the background flag's base rate on this latent grid."""
    x = torch.stack([dataset[i][0] for i in range(min(ERF_IMAGES, len(dataset)))]).to(device)
    effective = latent_effective_field(model, x)
    loc = localisation(receptive_field_or_none(model), nearest_train.map_shape,
                       nearest_train.input_hw, model.prototype_size, effective)  # fmt: skip
    numbers = {
        "max_rf_fraction": loc["max_fraction"],
        "effective_rf_fraction": effective["area_share"],
        "background_base_rate": background_base_rate(
            nearest_train.map_shape, nearest_train.input_hw
        ),
    }
    return loc, numbers


def require_top(top: int) -> None:
    """top prototypes listed per image: slicing would read -1 as "all but one", 0 as none."""
    if top < 1:
        raise ConfigError(f"top = {top} prototypes per image must be 1 or more", "e.g. --top 10")


@torch.no_grad()
def explain_files(
    checkpoints: list[str | Path],
    images: list[str | Path],
    out_dir: str | Path,
    *,
    top: int = 10,
    hires: bool = False,
    device: str = "auto",
    progress: bool = True,
    heatmap: str = "both",
) -> list[dict[str, Any]]:
    """Explain image files with one model or an ensemble (logits summed; prototypes per member)."""
    from ..data.base import open_rgb
    from ..train.checkpoint import (
        checkpoint_config,
        load_checkpoint,
        model_from_checkpoint,
        require_protopnet,
    )
    from ..train.run import prepare_data

    require_top(top)
    for path in images:  # an unreadable image fails before the models are loaded and searched
        open_rgb(path)
    dev = resolve_device(device)
    ckpts = [load_checkpoint(c) for c in checkpoints]
    for c in ckpts:
        require_protopnet(c)
    names = ckpts[0]["class_names"]
    if any(c["class_names"] != names for c in ckpts):
        raise CheckpointError(
            "the ensemble members have different classes", "combine models of one data set"
        )
    models, sources, cfgs = [], [], []
    for c in ckpts:
        cfg = checkpoint_config(c)
        model = model_from_checkpoint(c).to(dev)
        loaders, _ = prepare_data(cfg)
        nearest = k_nearest_patches(model, loaders.push, 1, dev, progress, "prototype sources")
        sources.append(
            prototype_sources(model, nearest, loaders.push.dataset, names, dev, hires=hires)
        )
        models.append(model)
        cfgs.append(cfg)
    sizes = {c.data.image_size for c in cfgs}
    if len(sizes) > 1:
        raise CheckpointError(
            f"ensemble members use different input sizes {sorted(sizes)}",
            "explain an ensemble of models trained at one data.image_size",
        )
    cfg = cfgs[0]
    results = []
    for n, path in enumerate(images):
        expl = explain_image(
            models if len(models) > 1 else models[0], path, names, image_size=cfg.data.image_size,
            mean=cfg.data.mean, std=cfg.data.std, top=top, hires=hires, device=dev,
            heatmap=heatmap,
        )  # fmt: skip
        files = save_explanation(expl, sources, out_dir, f"{n:02d}_{Path(path).stem}")
        results.append({**files, **expl.record})
    return results


def explanation_summary(
    model: Any, loaders: Any, k: int, device: torch.device | str = "cpu",
    images: int = 3, masks: str | Path | None = None,
    bounds: tuple[float, float] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The per-model explanation-quality numbers (explain.metrics.model_summary, with
    `expl_` prefixed) without writing files: the study's row of a ProtoPNet arm."""
    from ..lrp.composites import DEFAULT_BOUNDS
    from .metrics import explanation_metrics, model_summary

    bounds = bounds or DEFAULT_BOUNDS
    masks = masks or loaders.test.dataset.mask_dir  # the data's own lesion masks (data.masks)
    dev = torch.device(device)
    model = model.to(dev).eval()
    names = loaders.class_names
    nearest_train = k_nearest_patches(model, loaders.push, k, dev, False)
    nearest_test = k_nearest_patches(model, loaders.test, images, dev, False)
    sources = prototype_sources(model, nearest_train, loaders.push.dataset, names, dev)
    counts = top_match_counts(model, loaders.test, dev)
    quality = prototype_quality(model, nearest_train, sources, counts, names)
    quality = quality.merge(
        explanation_metrics(model, nearest_test, sources, loaders.push.dataset, loaders.test,
                            loaders.test.dataset, dev, masks, images, bounds),  # fmt: skip
        on="prototype",
    )
    _, fields = field_summary(model, nearest_train, loaders.test.dataset, dev)
    sanity = sanity_checks(model, loaders.test.dataset, choose_pairs(nearest_test), dev, bounds)
    summary = {**model_summary(quality), **fields, **sanity_summary(sanity)}
    return {f"expl_{key}": v for key, v in summary.items()}
