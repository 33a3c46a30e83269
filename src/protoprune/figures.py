"""Figures a run draws (matplotlib, headless): confusion matrix and training curves.

Below train/ and report/ alike: training draws them into its run folder, reports show them.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .io import atomic_save_figure  # noqa: E402

# one colour per pruning criterion in every figure (pruning curve, schedules, the study's arms)
CRITERION_COLOURS = {"lrp": "tab:orange", "weight": "tab:green", "grad": "tab:red",
                     "taylor": "tab:purple", "random": "tab:gray"}  # fmt: skip


def plot_confusion_matrix(cm: list[list[int]] | np.ndarray, class_names: list[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix with counts, as a PNG."""
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * k, 0.8 + 0.7 * k))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm[i, j]}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "Confusion matrix (row-normalised colour, counts)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="recall share")
    fig.tight_layout()
    out = atomic_save_figure(fig, path, dpi=120)
    plt.close(fig)
    return out


def plot_training_curves(history: pd.DataFrame, path: str | Path) -> Path:
    """Loss and validation metrics per epoch."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    if "phase" in history and (history["phase"] == "trunk").any():
        # a ProtoPNet's trunk epochs: loss and metrics there are those of the linear head
        last = history.loc[history["phase"] == "trunk", "epoch"].max()
        for ax in axes:
            ax.axvspan(0.5, last + 0.5, color="0.9", label="trunk epochs (linear head)")
    if "train_loss" in history:
        axes[0].plot(history["epoch"], history["train_loss"], marker="o", label="train loss")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    for col in ("val_accuracy", "val_balanced_accuracy", "val_auroc_macro"):
        if col in history and history[col].notna().any():
            axes[1].plot(history["epoch"], history[col], marker="o", label=col.removeprefix("val_"))
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("validation")
    axes[1].set_ylim(0, 1)
    axes[1].legend()
    for ax in axes:  # epochs are whole numbers: no 1.5 ticks
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    out = atomic_save_figure(fig, path, dpi=120)
    plt.close(fig)
    return out
