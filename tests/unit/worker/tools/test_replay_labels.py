"""fraud-replay's labels: each row's label, sent after its delay, keyed by its transaction id."""

from __future__ import annotations

import collections
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


# -- in the data's time (--event-time data) ----------------------------------------------------------------


class KafkaProducer(Producer):
    """What ``replay`` needs of kafka-python's producer, recording each record in the order sent."""

    def __init__(self, **options) -> None:
        super().__init__()
        KafkaProducer.last = self

    def partitions_for(self, topic):
        return {0}

    def flush(self):
        pass

    def close(self, timeout=None):
        pass


def _replay(monkeypatch, argv: list[str]) -> tuple[list[dict], list[tuple[int, dict]]]:
    """Run fraud-replay against a recording producer: (the events, (number of events before it, label) per label)."""
    import kafka

    from worker.programs import fraud_replay

    monkeypatch.setattr(kafka, "KafkaProducer", KafkaProducer)
    monkeypatch.setattr(fraud_replay, "require_access", lambda *a, **k: None)
    monkeypatch.setattr(fraud_replay, "producer_options", lambda config, paced: {"max_block_ms": 1000})
    assert fraud_replay.main([*argv, "--topic", "tx", "--bootstrap-servers", "127.0.0.1:1", "--quiet"]) == 0
    events: list[dict] = []
    labels: list[tuple[int, dict]] = []
    for topic, _, value in KafkaProducer.last.sent:
        if topic == "tx":
            events.append(json.loads(value))
        else:
            labels.append((len(events), json.loads(value)))
    return events, labels


def test_data_time_labels_carry_the_datas_label_times_and_follow_the_event_that_passes_them(monkeypatch):
    from worker.offline.synthetic import generate_behavioural

    n = 3000
    want = generate_behavioural(n, 0)
    events, labels = _replay(monkeypatch, ["--synthetic", str(n), "--generator", "v3", "--event-time", "data",
                                           "--key-column", "customer_id", "--key-in-event",
                                           "--labels-topic", "fraud-labels", "--label-delay-seconds", "5"])  # fmt: skip
    assert [e["event_time"] for e in events] == want["event_time"].tolist()
    assert all("label_time" not in e and "Class" not in e for e in events)
    assert len(labels) == n
    by_id = {e["transaction_id"]: i for i, e in enumerate(events)}
    times = [e["event_time"] for e in events]
    for before, label in labels:
        i = by_id[label["transaction_id"]]
        assert label["label_time"] == want["label_time"][i]  # the data's, not the wall clock's (nor 5 s)
        assert label["is_fraud"] == bool(want["Class"][i])
        # sent right after the first event at or past its label time (at the end when there is none)
        passing = next((k for k, t in enumerate(times) if t >= label["label_time"]), None)
        assert before == (n if passing is None else passing + 1)
    assert [lab["label_time"] for _, lab in labels] == sorted(want["label_time"].tolist())
    assert any(before < n for before, _ in labels) and any(before == n for before, _ in labels)


def test_data_time_labels_of_a_csv_without_label_times_are_its_event_times_plus_the_delay(monkeypatch, tmp_path):
    path = tmp_path / "tx.csv"
    path.write_text("event_time,amount,Class\n1000,1.5,1\n3000,2.5,0\n6000,3.5,1\n9000,4.5,0\n")
    events, labels = _replay(monkeypatch, ["--data", str(path), "--event-time", "data",
                                           "--labels-topic", "l", "--label-delay-seconds", "2.5"])  # fmt: skip
    assert [e["event_time"] for e in events] == [1000, 3000, 6000, 9000]
    assert [(before, lab["label_time"], lab["is_fraud"]) for before, lab in labels] == [
        (3, 3500, True), (3, 5500, False), (4, 8500, True), (4, 11500, False)
    ]  # fmt: skip


def test_a_csvs_label_time_column_is_read_for_the_labels_and_never_sent_in_an_event(monkeypatch, tmp_path):
    path = tmp_path / "tx.csv"
    path.write_text("event_time,known_at,amount,Class\n1000,5000,1.5,1\n2000,,2.5,1\n3000,500,3.5,0\n6000,7000,4.5,1\n")
    args = ["--data", str(path), "--event-time", "data", "--label-time-column", "known_at", "--labels-topic", "l",
            "--label-delay-seconds", "1"]  # fmt: skip
    events, labels = _replay(monkeypatch, args)
    assert all("known_at" not in e for e in events)
    # a missing label time: the event's time plus the delay; one before its event: the event's time
    assert [(before, lab["label_time"]) for before, lab in labels] == [(3, 3000), (3, 3000), (4, 5000), (4, 7000)]
    events, _ = _replay(monkeypatch, ["--data", str(path), "--label-time-column", "known_at"])
    assert all("known_at" not in e for e in events)


def test_on_the_wall_clock_labels_keep_their_delay_and_the_label_time_stays_out_of_the_events(monkeypatch):
    events, labels = _replay(monkeypatch, ["--synthetic", "50", "--generator", "v3", "--labels-topic", "l"])
    assert len(events) == len(labels) == 50 and all("label_time" not in e for e in events)
    now = time.time() * 1000
    assert all(abs(lab["label_time"] - now) < 60_000 for _, lab in labels)
    events, labels = _replay(monkeypatch, ["--synthetic", "50", "--generator", "v3", "--event-time", "data"])
    assert labels == [] and all("label_time" not in e for e in events)


def test_data_time_labels_wait_in_label_time_order():
    labels, producer = Labels("l", 0.0, "Class", data_time=True), Producer()
    labels.add("a", {"event_time": 100, "Class": 1}, keep=False, label_time=900)
    labels.add("b", {"event_time": 200, "Class": 0}, keep=False, label_time=300)
    labels.add("c", {"event_time": 250, "Class": 1}, keep=False)  # no label time: the event's, delay 0
    assert labels.pending == collections.deque()
    labels.passed(producer, [], 250)
    assert [json.loads(v)["transaction_id"] for _, _, v in producer.sent] == ["c"]
    labels.passed(producer, [], 300)
    labels.finish(producer, [])
    assert [(json.loads(v)["transaction_id"], json.loads(v)["label_time"]) for _, _, v in producer.sent] == [
        ("c", 250), ("b", 300), ("a", 900)
    ]  # fmt: skip
    assert labels.sent == 3 and labels.frauds == 2
