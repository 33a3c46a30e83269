"""Local explanations: why the network classified one image ("this looks like that").

The logit of class c is sum_j similarity_j * w[c, j] (the last layer has no bias), so each
prototype's contribution to the prediction is its similarity times its weight for the predicted
class, and the contributions add up to the predicted logit exactly. An ensemble (a list of
models, logits summed) is explained over the prototypes of all members, each tagged by member.

The model sees the image resized to its input size; with `hires` the heatmaps and boxes are drawn
on the image at its own resolution (the similarity map upsampled to it), so a clinician sees the
lesion rather than 28 x 28 pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.transforms import build_transform
from ..io import atomic_save_figure, atomic_write_json
from ..lrp.composites import input_bounds
from ..models.receptive_field import (
    latent_effective_field,
    localisation,
    receptive_field_or_none,
)
from ..protopnet.model import ProtoPNet
from .nearest import NearestPatches
from .render import (
    RF_COLOR,
    crop,
    draw_box,
    heat_overlay,
    image_array,
    scaled_box,
    similarity_boxes,
)

HEATMAPS = ("upsample", "prp", "both")


@dataclass
class PrototypeSources:
    """Each prototype's source patch: the training image it was pushed onto, boxed, and the crop.

    Found as the prototype's nearest training patch (distance 0 after a push), so no push files
    are needed and pruned models (renumbered prototypes) work the same way.
    """

    image_index: list[int]
    image_id: list[str]
    image_class: list[str]
    distance: list[float]
    boxes: list[list[int] | None]  # in drawing pixels
    framed: list[np.ndarray | None]  # source image with the box
    crops: list[np.ndarray | None]
    plain: list[np.ndarray | None]  # source image without the box (for measurements)
    # the receptive field of the source patch (drawing pixels; None for an untraceable trunk)
    rf_boxes: list[list[int] | None] = field(default_factory=list)
    rf_fraction: list[float] = field(default_factory=list)  # its share of the image


@torch.no_grad()
def prototype_sources(
    model: ProtoPNet,
    nearest: NearestPatches,
    dataset: Any,
    class_names: Sequence[str],
    device: torch.device | str = "cpu",
    hires: bool = False,
) -> PrototypeSources:
    """Render every prototype's nearest training patch (`nearest` from the push set, rank 1)."""
    device = torch.device(device)
    model.eval()
    first = nearest.image_index[:, 0].tolist()
    unique = sorted({i for i in first if i >= 0})
    n = model.num_prototypes
    out = PrototypeSources([], [], [], [], [None] * n, [None] * n, [None] * n, [None] * n,
                           [None] * n, [float("nan")] * n)  # fmt: skip
    rf = receptive_field_or_none(model)
    where = nearest.position[:, 0].tolist()  # flat position in the (H', W') distance map
    if unique:
        x = torch.stack([dataset[i][0] for i in unique]).to(device)
        z = model.conv_features(x)
        row = {i: r for r, i in enumerate(unique)}
        valid = [j for j in range(n) if first[j] >= 0]
        zj = z[torch.tensor([row[first[j]] for j in valid], device=device)]
        protos = model.prototype_vectors[torch.tensor(valid, device=device)]
        maps = model.distance_to_similarity(model.paired_distances(zj, protos)).cpu()
        images = {i: dataset.load_image(i) for i in unique}
        for m, j in enumerate(valid):
            pil = images[first[j]]
            pixels = image_array(pil, None if hires else nearest.input_hw)
            boxes, _ = similarity_boxes(maps[m : m + 1], pixels.shape[:2])
            out.boxes[j] = boxes[0].tolist()
            framed = pixels
            if rf is not None:
                h, w = divmod(int(where[j]), nearest.map_shape[1])
                box = rf.box(h, w, nearest.input_hw, model.prototype_size)
                out.rf_boxes[j] = scaled_box(box, nearest.input_hw, pixels.shape[:2])
                out.rf_fraction[j] = rf.fraction(h, w, nearest.input_hw, model.prototype_size)
                framed = draw_box(pixels, out.rf_boxes[j], RF_COLOR)
            out.framed[j] = draw_box(framed, boxes[0])
            out.crops[j] = crop(pixels, boxes[0])
            out.plain[j] = pixels
    ids = getattr(dataset, "image_ids", None)
    for j in range(n):
        i = first[j]
        out.image_index.append(i)
        out.image_id.append("" if i < 0 else (ids[i] if ids is not None else str(i)))
        out.image_class.append("" if i < 0 else class_names[int(nearest.image_class[j, 0])])
        out.distance.append(float(nearest.distances[j, 0]))
    return out


