"""Training curves: a ProtoPNet history with trunk epochs marks them (their metrics are a linear
head's, not the prototype layer's)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from protoprune.figures import plot_training_curves


def _history(phases: list[str]) -> pd.DataFrame:
    n = len(phases)
    return pd.DataFrame(
        {
            "phase": phases,
            "epoch": range(1, n + 1),
            "train_loss": [1.5 - 0.1 * i for i in range(n)],
            "val_accuracy": [0.4 + 0.03 * i for i in range(n)],
            "val_balanced_accuracy": [0.3 + 0.03 * i for i in range(n)],
        }
    )


def test_trunk_epochs_are_shaded_and_the_figure_is_written(tmp_path) -> None:
    plain = Image.open(
        plot_training_curves(_history(["warm", "joint", "joint"]), tmp_path / "a.png")
    )
    trunk = Image.open(
        plot_training_curves(_history(["trunk", "trunk", "warm", "joint"]), tmp_path / "b.png")
    )
    assert plain.size == trunk.size and plain.size[0] > 100

    def grey(img: Image.Image) -> int:  # the shaded span: light grey (0.9 * 255 = 230) pixels
        return int((np.asarray(img.convert("RGB")) == 230).all(axis=-1).sum())

    assert grey(trunk) > 1000 > grey(plain)
