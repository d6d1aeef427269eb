"""Pure: the outcome of one scored transaction, and precision, recall and average precision of many.

A transaction scored at ``threshold`` was flagged when ``score >= threshold`` (as the worker
alerts). Its truth is its latest label; without one it is genuine once its event is older than
the label window (``expired``), and unknown before that. The outcome is ``tp``, ``fp``, ``fn`` or
``tn``, or None while the truth is unknown.

``average_precision`` is scikit-learn's ``average_precision_score`` (the step-wise area under the
precision-recall curve, thresholds at the distinct scores), in numpy: the worker's install has no
scikit-learn. ``tests/unit/worker/feedback/test_quality.py`` checks it against scikit-learn.
"""

from __future__ import annotations

import numpy as np

OUTCOMES = ("tp", "fp", "fn", "tn")


def outcome(score: float, threshold: float, is_fraud: bool | None) -> str | None:
    if is_fraud is None:
        return None
    flagged = score >= threshold
    if flagged:
        return "tp" if is_fraud else "fp"
    return "fn" if is_fraud else "tn"


def truth(label: bool | None, event_time: int, cutoff: int) -> bool | None:
    """The label if there is one; genuine (False) for an event older than ``cutoff``; else unknown."""
    if label is not None:
        return label
    return False if event_time < cutoff else None


def precision_recall(counts: dict[str, int]) -> tuple[float | None, float | None]:
    """From outcome counts; None where the denominator is 0 (nothing flagged, no fraud)."""
    tp, fp, fn = counts.get("tp", 0), counts.get("fp", 0), counts.get("fn", 0)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    return precision, recall


def average_precision(y: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the precision-recall curve, as scikit-learn computes it; None without a positive."""
    y = np.asarray(y, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives = int(y.sum())
    if positives == 0 or y.size == 0:
        return None
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], y[order]
    # The last row of each run of equal scores: one point of the curve per distinct threshold.
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(t)[ends]
    fps = (ends + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
