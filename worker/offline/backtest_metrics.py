"""``fraud-worker backtest``'s label metrics: precision, recall and cost at chosen thresholds, the PR curve.

Pure numpy, apart from ``plot_pr_curve`` (matplotlib, imported only there: it is in the training
and bench extras, not the worker's runtime). An event is flagged when ``score >= threshold``, as
the worker alerts. The cost is ``cost_missed_fraud * FN + cost_false_alarm * FP``, the training
job's ``cost`` threshold policy (training/thresholds.py), with its defaults: 100 per missed fraud,
1 per false alarm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.feedback.quality import average_precision

DEFAULT_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)
COST_MISSED_FRAUD = 100.0
COST_FALSE_ALARM = 1.0
PLOT_HINT = "pip install 'fraud-scoring[training]'"


@dataclass(frozen=True)
class AtThreshold:
    threshold: float
    tp: int
    fp: int
    fn: int
    cost: float

    @property
    def flagged(self) -> int:
        return self.tp + self.fp

    @property
    def precision(self) -> float | None:
        return self.tp / self.flagged if self.flagged else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None


def label_value(x: Any) -> int | None:
    """0 or 1 from a label as a file holds it (0/1, true/false, "0"/"1", "true"/"false"); None otherwise."""
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, (int, float)):
        return int(x) if x in (0, 1) else None
    if isinstance(x, str):
        text = x.strip().lower()
        if text in ("1", "1.0", "true"):
            return 1
        if text in ("0", "0.0", "false"):
            return 0
    return None


def at_thresholds(
    y: np.ndarray, scores: np.ndarray, thresholds: Sequence[float], cost_missed_fraud: float, cost_false_alarm: float
) -> list[AtThreshold]:
    """Confusion counts and cost at each threshold (ascending), in one sort of the scores."""
    y = np.asarray(y, dtype=bool)
    s = np.sort(np.asarray(scores, dtype=np.float32)[y])
    negatives = np.sort(np.asarray(scores, dtype=np.float32)[~y])
    rows = []
    for t in sorted(set(thresholds)):
        cut = np.float32(t)  # the worker compares the float32 score with the threshold
        tp = int(s.size - np.searchsorted(s, cut, side="left"))
        fp = int(negatives.size - np.searchsorted(negatives, cut, side="left"))
        fn = int(s.size - tp)
        rows.append(AtThreshold(float(t), tp, fp, fn, cost_missed_fraud * fn + cost_false_alarm * fp))
    return rows


def report(
    column: str,
    y: np.ndarray,
    scores: np.ndarray,
    model_threshold: float,
    thresholds: Sequence[float],
    cost_missed_fraud: float,
    cost_false_alarm: float,
    unlabelled: int = 0,
) -> str:
    """The metrics as printed: one line on the labels, then a table with the model's threshold marked."""
    frauds = int(np.count_nonzero(y))
    ap = average_precision(y, scores)
    lines = [
        f"labels from {column}: {y.size:,} scored events labelled, {frauds:,} fraud"
        + (f", {unlabelled:,} without a label (left out)" if unlabelled else "")
        + (f"; average precision {ap:.4f}" if ap is not None else "")
    ]
    lines.append(f"   threshold  flagged       tp       fp       fn  precision  recall  cost "
                 f"({cost_missed_fraud:g}/missed fraud, {cost_false_alarm:g}/false alarm)")  # fmt: skip
    rows = at_thresholds(y, scores, [*thresholds, model_threshold], cost_missed_fraud, cost_false_alarm)
    for r in rows:
        mark = "*" if r.threshold == model_threshold else " "
        lines.append(
            f" {mark} {r.threshold:9.4f} {r.flagged:8,} {r.tp:8,} {r.fp:8,} {r.fn:8,}  {_pct(r.precision):>9}"
            f"  {_pct(r.recall):>6}  {r.cost:,.0f}"
        )
    lines.append("   (* the model's threshold)")
    return "\n".join(lines)


def figures(
    column: str,
    y: np.ndarray,
    scores: np.ndarray,
    model_threshold: float,
    thresholds: Sequence[float],
    cost_missed_fraud: float,
    cost_false_alarm: float,
    unlabelled: int = 0,
) -> dict[str, Any]:
    """The figures of ``report`` as a JSON-ready dict."""
    rows = at_thresholds(y, scores, [*thresholds, model_threshold], cost_missed_fraud, cost_false_alarm)
    return {
        "column": column,
        "labelled": int(y.size),
        "frauds": int(np.count_nonzero(y)),
        "unlabelled": int(unlabelled),
        "average_precision": average_precision(y, scores),
        "cost_missed_fraud": cost_missed_fraud,
        "cost_false_alarm": cost_false_alarm,
        "thresholds": [
            {"threshold": r.threshold, "model": r.threshold == model_threshold, "flagged": r.flagged, "tp": r.tp,
             "fp": r.fp, "fn": r.fn, "precision": r.precision, "recall": r.recall, "cost": r.cost}
            for r in rows
        ],  # fmt: skip
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def pr_curve(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score, highest first (the points of ``average_precision``)."""
    y = np.asarray(y, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(t)[ends]
    precision = tps / (ends + 1)
    recall = tps / max(int(y.sum()), 1)
    return precision, recall


def plot_pr_curve(path: str, y: np.ndarray, scores: np.ndarray, model_threshold: float, title: str) -> None:
    """A PNG of the PR curve with the model's threshold marked (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precision, recall = pr_curve(y, scores)
    (at,) = at_thresholds(y, scores, [model_threshold], 0.0, 0.0)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    ax.plot(recall, precision, lw=1.5)
    if at.precision is not None and at.recall is not None:
        ax.plot([at.recall], [at.precision], "o", color="tab:red", label=f"threshold {model_threshold:.4f}")
        ax.legend(loc="lower left")
    ap = average_precision(y, scores)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.01),
           title=f"{title}" + (f" (AP {ap:.4f})" if ap is not None else ""))  # fmt: skip
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
