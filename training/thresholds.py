"""Threshold policies: pick the alert threshold from labelled validation scores (pure numpy).

A row is flagged when ``score >= threshold``. Candidates are the distinct scores; the threshold
returned lies halfway between the chosen score and the next lower one, so the decision does not
hinge on the last bit of a float32 (Keras and LiteRT agree to ~1e-7, not exactly).

Policies:
  ``max-f1``            the threshold with the highest F1;
  ``precision``         the lowest threshold whose precision reaches a target (so the most recall
                        at that precision); if no threshold reaches it, the most precise one;
  ``cost``              the threshold with the least ``cost_missed_fraud * FN + cost_false_alarm * FP``.
Ties go to the higher threshold (fewer alerts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

POLICIES = ("max-f1", "precision", "cost")


@dataclass(frozen=True)
class Counts:
    """Confusion counts for each candidate, highest threshold first."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    positives: int
    negatives: int

    @property
    def fn(self) -> np.ndarray:
        return self.positives - self.tp

    @property
    def precision(self) -> np.ndarray:
        flagged = self.tp + self.fp
        return np.divide(self.tp, flagged, out=np.ones_like(self.tp, dtype=np.float64), where=flagged > 0)

    @property
    def recall(self) -> np.ndarray:
        return self.tp / max(self.positives, 1)

    @property
    def f1(self) -> np.ndarray:
        denom = 2 * self.tp + self.fp + self.fn
        return np.divide(2 * self.tp, denom, out=np.zeros_like(self.tp, dtype=np.float64), where=denom > 0)


def counts(y: np.ndarray, scores: np.ndarray) -> Counts:
    """Candidate thresholds: flag nothing, then flag each distinct score and everything above it."""
    y = np.asarray(y).astype(np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1 or y.size == 0:
        raise ValueError("labels and scores must be non-empty 1-D arrays of the same length")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(1 - y)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # last row of each run of equal scores
    below = np.r_[s[last[:-1] + 1], -np.inf]
    # Halfway to the next lower distinct score; the lowest candidate flags everything (0.0).
    cut = np.where(np.isfinite(below), (s[last] + below) / 2.0, 0.0)
    top = min(1.0, float(s[0]) + (1.0 - float(s[0])) / 2.0) if s[0] < 1.0 else 1.0
    return Counts(
        thresholds=np.r_[top, cut],
        tp=np.r_[0, tp[last]],
        fp=np.r_[0, fp[last]],
        positives=int(y.sum()),
        negatives=int(y.size - y.sum()),
    )


@dataclass(frozen=True)
class Choice:
    """The chosen threshold and what it achieves on the data it was chosen on."""

    threshold: float
    policy: dict[str, Any]
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    name: str
    target_precision: float = 0.9
    cost_missed_fraud: float = 100.0
    cost_false_alarm: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise ValueError(f"unknown threshold policy {self.name!r} (choose from {', '.join(POLICIES)})")
        if not 0.0 < self.target_precision <= 1.0:
            raise ValueError("target precision must be within (0, 1]")
        if self.cost_missed_fraud < 0 or self.cost_false_alarm < 0:
            raise ValueError("costs must not be negative")

    def params(self) -> dict[str, Any]:
        if self.name == "precision":
            return {"name": self.name, "target_precision": self.target_precision}
        if self.name == "cost":
            return {
                "name": self.name,
                "cost_missed_fraud": self.cost_missed_fraud,
                "cost_false_alarm": self.cost_false_alarm,
            }
        return {"name": self.name}

    def choose(self, y: np.ndarray, scores: np.ndarray) -> Choice:
        c = counts(y, scores)
        extra: dict[str, Any] = {}
        if self.name == "max-f1":
            i = int(np.argmax(c.f1))
        elif self.name == "precision":
            # Flagging nothing has no precision to speak of: only candidates that flag something count.
            prec = c.precision.copy()
            prec[0] = -1.0
            ok = np.flatnonzero(prec >= self.target_precision)
            extra["target_reached"] = bool(ok.size)
            i = int(ok[-1]) if ok.size else int(np.argmax(prec))
        else:
            cost = self.cost_missed_fraud * c.fn + self.cost_false_alarm * c.fp
            i = int(np.argmin(cost))
            extra["expected_cost"] = float(cost[i])
        return Choice(
            threshold=float(c.thresholds[i]),
            policy=self.params(),
            precision=float(c.precision[i]),
            recall=float(c.recall[i]),
            f1=float(c.f1[i]),
            tp=int(c.tp[i]),
            fp=int(c.fp[i]),
            fn=int(c.fn[i]),
            extra=extra,
        )
