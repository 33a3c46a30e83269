"""Where each prototype's source patch lies relative to the lesion, from a push's records alone.

A push writes, for every prototype, the training image it became a patch of and the paper's box
around that patch (the high-activation region at network-input size, `protopnet.push.records`).
With the lesion masks this says, without the model, whether the prototypes are parts of lesions:
the share of each box on the lesion, and whether most of it is (at least `MAJORITY`). Each figure
has its chance level on the same image: the same-sized box at every position of that image (a
push that picked its patch at random), so a large lesion does not pass for a good prototype.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.base import read_mask
from .metrics import box_share

MAJORITY = 0.5  # a source box "on the lesion" has at least this share of its pixels there


def box_position_chance(mask: np.ndarray, height: int, width: int) -> tuple[float, float]:
    """(mean on-lesion share, share of positions with at least MAJORITY on the lesion) of a
    `height` x `width` box over every position inside `mask` (one "valid" convolution with the
    box)."""
    from scipy.signal import fftconvolve

    m = np.asarray(mask, dtype=np.float64)
    h, w = min(height, m.shape[0]), min(width, m.shape[1])
    shares = fftconvolve(m, np.full((h, w), 1.0 / (h * w)), mode="valid")
    return float(shares.mean()), float((shares >= MAJORITY - 1e-9).mean())


def selected_push_records(run_dir: Path) -> tuple[pd.DataFrame, tuple[int, int]]:
    """The push records of the push a ProtoPNet run selected (protopnet_stages.json), and the
    network-input size (height, width) its boxes are in."""
    stages = json.loads((run_dir / "protopnet_stages.json").read_text())
    folder = run_dir / "prototypes" / f"epoch-{int(stages['selected_push_epoch']):03d}"
    size = json.loads((folder / "prototypes.json").read_text())["input_size"]
    hw = (int(size[0]), int(size[1])) if isinstance(size, list) else (int(size), int(size))
    return pd.read_csv(folder / "prototypes.csv"), hw


def source_boxes_on_lesion(records: pd.DataFrame, masks: Path, input_hw: tuple[int, int]) -> pd.DataFrame:
    """One row per pushed prototype with a mask: its box's on-lesion share and whether most of
    it is on the lesion, each beside its chance on the same image, and the lesion's area share.
    Masks are resized to the network input as the images were (squashed, nearest neighbour)."""
    rows = []
    pushed = records[records["pushed"].astype(bool) & records["image_id"].notna()]
    for _, r in pushed.iterrows():
        mask = read_mask(masks, str(r["image_id"]), (input_hw[1], input_hw[0]))
        if mask is None:
            continue
        box = [int(r[k]) for k in ("box_y0", "box_y1", "box_x0", "box_x1")]
        share = box_share(box, mask)
        chance_share, chance_majority = box_position_chance(mask, box[1] - box[0], box[3] - box[2])
        rows.append({"prototype": int(r["prototype"]), "class": r["class"], "image_id": r["image_id"],
                     "box_on_lesion": share, "on_lesion": bool(share >= MAJORITY),
                     "chance_box_on_lesion": chance_share, "chance_on_lesion": chance_majority,
                     "lesion_area": float(mask.mean()), "box_area": (box[1] - box[0]) * (box[3] - box[2])
                     / (input_hw[0] * input_hw[1])})  # fmt: skip
    return pd.DataFrame(rows)


def summarize_source_boxes(table: pd.DataFrame) -> dict[str, float]:
    """Per-model means of `source_boxes_on_lesion` (the share of prototypes on the lesion, and
    its chance: the mean over prototypes of each image's share of positions that would be)."""
    if table.empty:
        return {"prototypes": 0}
    return {"prototypes": len(table), "on_lesion": float(table["on_lesion"].mean()),
            "chance_on_lesion": float(table["chance_on_lesion"].mean()),
            "box_on_lesion": float(table["box_on_lesion"].mean()),
            "chance_box_on_lesion": float(table["chance_box_on_lesion"].mean()),
            "lesion_area": float(table["lesion_area"].mean()),
            "distinct_images": int(table["image_id"].nunique())}  # fmt: skip
