"""A self-contained HTML report of a run folder: index.html + images, no external URLs.

Sections: configuration, metrics and confusion matrix, training curves; for a ProtoPNet also the
prototype gallery by class (pruned prototypes marked when RUN/prototype_pruning exists), local
explanations of sample test images (melanoma first, correct and wrong), global analysis and
prototype quality. A baseline-classifier run gets the first sections only.

The page carries a small inline script that, once loaded, checks that every image decoded
(naturalWidth > 0) and writes the result into #image-check; the report test reads it back from
headless Chromium.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from ..errors import ProtopruneError
from ..io import atomic_write_text, prepare_run_dir

HEADLINE = (
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("auroc_macro", "macro AUROC"),
    ("melanoma_sensitivity", "melanoma sensitivity"),
)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ccc; padding-top: 0.6em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc;
padding: 3px 8px; text-align: right; } th:first-child, td:first-child { text-align: left; }
pre { background: #f5f5f5; padding: 0.8em; overflow-x: auto; font-size: 12px; }
nav a { margin-right: 1em; } .muted { color: #777; } img { max-width: 100%; }
.gallery { display: flex; flex-wrap: wrap; gap: 8px; }
.card { border: 2px solid #8c8; border-radius: 4px; padding: 4px; width: 150px; font-size: 11px; }
.card img { width: 70px; height: 70px; image-rendering: pixelated; object-fit: contain; }
.card.pruned { border-color: #d44; background: #fee; } .card.merged { border-color: #d90; background: #ffe; }
.card.background { outline: 2px dashed #888; }
.badge { font-weight: bold; } .pruned .badge { color: #c00; } .merged .badge { color: #b70; }
.sample { margin: 1em 0 2em; } .sample img { width: auto; max-width: 100%; }
.ok { color: #080; } .wrong { color: #c00; }
"""

CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var div = document.getElementById('image-check');
  div.setAttribute('data-images', imgs.length);
  div.setAttribute('data-broken', broken.length);
  div.setAttribute('data-broken-src', broken.map(function (i) { return i.getAttribute('src'); }).join(' '));
  div.textContent = imgs.length + ' images, ' + broken.length + ' not loaded';
});
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(v: Any) -> str:
    return "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else _e(v))


def _img(src: str, alt: str, **attrs: str) -> str:
    extra = "".join(f' {k}="{_e(v)}"' for k, v in attrs.items())
    return f'<img src="{_e(src)}" alt="{_e(alt)}"{extra}>'


