"""fraud-replay's labels: each row's label, sent after its delay, keyed by its transaction id."""

from __future__ import annotations

import json
import time

from worker.feedback.records import decode_label
from worker.programs.fraud_replay import Labels, rows_from_synthetic


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic, key, value):
        self.sent.append((topic, key, value))

        class Future:
            def add_errback(self, fn):
                return self

        return Future()


def test_a_label_leaves_after_its_delay_keyed_by_its_transaction():
    labels, producer = Labels("fraud-labels", 0.2, "Class"), Producer()
    fields = {"V1": 1.0, "Class": 1.0}
    labels.add("r-000000001", fields, keep=False)
    assert "Class" not in fields, "without --with-label the event does not carry its label"
    labels.due(producer, [])
    assert producer.sent == []
    time.sleep(0.25)
    labels.due(producer, [])
    ((topic, key, value),) = producer.sent
    label = decode_label(value)
    assert topic == "fraud-labels" and key == b"r-000000001"
    assert label.transaction_id == "r-000000001" and label.is_fraud is True and label.source == "fraud-replay"
    assert abs(label.label_time - time.time() * 1000) < 5_000


def test_finish_waits_for_the_labels_still_due_and_a_row_without_a_label_is_counted():
    labels, producer = Labels("l", 0.1, "Class"), Producer()
    labels.add("a", {"Class": "0"}, keep=True)
    labels.add("b", {"Class": ""}, keep=True)
    labels.add("c", {"V1": 2.0}, keep=True)
    labels.finish(producer, [])
    assert [json.loads(v)["transaction_id"] for _, _, v in producer.sent] == ["a"]
    assert labels.sent == 1 and labels.missing == 2 and labels.frauds == 0


def test_synthetic_rows_carry_their_label_when_asked():
    ((_, fields),) = list(rows_from_synthetic(1, 0, "account_id", True))
    assert "Class" in fields
