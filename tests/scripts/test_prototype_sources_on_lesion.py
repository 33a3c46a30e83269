"""scripts/prototype_sources_on_lesion.py on a constructed study folder: finished units only, the
pruned model's rows are the prototypes prototype pruning kept, the seed mean and its interval are
those of the per-seed shares, and bad input exits 2 with error/fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from .loading import SCRIPTS, load_script

SCRIPT = SCRIPTS / "prototype_sources_on_lesion.py"


def _script():
    return load_script("prototype_sources_on_lesion")


def _unit(study: Path, seed: int, boxes: list[tuple[int, int, int, int]], kept: list[int] | None) -> None:
    run = study / "runs" / "resnet18" / f"seed{seed}" / "protopnet"
    folder = run / "prototypes" / "epoch-010"
    folder.mkdir(parents=True)
    pd.DataFrame([{"prototype": j, "class_index": 0, "class": "mel", "pushed": True, "image_id": "ISIC_0000001",
                   "box_y0": b[0], "box_y1": b[1], "box_x0": b[2], "box_x1": b[3]} for j, b in enumerate(boxes)]
                 ).to_csv(folder / "prototypes.csv", index=False)  # fmt: skip
    (folder / "prototypes.json").write_text(json.dumps({"input_size": [10, 10]}))
    (run / "protopnet_stages.json").write_text(json.dumps({"selected_push_epoch": 10}))
    (run / "done.json").write_text("{}")
    if kept is not None:
        pruned = run.parent / "protopnet-pruned"
        pruned.mkdir()
        (pruned / "prototype_pruning.json").write_text(json.dumps({"kept_indices": kept}))
        (pruned / "done.json").write_text("{}")


@pytest.fixture()
def study(tmp_path: Path) -> tuple[Path, Path]:
    masks = tmp_path / "masks"
    masks.mkdir()
    lesion = np.zeros((10, 10), np.uint8)
    lesion[:, :5] = 255  # the left half
    Image.fromarray(lesion).save(masks / "ISIC_0000001_segmentation.png")
    on, off, half = (0, 2, 0, 2), (0, 2, 6, 8), (0, 2, 4, 6)
    _unit(tmp_path / "study", 0, [on, off, half, on], kept=[0, 1])
    _unit(tmp_path / "study", 1, [on, on, off, off], kept=None)
    (tmp_path / "study" / "runs" / "resnet18" / "seed2" / "protopnet").mkdir(parents=True)  # running
    return tmp_path / "study", masks


def test_seed_rows_and_the_interval_over_seeds(study):
    folder, masks = study
    rows = _script().seed_tables(folder, masks)
    assert sorted(rows["seed"].unique()) == [0, 1]
    pruned = rows[rows["model"] == "protopnet-pruned"]
    assert pruned["prototype"].tolist() == [0, 1] and pruned["seed"].tolist() == [0, 0]
    shares = rows[rows["model"] == "protopnet"].groupby("seed")["on_lesion"].mean()
    assert shares.tolist() == [0.75, 0.5]  # the half box counts (>= 0.5)
    text = _script().markdown(rows)
    half = stats.t.ppf(0.975, 1) * np.std([0.75, 0.5], ddof=1) / np.sqrt(2)
    assert f"| ProtoPNet | 2 | 0.625 [{0.625 - half:.3f}, {0.625 + half:.3f}] |" in text


def test_bad_input_exits_2(study, tmp_path):
    folder, _ = study
    out = subprocess.run([sys.executable, str(SCRIPT), str(folder), "--masks", str(tmp_path / "nowhere")],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 2 and out.stderr.startswith("error:") and "fix:" in out.stderr
    assert "Traceback" not in out.stderr