def _copy(src: Path, out: Path, name: str | None = None) -> str | None:
    if not src.is_file():
        return None
    target = out / "assets" / (name or src.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    return f"assets/{target.name}"


def metrics_table(results: dict[str, Any]) -> str:
    splits = [s for s in ("val", "test") if isinstance(results.get(s), dict)]
    if not splits:
        return "<p class=muted>no metrics.json in this run</p>"
    head = "".join(f"<th>{label}</th>" for _, label in HEADLINE)
    rows = "".join(
        f"<tr><td>{s}</td><td>{results[s].get('n', '')}</td>"
        + "".join(f"<td>{_fmt(results[s].get(k))}</td>" for k, _ in HEADLINE)
        + "</tr>"
        for s in splits
    )
    out = f"<table><tr><th>split</th><th>n</th>{head}</tr>{rows}</table>"
    per = results.get("test", {}).get("per_class") or {}
    if per:
        out += "<h3>Per class (test)</h3><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
        out += "".join(
            f"<tr><td>{_e(c)}</td><td>{_fmt(m.get('precision'))}</td><td>{_fmt(m.get('recall'))}</td>"
            f"<td>{_fmt(m.get('f1'))}</td><td>{_e(m.get('support', ''))}</td></tr>"
            for c, m in per.items()
        )
        out += "</table>"
    return out


def _pruning_section(pruning: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{_e(r['class'])}</td><td>{r['before']}</td><td>{r['pruned']}</td>"
        f"<td>{r['merged']}</td><td>{r['after']}</td></tr>"
        for r in pruning["per_class"]
    )
    stages = ""
    for stage, label in (("before", "before pruning"), ("after_pruning", "after pruning"),
                         ("after_finetuning", "after fine-tuning")):  # fmt: skip
        for split, m in pruning["headline"][stage].items():
            stages += (
                f"<tr><td>{label}</td><td>{split}</td>"
                + "".join(f"<td>{_fmt(m.get(k))}</td>" for k, _ in HEADLINE)
                + "</tr>"
            )
    head = "".join(f"<th>{label}</th>" for _, label in HEADLINE)
    return (
        f"<p>k = {pruning['k']} nearest training patches, threshold = {pruning['threshold']}: "
        f"{pruning['prototypes_before']} &rarr; {pruning['prototypes_after']} prototypes "
        f"({pruning['pruned']} pruned, {pruning['merged']} merged duplicates).</p>"
        "<table><tr><th>class</th><th>before</th><th>pruned</th><th>merged</th><th>after</th></tr>"
        f"{rows}</table><table><tr><th>stage</th><th>split</th>{head}</tr>{stages}</table>"
    )


def _gallery(index: dict[str, Any], status: dict[int, dict[str, Any]], background: set[int]) -> str:
    by_class: dict[str, list[dict[str, Any]]] = {}
    for g in index["gallery"]:
        by_class.setdefault(g["class"], []).append(g)
    parts = []
    for cls, items in by_class.items():
        cards = []
        for g in items:
            j = g["prototype"]
            st = status.get(j, {}).get("status", "kept")
            classes = ["card", st] + (["background"] if j in background else [])
            label = {
                "pruned": "PRUNED",
                "merged": f"MERGED into {status.get(j, {}).get('merged_into')}",
            }.get(st, "")
            imgs = ""
            if g["crop"]:
                imgs = _img(f"explain/gallery/{g['crop']}", f"prototype {j} patch") + _img(
                    f"explain/gallery/{g['source']}", f"prototype {j} source"
                )
            cards.append(
                f'<div class="{" ".join(classes)}">{imgs}<br><b>prototype {j}</b> '
                f'<span class="badge">{_e(label)}</span><br>from {_e(g["source_image"])} '
                f"({_e(g['source_class'])})"
                + (f"<br>sees {100 * g['rf_fraction']:.0f} % of the image"
                   if g.get("rf_fraction") == g.get("rf_fraction") and g.get("rf_fraction")
                   else "")  # fmt: skip
                + ("<br><i>background?</i>" if j in background else "")
                + "</div>"
            )
        parts.append(f"<h3>{_e(cls)}</h3><div class=gallery>{''.join(cards)}</div>")
    return "".join(parts)


QUALITY_ROWS = (
    ("mean_purity", "class purity of the k nearest training patches (mean)"),
    ("background_share", "share of prototypes whose source patch is flagged as background"),
    ("background_base_rate", "the flag's base rate: share of latent cells flagged by the grid's "
                             "geometry alone (a smooth peak at each cell)"),
    ("distinct_sources", "distinct source images / prototypes"),
    ("near_duplicates", "near-duplicate prototypes (equal to an earlier one)"),
    ("mean_stability", "peak-cell stability: share of own-class test images whose peak latent "
                       "cell stays the same under input noise"),
    ("mean_deletion_auc_prp", "deletion AUC, PRP order (lower: the map found what matters)"),
    ("mean_deletion_auc_upsample", "deletion AUC, upsampled-similarity order"),
    ("mean_deletion_auc_random", "deletion AUC, random order (the control)"),
    ("max_rf_fraction", "largest share of the image one prototype patch can see (analytic field)"),
    ("effective_rf_fraction", "share of the image holding 90 % of a latent cell's input gradient "
                              "(effective field)"),
)  # fmt: skip

LOCALISATION_ROWS = (
    ("on_lesion", "heatmap mass on the lesion"),
    ("pointing", "pointing game: peak on the lesion"),
    ("top_iou", "IoU of the lesion with the map's top pixels (as many as the lesion has)"),
)
IMAGE_SET_LABELS = {"": "source image", "test_": "3 nearest test images"}


def _with_corrected(summary: dict[str, Any], key: str) -> str:
    value, corrected = summary.get(f"mean_{key}"), summary.get(f"corrected_{key}")
    if value is None:
        return "n/a"
    return f"{value:.3f} ({corrected:+.2f})" if corrected is not None else f"{value:.3f}"


def _localisation_table(summary: dict[str, Any]) -> str:
    """Each localisation measure of each heatmap beside its chance level (explain.localisation)."""
    rows = []
    for prefix, images in IMAGE_SET_LABELS.items():
        for measure, label in LOCALISATION_ROWS:
            if f"chance_{prefix}{measure}" not in summary:
                continue
            rows.append(f"<tr><td>{_e(label)}</td><td>{_e(images)}</td>"
                        f"<td>{_with_corrected(summary, f'{prefix}{measure}_prp')}</td>"
                        f"<td>{_with_corrected(summary, f'{prefix}{measure}_upsample')}</td>"
                        f"<td>{_fmt(summary[f'chance_{prefix}{measure}'])}</td></tr>")  # fmt: skip
    if "mean_source_box_on_lesion" in summary:
        rows.append("<tr><td>source box on the lesion</td><td>source image</td>"
                    f"<td colspan=2>{_with_corrected(summary, 'source_box_on_lesion')}</td>"
                    f"<td>{_fmt(summary.get('chance_on_lesion'))}</td></tr>")  # fmt: skip
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("measure", "images", "PRP", "upsampled map", "chance"))
    head = f"<tr>{head}</tr>"
    return f"<h3>Localisation against the lesion</h3><table>{head}{''.join(rows)}</table>"


