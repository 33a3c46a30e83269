"""The push's records: each prototype's provenance (source image, cell, distance, box, receptive
field) and the paper's box around the top 5 % of its similarity map."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ...models.receptive_field import receptive_field_or_none
from ..model import ProtoPNet
from .projection import Winners

BOX_PERCENTILE = 95  # the paper's box: the 95th percentile of the upsampled similarity map


def provenance_records(model: ProtoPNet, win: Winners, boxes: torch.Tensor, y_global: torch.Tensor,
                       class_names: Sequence[str], image_ids, input_hw: tuple[int, int]) -> list[dict[str, Any]]:  # fmt: skip
    """One provenance record per prototype: its source image, latent cell, distance, box and
    receptive field (-1 / NaN / "" where it was not pushed)."""
    k = model.prototype_size
    # one device -> host copy per quantity (no per-prototype syncs on CUDA)
    idx_cpu, cls_cpu = win.image.cpu().tolist(), model.prototype_classes.cpu().tolist()
    rows_cpu, cols_cpu, dist_cpu = win.rows.cpu().tolist(), win.cols.cpu().tolist(), win.distance.cpu().tolist()
    y_cpu, box_cpu = y_global.cpu().tolist(), boxes.tolist()
    rf = receptive_field_or_none(model)  # each prototype's receptive field: its rf box
    no_rf = {key: -1 for key in ("rf_y0", "rf_y1", "rf_x0", "rf_x1")} | {"rf_fraction": float("nan")}
    records = []
    for j in range(model.num_prototypes):
        i, cls = idx_cpu[j], cls_cpu[j]
        ok = i >= 0
        records.append(
            {
                "prototype": j,
                "class_index": cls,
                "class": class_names[cls],
                "pushed": ok,
                "image_index": i,
                "image_id": (str(image_ids[i]) if image_ids is not None else str(i)) if ok else "",
                "image_class": class_names[y_cpu[i]] if ok else "",
                "latent_h": rows_cpu[j] if ok else -1,
                "latent_w": cols_cpu[j] if ok else -1,
                "distance": dist_cpu[j] if ok else float("nan"),
                **{key: (box_cpu[j][n] if ok else -1) for n, key in enumerate(("box_y0", "box_y1", "box_x0", "box_x1"))},
                **(rf.record(rows_cpu[j], cols_cpu[j], input_hw, k) if ok and rf is not None else no_rf),
            }
        )
    return records


def boxes(maps: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (y0, y1, x0, x1; end exclusive) around the top 5 % of each upsampled map.

    Bicubic upsampling and the 95th percentile (linear interpolation, as np.percentile) follow the
    original; it is computed for all prototypes at once, in chunks (torch.quantile caps its input).
    """
    up = F.interpolate(maps[:, None].float(), size=size, mode="bicubic", align_corners=False)[:, 0]
    flat = up.flatten(1)
    chunk = max(1, (1 << 24) // flat.shape[1] - 1)
    thr = torch.cat(
        [
            torch.quantile(flat[i : i + chunk], BOX_PERCENTILE / 100, dim=1)
            for i in range(0, len(flat), chunk)
        ]
    )
    mask = up >= thr[:, None, None]
    on_rows, on_cols = mask.any(2), mask.any(1)  # (P, H), (P, W)
    h, w = size
    y0 = on_rows.int().argmax(1)
    y1 = h - on_rows.flip(1).int().argmax(1)
    x0 = on_cols.int().argmax(1)
    x1 = w - on_cols.flip(1).int().argmax(1)
    return torch.stack([y0, y1, x0, x1], 1).cpu(), up