@dataclass
class Explanation:
    """A local explanation: `record` is plain data (JSON); the arrays are for drawing."""

    record: dict[str, Any]
    drawing: np.ndarray  # the image at drawing resolution, uint8 (H, W, 3)
    maps: torch.Tensor  # (top, H, W) upsampled similarity maps of the listed prototypes
    prp: torch.Tensor | None = None  # (top, H, W) PRP pixel relevance (heatmap prp or both)


@torch.no_grad()
def explain_image(
    model: ProtoPNet | Sequence[ProtoPNet],
    image: Image.Image | str | Path,
    class_names: Sequence[str],
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    top: int = 10,
    hires: bool = False,
    device: torch.device | str = "cpu",
    label: int | None = None,
    image_id: str | None = None,
    heatmap: str = "both",
) -> Explanation:
    """Prediction, probabilities and the `top` most similar prototypes with their contributions.

    `model` may be a list (an ensemble: logits summed); each listed prototype then names its
    member. `label` (if known) is recorded so reports can show correct and wrong cases.
    `heatmap`: upsample (the similarity map, as the original), prp (pixel relevance, explain.prp)
    or both. Each listed prototype also gets the receptive field of its best-matching patch.
    """
    from ..data.base import open_rgb
    from ..errors import ConfigError

    if heatmap not in HEATMAPS:
        raise ConfigError(f"unknown heatmap {heatmap!r}", f"use one of {', '.join(HEATMAPS)}")
    if isinstance(image, (str, Path)):
        image_id = image_id or Path(image).name
        image = open_rgb(image)
    image = image.convert("RGB")
    members = [model] if isinstance(model, ProtoPNet) else list(model)
    device = torch.device(device)
    x = build_transform(image_size, mean, std, train=False)(image)[None].to(device)
    outs = [m.eval().forward_details(x) for m in members]
    sims = [m.distance_to_similarity(out.min_distances)[0] for m, out in zip(members, outs)]
    logits = torch.stack([o.logits[0].float() for o in outs]).sum(0)
    probs = torch.softmax(logits, 0)
    pred = int(logits.argmax())
    member_of = torch.cat([torch.full((len(s),), i) for i, s in enumerate(sims)])
    proto_of = torch.cat([torch.arange(len(s)) for s in sims])
    sim_all = torch.cat(sims).float().cpu()
    weights = torch.cat([m.last_layer.weight[pred].float().cpu() for m in members])
    contrib = sim_all * weights
    order = sim_all.argsort(descending=True)[:top].tolist()

    drawing = image_array(image, None if hires else (image_size, image_size))
    size = drawing.shape[:2]
    maps = torch.stack([members[int(member_of[r])].distance_to_similarity(
        outs[int(member_of[r])].distances[0, int(proto_of[r])]) for r in order]).cpu()  # fmt: skip
    boxes, up = similarity_boxes(maps, size)
    input_hw = (image_size, image_size)
    prp = None
    if heatmap != "upsample":
        prp = _prp_maps(members, x, member_of, proto_of, order, size, input_bounds(mean, std))
    listed = _listed(order, members, outs, member_of, proto_of, sim_all, weights, boxes, size,
                     input_hw, class_names)  # fmt: skip
    record = {
        "image_id": image_id,
        "label": None if label is None else class_names[label],
        "predicted_class": class_names[pred],
        "predicted_index": pred,
        "correct": None if label is None else label == pred,
        "probabilities": {name: float(p) for name, p in zip(class_names, probs)},
        "logits": {name: float(v) for name, v in zip(class_names, logits)},
        "contributions_sum": float(contrib.sum()),
        "class_evidence": _class_evidence(members, sim_all, class_names),
        "members": len(members),
        "drawing_size": list(size),
        "hires": hires,
        "heatmap": heatmap,
        "localisation": localisation(
            receptive_field_or_none(members[0]), tuple(outs[0].distances.shape[-2:]), input_hw, members[0].prototype_size,
            latent_effective_field(members[0], x),
        ),
        "top_prototypes": listed,
    }
    return Explanation(record, drawing, up, prp)


