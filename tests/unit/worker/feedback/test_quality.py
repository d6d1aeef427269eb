"""Outcomes, precision and recall, and average precision against scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest

from worker.feedback.quality import average_precision, outcome, precision_recall, truth


@pytest.mark.parametrize(
    "score, threshold, is_fraud, expected",
    [(0.9, 0.5, True, "tp"), (0.9, 0.5, False, "fp"), (0.1, 0.5, True, "fn"), (0.1, 0.5, False, "tn"),
     (0.5, 0.5, True, "tp"), (0.7, 0.5, None, None)],
)  # fmt: skip
def test_an_outcome_is_flagged_as_the_worker_alerts(score, threshold, is_fraud, expected):
    assert outcome(score, threshold, is_fraud) == expected


def test_truth_is_the_label_else_genuine_past_the_window():
    assert truth(True, event_time=0, cutoff=10) is True
    assert truth(None, event_time=5, cutoff=10) is False
    assert truth(None, event_time=10, cutoff=10) is None


def test_precision_and_recall_from_counts():
    assert precision_recall({"tp": 3, "fp": 1, "fn": 2, "tn": 10}) == (0.75, 0.6)
    assert precision_recall({"tn": 5}) == (None, None)


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_equals_scikit_learns(seed):
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(seed)
    y = rng.random(2000) < 0.05
    scores = np.round(np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1), 2)  # rounded: many ties
    assert average_precision(y, scores) == pytest.approx(average_precision_score(y, scores), abs=1e-12)


def test_average_precision_needs_a_positive():
    assert average_precision(np.zeros(5, bool), np.linspace(0, 1, 5)) is None
