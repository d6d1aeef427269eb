"""Score and label records: times out of range or in the future are skipped with a reason, and every
record that decodes can be stored (no value SQLite cannot hold reaches it)."""

from __future__ import annotations

import msgspec
import pytest

from worker.feedback.records import FUTURE_MS, BadRecord, decode_label, decode_score
from worker.feedback.store import DAY_MS, Store

NOW = 1_800_000_000_000


def label(label_time, txn: str = "t1") -> bytes:
    return msgspec.json.encode({"transaction_id": txn, "is_fraud": True, "label_time": label_time, "source": "x"})


def score(event_time, txn: str = "t1", **extra) -> bytes:
    return msgspec.json.encode({"transaction_id": txn, "score": 0.7, "threshold": 0.5, "model_version": "v1",
                                "event_time": event_time, **extra})  # fmt: skip


@pytest.mark.parametrize(
    ("label_time", "reason"),
    [(-1, "out_of_range"), (2**63, "out_of_range"), (2**64 - 1, "out_of_range"), (10**30, "out_of_range"),
     (NOW + FUTURE_MS + 1, "future"), (NOW * 1000, "future"), (NOW + 365 * DAY_MS, "future")],
)  # fmt: skip
def test_a_label_time_out_of_range_or_in_the_future_is_skipped_with_a_reason(label_time, reason):
    with pytest.raises(BadRecord) as err:
        decode_label(label(label_time), NOW)
    assert err.value.reason == reason
    with pytest.raises(BadRecord) as err:
        decode_score(score(label_time), NOW)
    assert err.value.reason == reason


@pytest.mark.parametrize("t", [0, NOW - 365 * DAY_MS, NOW, NOW + FUTURE_MS])
def test_times_in_range_are_taken(t):
    assert decode_label(label(t), NOW).label_time == t
    assert decode_score(score(t), NOW).event_time == t


EXTREMES = [
    score(NOW, features={"a": 1.7976931348623157e308, "b": -5e-324}),
    score(NOW, txn="\u0000\U0010ffff" * 20, model_version="v" * 10_000),
    score(NOW, txn="t3", features={"é\u0000": 0.0, "": 1.0}),
    label(NOW, txn="x" * 256),
    msgspec.json.encode({"transaction_id": "t", "is_fraud": False, "label_time": NOW, "source": "s" * 100_000}),
]


def test_every_record_that_decodes_can_be_stored(tmp_path):
    store = Store(tmp_path / "partition-0.sqlite", 120 * DAY_MS, clock=lambda: NOW)
    try:
        for value in EXTREMES:
            try:
                s = [decode_score(value, NOW)]
                lab = []
            except BadRecord:
                s, lab = [], [decode_label(value, NOW)]
            store.apply(s, lab, {"scores": 1})
        store.expire()
        store.prune()
        assert store.rows() == 3
    finally:
        store.close()


@pytest.mark.parametrize(
    "value",
    [score(NOW, features={"a": 1e400}), score(NOW, features={"a": 10**400}), score(NOW, score=10**400),
     score(NOW, threshold=-(10**400)), b'{"transaction_id": "\\ud800", "is_fraud": true, "label_time": 1}',
     label(1.5), label(True)],
)  # fmt: skip
def test_values_sqlite_or_the_metrics_cannot_take_are_refused(value):
    with pytest.raises(BadRecord):
        try:
            decode_score(value, NOW)
        except BadRecord:
            decode_label(value, NOW)
