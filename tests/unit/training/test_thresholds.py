"""Each threshold policy picks what it claims on a hand-made case."""

from __future__ import annotations

import numpy as np
import pytest

from training.thresholds import Policy, counts

# Scores, highest first, with labels. Flagging the top k rows gives:
#   k=1: tp1 fp0  k=2: tp2 fp0  k=3: tp2 fp1  k=4: tp3 fp1  k=5: tp3 fp2  k=6..8: tp3 fp3..5  (4 frauds in all)
SCORES = np.array([0.95, 0.90, 0.80, 0.70, 0.60, 0.40, 0.30, 0.20, 0.10])
LABELS = np.array([1, 1, 0, 1, 0, 0, 0, 0, 1])


def flagged(threshold: float) -> np.ndarray:
    return SCORES >= threshold


def test_max_f1_picks_the_best_f1():
    choice = Policy("max-f1").choose(LABELS, SCORES)
    # k=4: precision 3/4, recall 3/4, F1 0.75 (k=2 gives 2/3, k=9 gives 8/13)
    assert flagged(choice.threshold).sum() == 4
    assert choice.f1 == pytest.approx(0.75)
    assert 0.60 < choice.threshold < 0.70  # halfway between the chosen score and the next


def test_precision_picks_the_lowest_threshold_reaching_the_target():
    choice = Policy("precision", target_precision=0.75).choose(LABELS, SCORES)
    assert flagged(choice.threshold).sum() == 4 and choice.precision == pytest.approx(0.75)
    strict = Policy("precision", target_precision=0.99).choose(LABELS, SCORES)
    assert flagged(strict.threshold).sum() == 2 and strict.recall == pytest.approx(0.5)


def test_precision_out_of_reach_falls_back_to_the_most_precise_and_says_so():
    y = np.array([0, 1, 0, 1])
    s = np.array([0.9, 0.8, 0.7, 0.6])
    choice = Policy("precision", target_precision=0.9).choose(y, s)
    assert choice.extra["target_reached"] is False
    assert choice.precision == pytest.approx(0.5)


def test_cost_minimises_expected_cost():
    # Missed fraud costs 10, a false alarm 1: flag everything down to 0.10 → fp 5, fn 0: cost 5,
    # against k=4: fn 1, fp 1 → 11.
    choice = Policy("cost", cost_missed_fraud=10, cost_false_alarm=1).choose(LABELS, SCORES)
    assert flagged(choice.threshold).sum() == 9 and choice.extra["expected_cost"] == 5
    # Cheap misses, dear alarms: flag only the two sure frauds (cost 2 × 1 = 2).
    cheap = Policy("cost", cost_missed_fraud=1, cost_false_alarm=10).choose(LABELS, SCORES)
    assert flagged(cheap.threshold).sum() == 2 and cheap.extra["expected_cost"] == 2


def test_cost_may_flag_nothing():
    # The top score is a genuine row: any alert costs 100, missing both frauds costs 0.2.
    y, s = np.array([0, 1, 1]), np.array([0.9, 0.5, 0.4])
    choice = Policy("cost", cost_missed_fraud=0.1, cost_false_alarm=100).choose(y, s)
    assert (s >= choice.threshold).sum() == 0 and choice.extra["expected_cost"] == pytest.approx(0.2)


def test_ties_are_one_candidate():
    c = counts(np.array([1, 0, 1]), np.array([0.5, 0.5, 0.2]))
    assert c.tp.tolist() == [0, 1, 2] and c.fp.tolist() == [0, 1, 1]


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError):
        Policy("youden")
