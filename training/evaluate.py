"""Test-set metrics and curves (scikit-learn), computed on the scores the worker will compute."""

from __future__ import annotations

from typing import Any

import numpy as np


def metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """ROC AUC, PR AUC (average precision), and precision / recall / F1 / confusion at ``threshold``."""
    from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

    y = np.asarray(y).astype(np.int64)
    s = np.asarray(scores, dtype=np.float64)
    flagged = s >= threshold
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, flagged.astype(np.int64), labels=[0, 1]).ravel())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "rows": int(y.size),
        "positives": int(y.sum()),
        "roc_auc": float(roc_auc_score(y, s)),
        "pr_auc": float(average_precision_score(y, s)),
        "threshold": float(threshold),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    }


def pr_auc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(np.asarray(y).astype(np.int64), np.asarray(scores, dtype=np.float64)))


def histogram(scores: np.ndarray, bins: int = 50) -> dict[str, list[float]]:
    """Equal-width bins over [0, 1]: the manifest's reference distribution for drift checks."""
    counts, edges = np.histogram(np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    return {"edges": [round(float(e), 6) for e in edges], "counts": [float(c) for c in counts]}
