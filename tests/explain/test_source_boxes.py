"""Source boxes against lesion masks: the position chance against brute-force enumeration, the
per-prototype table on constructed masks and records (mask resized as the images are), and the
selected push's records read from a run folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from protoprune.explain.source_boxes import (
    box_position_chance,
    selected_push_records,
    source_boxes_on_lesion,
    summarize_source_boxes,
)


@pytest.mark.parametrize("hw", [(3, 4), (1, 1), (7, 9), (20, 30)])
def test_position_chance_matches_enumerating_every_position(hw):
    rng = np.random.default_rng(0)
    mask = rng.random((12, 15)) < 0.4
    mask[3:9, 4:12] = True
    h, w = min(hw[0], 12), min(hw[1], 15)
    shares = [mask[y:y + h, x:x + w].mean() for y in range(12 - h + 1) for x in range(15 - w + 1)]
    mean, majority = box_position_chance(mask, *hw)
    assert mean == pytest.approx(np.mean(shares))
    assert majority == pytest.approx(np.mean(np.asarray(shares) >= 0.5))


def _records(rows: list[dict]) -> pd.DataFrame:
    base = {"class_index": 0, "class": "mel", "pushed": True}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_boxes_on_constructed_masks(tmp_path):
    # masks at 40 x 20 (W x H, as the data's originals are 4:3-ish), the network input 10 x 10:
    # the lesion is the left half, so after the squash it is columns 0-4 of every row
    lesion = np.zeros((20, 40), np.uint8)
    lesion[:, :20] = 255
    Image.fromarray(lesion).save(tmp_path / "ISIC_0000001_segmentation.png")
    records = _records([
        {"prototype": 0, "image_id": "ISIC_0000001", "box_y0": 0, "box_y1": 4, "box_x0": 0, "box_x1": 4},
        {"prototype": 1, "image_id": "ISIC_0000001", "box_y0": 2, "box_y1": 6, "box_x0": 3, "box_x1": 7},
        {"prototype": 2, "image_id": "ISIC_0000002", "box_y0": 0, "box_y1": 2, "box_x0": 0, "box_x1": 2},
        {"prototype": 3, "image_id": None, "pushed": False, "box_y0": 0, "box_y1": 1, "box_x0": 0, "box_x1": 1},
    ])  # fmt: skip
    table = source_boxes_on_lesion(records, tmp_path, (10, 10)).set_index("prototype")
    assert list(table.index) == [0, 1]  # no mask for ISIC_0000002, prototype 3 not pushed
    assert table.loc[0, "box_on_lesion"] == pytest.approx(1.0) and table.loc[0, "on_lesion"]
    assert table.loc[1, "box_on_lesion"] == pytest.approx(0.5) and table.loc[1, "on_lesion"]
    # a 4-wide box at the 7 horizontal positions over columns 0-4 on the lesion: shares 1, 1, 3/4, 1/2, 1/4, 0, 0
    assert table.loc[0, "chance_box_on_lesion"] == pytest.approx(3.5 / 7)
    assert table.loc[0, "chance_on_lesion"] == pytest.approx(4 / 7)
    assert table.loc[0, "lesion_area"] == pytest.approx(0.5) and table.loc[0, "box_area"] == pytest.approx(0.16)
    summary = summarize_source_boxes(table.reset_index())
    assert summary["on_lesion"] == 1.0 and summary["distinct_images"] == 1
    assert summary["box_on_lesion"] == pytest.approx(0.75)


def test_the_selected_push_is_read(tmp_path):
    for epoch, image in ((8, "ISIC_0000008"), (10, "ISIC_0000010")):
        folder = tmp_path / "prototypes" / f"epoch-{epoch:03d}"
        folder.mkdir(parents=True)
        _records([{"prototype": 0, "image_id": image, "box_y0": 0, "box_y1": 1, "box_x0": 0,
                   "box_x1": 1}]).to_csv(folder / "prototypes.csv", index=False)  # fmt: skip
        (folder / "prototypes.json").write_text(json.dumps({"input_size": [150, 200]}))
    (tmp_path / "protopnet_stages.json").write_text(json.dumps({"selected_push_epoch": 8}))
    records, hw = selected_push_records(tmp_path)
    assert records["image_id"].tolist() == ["ISIC_0000008"] and hw == (150, 200)