DELETION_ROWS = (
    ("deletion_auc", "deletion, mean-colour pixels (ST-ProtoPNet's)", "below 0"),
    ("blur_deletion_auc", "deletion, blurred substrate", "below 0"),
    ("blur_insertion_auc", "insertion from the blurred substrate", "above 0"),
)


def _interval(summary: dict[str, Any], key: str) -> str:
    if key not in summary:
        return "n/a"
    return f"{summary[key]:+.3f} [{summary[key + '_low']:+.3f}, {summary[key + '_high']:+.3f}]"


def _order_table(summary: dict[str, Any]) -> str:
    """Each heatmap's deletion / insertion AUC minus random order's, paired by prototype."""
    rows = "".join(
        f"<tr><td>{_e(label)}</td><td>{_interval(summary, f'{v}_prp_minus_random')}</td>"
        f"<td>{_interval(summary, f'{v}_upsample_minus_random')}</td><td>{better}</td></tr>"
        for v, label, better in DELETION_ROWS if f"{v}_prp_minus_random" in summary
    )  # fmt: skip
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("curve", "PRP − random", "upsampled − random",
                                             "better than random"))  # fmt: skip
    return (f"<h3>Heatmap order against random order</h3><table><tr>{head}</tr>{rows}</table>"
            "<p class=muted>Area under the prototype's similarity (relative to the intact "
            "image) while pixels are removed, or put back, in the map's order, minus the same "
            "with a random order: mean over prototypes (each on its 3 nearest test images) "
            "with a 95 % t interval. An interval that covers 0 does not rank the map above "
            "chance.</p>")  # fmt: skip


def prp_rule(cfg: dict[str, Any]) -> str:
    """The prototype layer's PRP rule of a run's config (lrp.prp.RULE_NAMES)."""
    from ..lrp.prp import RULE_NAMES

    return RULE_NAMES[cfg.get("protopnet", {}).get("similarity", "log")]


def _sanity_table(summary: dict[str, Any]) -> str:
    """The sanity checks (explain.sanity): does each map change when the model is destroyed?"""
    if "sanity_cascade_prp" not in summary:
        return ""
    rows = []
    for kind, label in (("prp", "PRP"), ("upsample", "upsampled similarity")):
        verdict = "; ".join(
            f"{check}: changes (passes)" if summary.get(key, True)
            else f'<b class="wrong">{check}: stays (fails)</b>'
            for check, key in (("trunk", f"sanity_passes_{kind}"),
                               ("prototypes", f"sanity_prototypes_passes_{kind}"))
        )  # fmt: skip
        cascade, protos = summary[f"sanity_cascade_{kind}"], summary[f"sanity_prototypes_{kind}"]
        rows.append(f"<tr><td>{label}</td><td>{_fmt(cascade)}</td><td>{_fmt(protos)}</td>"
                    f"<td>{verdict}</td></tr>")  # fmt: skip
    head = "".join(f"<th>{h}</th>" for h in ("map", "trunk and add-on randomised",
                                             "prototypes randomised", "verdict"))  # fmt: skip
    return (f"<h3>Sanity checks</h3><table><tr>{head}</tr>{''.join(rows)}</table>"
            "<p class=muted>Mean Spearman rank correlation of each map with the trained model's "
            "on the same test images, after re-initialising every layer from the add-on down "
            "to the first conv (cascading randomisation, Adebayo et al. 2018), and after "
            "replacing the prototypes by random vectors (Gaussian, the prototypes' per-channel "
            "mean and std). A map still correlated above 0.5 with the trunk destroyed shows the "
            "image, not the model; one above 0.5 with random prototypes shows the image's "
            "latent structure more than the prototype it is said to explain.</p>")  # fmt: skip


