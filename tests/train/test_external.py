import shutil

import numpy as np
import pandas as pd
import pytest

from protoprune.config import load_config
from protoprune.data import bundled_path
from protoprune.errors import CheckpointError
from protoprune.models.factory import build_model
from protoprune.train.checkpoint import save_checkpoint
from protoprune.train.run import evaluate_external_isic2018

NAMES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
ISIC_COLUMNS = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


def make_isic_folder(root):
    """An ISIC 2018 Task 3 folder from the bundled real HAM10000 images, with one-hot ground truth."""
    meta = pd.read_csv(bundled_path("ham10000", "HAM10000_metadata.csv"))
    (root / "images").mkdir(parents=True)
    rows = []
    for image_id, dx in zip(meta.image_id, meta.dx):
        shutil.copy(bundled_path("ham10000", "images", f"{image_id}.jpg"), root / "images" / f"{image_id}.jpg")
        rows.append({"image": image_id, **{c: float(c.lower() == dx) for c in ISIC_COLUMNS}})
    pd.DataFrame(rows).to_csv(root / "ISIC2018_Task3_Test_GroundTruth.csv", index=False)
    return meta


def test_external_isic2018_uses_every_image_with_the_right_labels(tmp_path):
    meta = make_isic_folder(tmp_path / "isic")
    cfg = load_config(None)
    ckpt = save_checkpoint(tmp_path / "m.pt", build_model(cfg, 7), cfg, NAMES)
    m = evaluate_external_isic2018(ckpt, tmp_path / "isic", device="cpu")
    assert m["n"] == len(meta)
    true_counts = np.asarray(m["confusion_matrix"]).sum(1)
    assert true_counts.tolist() == [int((meta.dx == n).sum()) for n in NAMES]


def test_external_set_with_other_classes_is_refused(tmp_path):
    make_isic_folder(tmp_path / "isic")
    cfg = load_config(None)
    names = ["a", "b", "c", "d", "e", "f", "g"]
    ckpt = save_checkpoint(tmp_path / "m.pt", build_model(cfg, 7), cfg, names)
    with pytest.raises(CheckpointError, match="differ from ISIC 2018"):
        evaluate_external_isic2018(ckpt, tmp_path / "isic", device="cpu")