def _listed(order, members, outs, member_of, proto_of, sim_all, weights, boxes, size, input_hw,
            class_names) -> list[dict[str, Any]]:  # fmt: skip
    """One record per listed prototype (`order`: indices into the members' flattened prototypes):
    its similarity, weight, contribution, boxes and the receptive field of its best match."""
    fields = [receptive_field_or_none(m) for m in members]
    listed = []
    for rank, r in enumerate(order):
        mi, j = int(member_of[r]), int(proto_of[r])
        cls = int(members[mi].prototype_classes[j])
        field_ = _matched_field(fields[mi], outs[mi].distances[0, j], members[mi].prototype_size,
                                input_hw, size)  # fmt: skip
        listed.append(
            {
                **field_,
                "rank": rank + 1,
                "member": mi,
                "prototype": j,
                "prototype_class": class_names[cls],
                "similarity": float(sim_all[r]),
                "weight": float(weights[r]),
                "contribution": float(sim_all[r] * weights[r]),
                "box": boxes[rank].tolist(),
                "box_input": scaled_box(boxes[rank], size, input_hw),
            }
        )
    return listed


def _class_evidence(members, sim_all: torch.Tensor, class_names: Sequence[str]) -> dict[str, float]:
    """Per class, the sum of similarity x last-layer weight over every prototype (its logit)."""
    return {
        name: float((sim_all * torch.cat([m.last_layer.weight[c].float().cpu() for m in members])).sum())
        for c, name in enumerate(class_names)
    }


def _matched_field(field, distances: torch.Tensor, prototype_size, input_hw, size) -> dict[str, Any]:
    """The receptive field of a prototype's best-matching latent patch (None without one)."""
    if field is None:
        return {"rf_box": None, "rf_box_input": None, "rf_fraction": None}
    h, w = divmod(int(distances.flatten().argmin()), distances.shape[-1])
    box = field.box(h, w, input_hw, prototype_size)
    return {"rf_box": scaled_box(box, input_hw, size), "rf_box_input": box,
            "rf_fraction": field.fraction(h, w, input_hw, prototype_size)}  # fmt: skip


def _prp_maps(members, x, member_of, proto_of, order, size, bounds) -> torch.Tensor:
    """PRP maps of the listed prototypes (per member, one batched pass), at drawing size."""
    from .prp import prp_heatmaps

    maps = torch.zeros(len(order), *x.shape[-2:])
    for mi, m in enumerate(members):
        ranks = [n for n, r in enumerate(order) if int(member_of[r]) == mi]
        if ranks:
            heat, _ = prp_heatmaps(m, x, [int(proto_of[order[n]]) for n in ranks], bounds=bounds)
            maps[ranks] = heat.float().cpu()
    if tuple(size) != tuple(maps.shape[-2:]):
        maps = torch.nn.functional.interpolate(maps[:, None], size=size, mode="bilinear")[:, 0]
    return maps


DPI, CAPTION = 100, 11  # the local explanation figure's resolution and caption size (pt)