def _quality_summary(summary: dict[str, Any]) -> str:
    """The per-model explanation-quality tables (explain.metrics)."""
    if not summary:
        return ""
    rows = "".join(f"<tr><td>{_e(label)}</td><td>{_fmt(summary.get(key))}</td></tr>"
                   for key, label in QUALITY_ROWS if key in summary)  # fmt: skip
    masks = ("real lesion masks" if summary.get("lesion_masks") == "folder"
             else "a lesion-mask proxy (Otsu threshold of the lightness, largest component; "
                  "mean Dice 0.69 against real HAM10000 masks)")  # fmt: skip
    return (f"<h3>Explanation quality</h3><table>{rows}</table>"
            f"{_order_table(summary)}{_localisation_table(summary)}{_sanity_table(summary)}"
            f"<p class=muted>Localisation uses {masks}. In brackets: chance-corrected, "
            "(value - chance) / (1 - chance): 0 is what a map that ignores the image scores, 1 "
            "is perfect. The chance level is the lesion's share of the image (for the IoU, "
            "m / (2 - m)), averaged over the same images.</p>")  # fmt: skip


def render_html(title: str, sections: list[tuple[str, str, str]]) -> str:
    """The page: sections are (anchor, heading, body html)."""
    nav = "".join(f'<a href="#{a}">{_e(h)}</a>' for a, h, _ in sections)
    body = "".join(f'<section id="{a}"><h2>{_e(h)}</h2>{b}</section>' for a, h, b in sections)
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{_e(title)}</h1><nav>{nav}</nav>{body}"
        '<p id="image-check" class="muted"></p>'
        f"<script>{CHECK_SCRIPT}</script></body></html>"
    )


def build_report(
    run: str | Path,
    out: str | Path | None = None,
    *,
    force: bool = False,
    samples: int = 8,
    k: int | None = None,
    hires: bool = True,
    device: str = "auto",
    progress: bool | None = None,
    quality_images: int = 3,
) -> Path:
    """Write the report of run folder `run` into `out` (default RUN/report); returns index.html.
    `quality_images`: nearest test images per prototype for the explanation metrics."""
    from ..train.checkpoint import load_checkpoint

    run_dir = Path(run)
    if not run_dir.is_dir():
        raise ProtopruneError(
            f"run folder {run_dir} does not exist", "give a folder written by protoprune train"
        )
    ckpt = load_checkpoint(run_dir)
    out_dir = prepare_run_dir(Path(out) if out else run_dir / "report", force=force)
    cfg = ckpt["config"]
    title = f"{cfg.get('name', run_dir.name)}: {ckpt.get('model_type')} {ckpt.get('arch')}"
    sections = _run_sections(run_dir, ckpt, out_dir)
    if ckpt.get("model_type") == "protopnet":
        from ..explain.analysis import analyse_checkpoint

        index = analyse_checkpoint(ckpt, out_dir / "explain", k=k, samples=samples, hires=hires,
                                   quality_images=quality_images,
                                   device=device, progress=progress)  # fmt: skip
        sections += _protopnet_sections(index, run_dir, cfg)
    else:
        sections.append(("interpretability", "Prototypes",
                         "<p class=muted>A baseline classifier has no prototypes; train with "
                         "model.type: protopnet for explanations.</p>"))  # fmt: skip
    page = out_dir / "index.html"
    atomic_write_text(page, render_html(title, sections))
    return page


def _run_sections(run_dir: Path, ckpt: dict, out_dir: Path) -> list[tuple[str, str, str]]:
    """Configuration, metrics (with the confusion matrix) and training curves of any run."""
    from .. import __version__

    cfg = ckpt["config"]
    cfg_text = (
        (run_dir / "config.yaml").read_text()
        if (run_dir / "config.yaml").is_file()
        else yaml.safe_dump(cfg, sort_keys=False)
    )
    results = (
        json.loads((run_dir / "metrics.json").read_text())
        if (run_dir / "metrics.json").is_file()
        else {}
    )
    summary = (
        f"<p>Data set: {_e(cfg['data']['dataset'])} ({cfg['data']['image_size']} px), "
        f"{len(ckpt['class_names'])} classes: {_e(', '.join(ckpt['class_names']))}. Checkpoint: "
        f"<code>{_e(ckpt['path'])}</code>. protoprune {__version__}.</p>"
    )
    sections = [
        (
            "config",
            "Configuration",
            summary
            + f"<details><summary>full configuration (YAML)</summary><pre>{_e(cfg_text)}</pre></details>",
        )
    ]
    body = metrics_table(results)
    cm = _copy(run_dir / "confusion_matrix.png", out_dir)
    if cm:
        body += "<h3>Confusion matrix (test)</h3>" + _img(cm, "confusion matrix", width="520")
    sections.append(("metrics", "Metrics", body))
    curves = _copy(run_dir / "training_curves.png", out_dir)
    if curves:
        sections.append(("curves", "Training curves", _img(curves, "training curves")))
    return sections


