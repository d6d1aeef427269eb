"""One partition's store: the join rules, the counts, durability across reopening, expiry, pruning."""

from __future__ import annotations

import random

import numpy as np
import pytest

from worker.feedback.quality import outcome
from worker.feedback.records import Label, Score
from worker.feedback.store import DAY_MS, PENDING, Store

WINDOW = 120 * DAY_MS
NOW = 1_800_000_000_000


class Clock:
    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def score(txn: str, s: float, version: str = "v1", event_time: int = NOW - 1000, features=None) -> Score:
    return Score(txn, version, s, 0.5, event_time, features)


def label(txn: str, is_fraud: bool, label_time: int = NOW) -> Label:
    return Label(txn, is_fraud, label_time, "analyst")


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "partition-0.sqlite", WINDOW, clock=Clock())
    yield s
    s.close()


def counts(store: Store, version: str = "v1") -> dict[str, int]:
    return {o: n for (v, o), n in store.outcome_counts().items() if v == version and n}


def test_a_score_and_its_label_meet_in_either_order(store):
    store.apply([score("a", 0.9), score("b", 0.1)], [], {"scores": 2})
    assert counts(store) == {PENDING: 2}
    store.apply([score("c", 0.9)], [label("a", True), label("b", True), label("d", False)], {"labels": 3})
    assert counts(store) == {"tp": 1, "fn": 1, PENDING: 1}
    applied = store.apply([score("d", 0.2)], [label("c", False)], {"scores": 4, "labels": 4})
    assert counts(store) == {"tp": 1, "fn": 1, "fp": 1, "tn": 1}
    assert len(applied.label_lags) == 2  # c and d met their labels now
    assert store.next_offsets() == {"scores": 4, "labels": 4}


def test_a_repeated_score_or_label_never_counts_twice(store):
    store.apply([score("a", 0.9)], [label("a", True)], {})
    applied = store.apply([score("a", 0.9)], [label("a", True)], {})
    assert applied.duplicates == 1 and applied.stale_labels == 1
    assert counts(store) == {"tp": 1}


def test_the_latest_label_time_wins_whatever_the_order_they_arrive_in(store):
    store.apply([score("a", 0.9)], [label("a", False, label_time=NOW - 10)], {})
    assert counts(store) == {"fp": 1}
    store.apply([], [label("a", True, label_time=NOW)], {})  # a chargeback overturns the analyst
    assert counts(store) == {"tp": 1}
    store.apply([], [label("a", False, label_time=NOW - 5)], {})  # an older decision, arriving late
    assert counts(store) == {"tp": 1}


def test_each_model_version_has_its_own_outcome(store):
    store.apply([score("a", 0.9, "v1"), score("a", 0.2, "v2")], [label("a", True)], {})
    assert counts(store, "v1") == {"tp": 1} and counts(store, "v2") == {"fn": 1}


def test_an_unlabelled_transaction_is_genuine_past_the_label_window_until_a_label_says_otherwise(tmp_path):
    clock = Clock()
    store = Store(tmp_path / "p.sqlite", WINDOW, clock=clock)
    store.apply([score("a", 0.9, event_time=NOW), score("b", 0.1, event_time=NOW)], [], {})
    assert store.expire() == 0
    clock.now = NOW + WINDOW + 1
    assert store.expire() == 2
    assert counts(store) == {"fp": 1, "tn": 1}
    store.apply([], [label("b", True, label_time=clock.now)], {})  # a very late chargeback
    assert counts(store) == {"fp": 1, "fn": 1}
    # A score arriving after its window counts as genuine at once.
    store.apply([score("c", 0.1, event_time=NOW - 1)], [], {})
    assert counts(store) == {"fp": 1, "fn": 1, "tn": 1}
    store.close()


def test_pruning_keeps_the_counts_and_drops_the_rows(tmp_path):
    clock = Clock()
    store = Store(tmp_path / "p.sqlite", WINDOW, clock=clock)
    store.apply([score("a", 0.9, event_time=NOW, features=(("x",), (1.0,)))], [label("a", True)], {})
    clock.now = NOW + WINDOW + 2 * DAY_MS
    assert store.prune() == 1
    assert store.rows() == 0 and counts(store) == {"tp": 1}
    store.close()


def test_the_counts_and_offsets_survive_reopening(tmp_path):
    path = tmp_path / "partition-3.sqlite"
    store = Store(path, WINDOW, clock=Clock())
    store.apply([score("a", 0.9)], [label("a", True)], {"s": 10, "l": 7})
    store.close()
    again = Store(path, WINDOW, clock=Clock())
    assert again.existed and again.next_offsets() == {"s": 10, "l": 7} and counts(again) == {"tp": 1}
    again.close()


def test_a_failed_apply_changes_nothing(store):
    class Boom(Exception):
        pass

    def labels():
        yield label("a", True)
        raise Boom

    with pytest.raises(Boom):
        store.apply([score("a", 0.9)], labels(), {"s": 5})
    assert store.outcome_counts() == {} and store.next_offsets() == {}


@pytest.mark.parametrize("seed", range(3))
def test_counts_equal_a_direct_computation_whatever_the_order_and_repeats(tmp_path, seed):
    """Any interleaving of scores and labels, each delivered up to three times, gives the same counts."""
    rng = random.Random(seed)
    n = 300
    scores_ = [score(f"t{i}", rng.random()) for i in range(n)]
    truth = {f"t{i}": rng.random() < 0.2 for i in range(n) if i % 7}  # some never labelled
    labels_ = [label(t, f) for t, f in truth.items()]
    events = [("s", s) for s in scores_ for _ in range(rng.randint(1, 3))]
    events += [("l", lab) for lab in labels_ for _ in range(rng.randint(1, 3))]
    rng.shuffle(events)
    store = Store(tmp_path / "p.sqlite", WINDOW, clock=Clock())
    for start in range(0, len(events), 37):
        chunk = events[start : start + 37]
        store.apply([e for k, e in chunk if k == "s"], [e for k, e in chunk if k == "l"], {})
    expected: dict[str, int] = {}
    for s in scores_:
        key = outcome(s.score, s.threshold, truth.get(s.transaction_id)) or PENDING
        expected[key] = expected.get(key, 0) + 1
    assert counts(store) == expected
    store.close()


def test_the_window_gives_scores_and_truths_of_resolved_rows(store):
    store.apply([score("a", 0.9), score("b", 0.2), score("c", 0.4)], [label("a", True), label("b", False)], {})
    scores, thresholds, truths = store.window("v1", NOW - 1, 100)
    assert sorted(zip(scores.tolist(), truths.tolist(), strict=True)) == [(0.2, False), (0.9, True)]
    assert np.all(thresholds == 0.5)


def test_examples_are_resolved_transactions_with_features(store):
    f = (("x", "y"), (1.5, -2.0))
    store.apply([score("a", 0.9, features=f), score("b", 0.1, features=f), score("c", 0.1)], [label("a", True)], {})
    rows = list(store.examples(None, None))
    assert [(r[0], r[2], r[3]) for r in rows] == [("a", True, ["x", "y"])]  # b is unlabelled, c has no features
    assert np.frombuffer(rows[0][4], "<f8").tolist() == [1.5, -2.0]