def render_explanation(
    expl: Explanation,
    sources: PrototypeSources | Sequence[PrototypeSources] | None,
    path: str | Path,
) -> Path:
    """One PNG: per listed prototype, where it matched on the image beside its source patch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    srcs = [sources] if isinstance(sources, PrototypeSources) else list(sources or [])
    rows = expl.record["top_prototypes"]
    r = expl.record
    cols = 3 if expl.prp is None else 4
    # drawn at DPI for the report's one-explanation-per-row layout: CAPTION pt at DPI is about
    # 15 px, the size of body text at 100 % zoom, and 4 panels fit a 1,100 px column
    fig, axes = plt.subplots(
        len(rows) + 1, cols, figsize=(2.7 * cols, 2.8 * (len(rows) + 1)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    probs = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[:3]
    head = f"predicted: {r['predicted_class']}" + (f"   (true: {r['label']})" if r["label"] else "")
    head += "\n" + ", ".join(f"{k} {v:.2f}" for k, v in probs)
    head += ("\nsim × w: similarity × last-layer weight\n= contribution to the logit"
             "\nyellow box: top 5 % of the similarity\ncyan box: what that latent patch sees")
    axes[0, 0].imshow(expl.drawing, interpolation="nearest")
    axes[0, 0].set_title(r["image_id"] or "image", fontsize=CAPTION)
    warning = r.get("localisation", {}).get("warning")
    grid = axes[0, 1].get_gridspec()
    for ax in axes[0, 1:]:
        ax.remove()
    text = fig.add_subplot(grid[0, 1:])  # the first row's text spans the three right columns
    text.axis("off")
    text.text(0, 0.5, head, fontsize=CAPTION, va="center")
    if warning:
        text.text(0.52, 0.5, _wrap(warning, 44), fontsize=CAPTION - 1, va="center", color="darkred")
    for k, p in enumerate(rows, start=1):
        overlay = heat_overlay(expl.drawing, expl.maps[k - 1])
        if p.get("rf_box") is not None:
            overlay = draw_box(overlay, p["rf_box"], RF_COLOR)
        overlay = draw_box(overlay, p["box"])
        axes[k, 0].imshow(overlay, interpolation="nearest")
        seen = f" (field {100 * p['rf_fraction']:.0f} %)" if p.get("rf_fraction") else ""
        axes[k, 0].set_title(
            f"#{p['rank']} sim {p['similarity']:.2f} × w {p['weight']:.2f} = {p['contribution']:.2f}"
            f"\nsimilarity map{seen}",
            fontsize=CAPTION,
        )
        if expl.prp is not None:
            axes[k, 1].imshow(heat_overlay(expl.drawing, expl.prp[k - 1].clamp_min(0)),
                              interpolation="nearest")  # fmt: skip
            axes[k, 1].set_title("PRP: pixels that\nmade it similar", fontsize=CAPTION)
        member = f"m{p['member']} " if r["members"] > 1 else ""
        src = srcs[p["member"]] if p["member"] < len(srcs) else None
        c = cols - 2  # the source columns
        if src is not None and src.framed[p["prototype"]] is not None:
            j = p["prototype"]
            axes[k, c].imshow(src.framed[j], interpolation="nearest")
            axes[k, c].set_title(
                f"looks like {member}prototype {j}\n({p['prototype_class']})", fontsize=CAPTION
            )
            axes[k, c + 1].imshow(src.crops[j], interpolation="nearest")
            axes[k, c + 1].set_title(f"its patch, from\n{src.image_id[j]}", fontsize=CAPTION)
        else:
            axes[k, c].set_title(f"{member}prototype {p['prototype']}\n(no source)", fontsize=CAPTION)
    fig.tight_layout()
    out = atomic_save_figure(fig, path, dpi=DPI)
    plt.close(fig)
    return out


def _wrap(text: str, width: int = 48) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def save_explanation(expl: Explanation, sources, out_dir: str | Path, stem: str) -> dict[str, str]:
    """Write `<stem>.png` and `<stem>.json` into out_dir; returns the file names."""
    out_dir = Path(out_dir)
    png = render_explanation(expl, sources, out_dir / f"{stem}.png")
    atomic_write_json(out_dir / f"{stem}.json", {**expl.record, "figure": png.name})
    return {"figure": png.name, "json": f"{stem}.json"}