def _protopnet_sections(index: dict, run_dir: Path, cfg: dict) -> list[tuple[str, str, str]]:
    """The prototype gallery, prototype pruning, local and global explanations and quality."""
    pruning_file = run_dir / "prototype_pruning" / "prototype_pruning.json"
    pruning = json.loads(pruning_file.read_text()) if pruning_file.is_file() else None
    status = {r["prototype"]: r for r in pruning["prototypes"]} if pruning else {}
    background = set(index["quality"]["background_prototypes"])
    loc = index.get("localisation") or {}
    warning = (f'<p class="wrong"><b>Not localised:</b> {_e(loc["warning"])}</p>'
               if loc.get("warning") else "")  # fmt: skip
    legend = warning + (
        "<p class=muted>Each card: the prototype's patch and its source training image (yellow "
        "box: the 95th-percentile region of its similarity map; cyan box: the receptive field "
        "of the latent patch, all the pixels it can see). Red: pruned; orange: merged "
        "duplicate; dashed outline: source patch flagged as background.</p>"
    )
    if not pruning:
        legend += "<p class=muted>No prototype pruning in this run (protoprune prune-prototypes RUN).</p>"
    sections = [("gallery", "Prototypes by class", legend + _gallery(index, status, background))]
    if pruning:
        sections.append(("pruning", "Prototype pruning", _pruning_section(pruning)))
    return sections + [_local_section(index, warning, cfg), _global_section(index, warning),
                       _quality_section(index)]  # fmt: skip


def _local_section(index: dict, warning: str, cfg: dict) -> tuple[str, str, str]:
    cases = "".join(
        f'<div class=sample><p class="{"ok" if s["correct"] else "wrong"}">{_e(s["image_id"])}: '
        f"true {_e(s['label'])}, predicted {_e(s['predicted_class'])} "
        f"({'correct' if s['correct'] else 'wrong'})</p>"
        f'<a href="explain/local/{_e(s["figure"])}">'
        f"{_img('explain/local/' + s['figure'], 'explanation of ' + s['image_id'])}</a>"
        f'<br><a href="explain/local/{_e(s["json"])}">data (JSON)</a></div>'
        for s in index["local"]
    )
    return ("local", "Local explanations (test images)",
            warning + "<p class=muted>Per image the most similar prototypes: where "
            "each matched (upsampled similarity map with its 95th-percentile box in "
            "yellow and the matched patch's receptive field in cyan; beside it the PRP "
            "map, the pixels whose relevance made the prototype similar, with "
            f"{_e(prp_rule(cfg))} at the prototype layer), similarity "
            "x last-layer weight = contribution to the predicted class, and the "
            "prototype's source patch.</p>" + cases)  # fmt: skip


def _global_section(index: dict, warning: str) -> tuple[str, str, str]:
    glob = "".join(
        f"<h3>{_e(f['class'])}: nearest {_e(f['split'])} patches</h3>"
        + _img("explain/global/" + f["figure"], f"{f['class']} {f['split']} neighbours")
        for f in index["global"]
    )
    return ("global", "Global analysis",
            warning + '<p>Tables: <a href="explain/global/nearest_train.csv">train</a>, '
            '<a href="explain/global/nearest_test.csv">test</a>. Boxes: yellow the '
            "95th-percentile region, cyan the receptive field of the matched patch."
            "</p>" + glob)  # fmt: skip


def _quality_section(index: dict) -> tuple[str, str, str]:
    q = index["quality"]
    return ("quality", "Prototype quality",
            f"<p>Mean class purity of the {index['k']} nearest training patches: "
            f"{q['mean_purity']:.3f}. Source patches flagged as background "
            "(box mostly in the outer 1/8 border ring, or grey-level contrast below half "
            f"the image's): {_e(q['background_prototypes'] or 'none')}.</p>"
            + _quality_summary(q.get("summary") or {})
            + _img("explain/quality/" + q["figure"], "prototype quality")
            + '<p><a href="explain/quality/prototype_quality.csv">table</a></p>')  # fmt: skip
