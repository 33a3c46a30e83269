"""Classification metrics for imbalanced, multi-class medical data (scikit-learn based)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

MELANOMA_NAMES = ("mel", "melanoma", "MEL")
HEADLINE = ("accuracy", "balanced_accuracy", "auroc_macro", "melanoma_sensitivity")


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, balanced accuracy, per-class P/R/F1, macro one-vs-rest AUROC, melanoma recall, confusion matrix.

    AUROC is macro-averaged over the classes present in `y_true` (a class absent from the
    evaluated split has no defined AUROC); it is None when fewer than two classes are present.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    labels = np.arange(k)
    y_pred = probs.argmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prec, rec, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, zero_division=0
        )
        bal = balanced_accuracy_score(y_true, y_pred)
    present = np.unique(y_true)
    auroc = None
    per_class_auc: dict[str, float | None] = {name: None for name in class_names}
    if len(present) >= 2:
        aucs = []
        for c in present:
            a = roc_auc_score((y_true == c).astype(int), probs[:, c])
            per_class_auc[class_names[c]] = float(a)
            aucs.append(a)
        auroc = float(np.mean(aucs))
    mel = next((i for i, n in enumerate(class_names) if n in MELANOMA_NAMES), None)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(bal),
        "auroc_macro": auroc,
        "melanoma_sensitivity": None if mel is None or support[mel] == 0 else float(rec[mel]),
        "per_class": {
            name: {
                "precision": float(prec[i]),
                "recall": float(rec[i]),
                "f1": float(f1[i]),
                "auroc": per_class_auc[name],
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "class_names": list(class_names),
    }


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def metrics_markdown(results: dict[str, dict], title: str = "Metrics") -> str:
    """A markdown report of one or more named metric dicts (e.g. {'val': ..., 'test': ...})."""
    lines = [f"# {title}", "", "| split | n | accuracy | balanced acc. | macro AUROC | melanoma sens. |", "|---|---|---|---|---|---|"]
    for name, m in results.items():
        lines.append(
            f"| {name} | {m['n']} | {_fmt(m['accuracy'])} | {_fmt(m['balanced_accuracy'])} | "
            f"{_fmt(m['auroc_macro'])} | {_fmt(m['melanoma_sensitivity'])} |"
        )
    for name, m in results.items():
        lines += ["", f"## Per class ({name})", "", "| class | precision | recall | F1 | AUROC | support |", "|---|---|---|---|---|---|"]
        for cls, pc in m["per_class"].items():
            lines.append(
                f"| {cls} | {pc['precision']:.3f} | {pc['recall']:.3f} | {pc['f1']:.3f} | "
                f"{_fmt(pc['auroc'])} | {pc['support']} |"
            )
        names = m["class_names"]
        lines += ["", f"Confusion matrix ({name}; rows = true, columns = predicted):", "",
                  "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for cls, row in zip(names, m["confusion_matrix"]):
            lines.append(f"| {cls} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def mean_std(values, fmt: str = ".3f") -> str:
    """'mean ± sample std' of the values, NaN left out (std 0 for a single value): a table cell."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    mean = v.mean() if len(v) else float("nan")
    std = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{mean:{fmt}} ± {std:{fmt}}"


def paired_t_interval(differences, level: float = 0.95) -> dict:
    """Mean of paired differences with its two-sided t confidence interval (NaN below 2 pairs)."""
    from scipy import stats

    d = np.asarray(differences, dtype=np.float64)
    d = d[~np.isnan(d)]
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "ci_low": mean - half, "ci_high": mean + half}
