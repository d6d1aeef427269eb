"""Pure: the outcome of one scored transaction, and precision, recall and average precision of many.

A transaction scored at ``threshold`` was flagged when ``score >= threshold`` (as the worker
alerts). Its truth is its latest label; without one it is genuine once its event is older than
the label window (``expired``), and unknown before that. The outcome is ``tp``, ``fp``, ``fn`` or
``tn``, or None while the truth is unknown.

Per rule (``rule_figures``): of the resolved transactions a rule set decided in one role, a rule's precision
is the share of fraud among those it matched, its recall the share of their frauds it matched; an action's
the same over the transactions decided with it. Only the ``MAX_RULE_SETS`` rule sets of each role whose
transactions were resolved last are reported: the series stay bounded however often rule sets change.

``average_precision`` is scikit-learn's ``average_precision_score`` (the step-wise area under the
precision-recall curve, thresholds at the distinct scores), in numpy: the worker's install has no
scikit-learn. ``tests/unit/worker/feedback/test_quality.py`` checks it against scikit-learn.
"""

from __future__ import annotations

import numpy as np

OUTCOMES = ("tp", "fp", "fn", "tn")
MAX_RULE_SETS = 10  # per role: the rule sets reported, those whose transactions were resolved last

# (role, rule set, action or rule) -> (resolved transactions, frauds among them, latest resolved_at)
Tally = dict[tuple[str, str, str], tuple[int, int, int]]
# (role, rule set, action or rule) -> value
Figures = dict[tuple[str, str, str], float]


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


def share(part: int, whole: int) -> float | None:
    """``part / whole``; None when ``whole`` is 0."""
    return part / whole if whole else None


def add_tally(total: Tally, more: Tally) -> None:
    """Add ``more``'s counts to ``total`` (the latest time: the later one)."""
    for key, (n, frauds, latest) in more.items():
        had = total.get(key)
        total[key] = (n, frauds, latest) if had is None else (had[0] + n, had[1] + frauds, max(had[2], latest))


def rule_figures(actions: Tally, rules: Tally, max_rule_sets: int = MAX_RULE_SETS) -> dict[str, Figures]:
    """From the tallies per action and per rule: ``resolved``, ``precision``, ``recall`` per (role, rule set,
    rule) and ``action_resolved``, ``action_precision``, ``action_recall`` per (role, rule set, action). Each
    transaction has one action, so a rule set's resolved frauds are its actions' frauds summed. A precision
    or recall without a denominator is left out."""
    frauds: dict[tuple[str, str], int] = {}
    latest: dict[tuple[str, str], int] = {}
    for (role, rule_set, _), (_, f, t) in actions.items():
        frauds[(role, rule_set)] = frauds.get((role, rule_set), 0) + f
        latest[(role, rule_set)] = max(latest.get((role, rule_set), t), t)
    kept = set()
    for role in sorted({r for r, _ in latest}):
        ranked = sorted((k for k in latest if k[0] == role), key=lambda k: (latest[k], k[1]), reverse=True)
        kept.update(ranked[:max_rule_sets])
    out: dict[str, Figures] = {name: {} for name in ("resolved", "precision", "recall", "action_resolved",
                                                     "action_precision", "action_recall")}  # fmt: skip
    for prefix, tally in (("", rules), ("action_", actions)):
        for key, (n, f, _) in tally.items():
            if key[:2] not in kept:
                continue
            out[prefix + "resolved"][key] = n
            precision, recall = share(f, n), share(f, frauds.get(key[:2], 0))
            if precision is not None:
                out[prefix + "precision"][key] = precision
            if recall is not None:
                out[prefix + "recall"][key] = recall
    return out
