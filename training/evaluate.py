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


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(y).astype(np.int64), np.asarray(scores, dtype=np.float64)))


def histogram(scores: np.ndarray, bins: int = 20) -> dict[str, list[float]]:
    """The manifest's reference distribution for drift checks (``fraud_score_psi``).

    Edges at quantiles of the training scores, so each bin holds about 1/``bins`` of them: scores
    crowd near 0 (and frauds near 1), and equal-width bins would put nearly everything in the
    first one, leaving the PSI blind to shifts among ordinary transactions. Edges are deduplicated
    (a model with many tied scores yields fewer bins), the first is 0 and the last 1.
    """
    s = np.clip(np.asarray(scores, dtype=np.float64).ravel(), 0.0, 1.0)
    if s.size == 0:
        raise ValueError("no scores to build a histogram from")
    inner = np.quantile(s, np.linspace(0.0, 1.0, bins + 1)[1:-1], method="lower")  # edges are training scores
    edges = np.unique(np.concatenate(([0.0], np.round(inner, 9), [1.0])))
    # np.histogram: bins are [e_i, e_i+1) and the last one [e_n-1, 1]; the worker bins the same way.
    counts, _ = np.histogram(s, bins=edges)
    return {"edges": [float(e) for e in edges], "counts": [float(c) for c in counts]}
