"""fraud-replay produces well-formed, keyed transaction events that a consumer reads back intact."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

from worker.programs.fraud_replay import main as replay_main

ULB = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "creditcard.csv.gz"


def _read_all(kafka, topic: str, n: int) -> list:
    consumer = kafka.consumer(topic, group_id=kafka.group())
    records: list = []
    while len(records) < n:
        polled = consumer.poll(timeout_ms=5000)
        if not polled:
            break
        for batch in polled.values():
            records.extend(batch)
    return records


def test_synthetic_replay_is_keyed_by_account_with_unique_ids(kafka, capsys):
    topic = kafka.topic(partitions=3)
    rc = replay_main(
        ["--synthetic", "500", "--topic", topic, "--bootstrap-servers", kafka.bootstrap, "--id-prefix", "t"]
    )
    assert rc == 0
    assert "500 events" in capsys.readouterr().out
    records = _read_all(kafka, topic, 500)
    assert len(records) == 500
    events = [json.loads(r.value) for r in records]
    assert len({e["transaction_id"] for e in events}) == 500
    assert all(r.key and r.key.startswith(b"acct-") for r in records)
    assert all("Class" not in e and "account_id" not in e for e in events)
    assert all(isinstance(e["V14"], float) and isinstance(e["event_time"], int) for e in events)
    partitions_per_key: dict[bytes, set[int]] = {}
    for r in records:
        partitions_per_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in partitions_per_key.values())


def test_csv_replay_keeps_every_value_of_the_first_rows(kafka):
    topic = kafka.topic(partitions=1)
    rc = replay_main(
        ["--data", str(ULB), "--count", "200", "--topic", topic, "--bootstrap-servers", kafka.bootstrap, "--quiet"]
    )
    assert rc == 0
    events = [json.loads(r.value) for r in _read_all(kafka, topic, 200)]
    with gzip.open(ULB, "rt", newline="") as fh:
        reader = csv.DictReader(fh)
        expected = [row for _, row in zip(range(200), reader, strict=False)]
    assert len(events) == 200
    for event, row in zip(events, expected, strict=True):  # one partition: order is kept
        assert event["V1"] == float(row["V1"]) and event["Amount"] == float(row["Amount"])
        assert "Class" not in event


def test_missing_topic_is_one_line_and_non_zero(kafka, capsys):
    rc = replay_main(["--synthetic", "5", "--topic", "no-such-topic-x", "--bootstrap-servers", kafka.bootstrap])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-topic-x" in err[0] and "not found" in err[0]


def test_v3_replay_keeps_the_entities_and_the_datas_event_times(kafka, tmp_path):
    """The stream make run sends to a model with a feature spec: keyed by customer, the customer in the event
    too, each event with the data's own event time; a CSV's event_time column is kept the same way."""
    from worker.offline import synthetic

    topic = kafka.topic(partitions=1)
    args = ["--topic", topic, "--bootstrap-servers", kafka.bootstrap, "--quiet", "--event-time", "data",
            "--key-column", "customer_id", "--key-in-event"]  # fmt: skip
    assert replay_main(["--synthetic", "300", "--generator", "v3", *args]) == 0
    records = _read_all(kafka, topic, 300)
    want = synthetic.generate_behavioural(300, 0)
    events = [json.loads(r.value) for r in records]
    assert [e["event_time"] for e in events] == want["event_time"].tolist()
    assert [r.key.decode() for r in records] == [e["customer_id"] for e in events] == want["customer_id"].tolist()
    assert all({"terminal_id", "amount", "channel", "merchant_category"} <= set(e) for e in events)
    assert all("label_time" not in e and "Class" not in e for e in events)  # the label's, not the event's

    path = synthetic.write_csv(tmp_path / "v3.csv", want, quote_header=False)
    topic = kafka.topic(partitions=1)
    assert replay_main(["--data", str(path), *args[:1], topic, *args[2:]]) == 0
    events = [json.loads(r.value) for r in _read_all(kafka, topic, 300)]
    assert [e["event_time"] for e in events] == want["event_time"].tolist()
    assert all(isinstance(e["event_time"], int) for e in events)
    assert [e["customer_id"] for e in events] == want["customer_id"].tolist()
    assert all("label_time" not in e for e in events)


def test_v3_replay_in_data_time_sends_each_label_at_its_label_time(kafka):
    """make run's labels: with the data's event times, each label carries the data's label time."""
    from worker.offline import synthetic

    topic, labels_topic = kafka.topic(partitions=1), kafka.topic(partitions=1)
    assert replay_main(["--synthetic", "300", "--generator", "v3", "--event-time", "data", "--topic", topic,
                        "--bootstrap-servers", kafka.bootstrap, "--quiet", "--id-prefix", "d",
                        "--labels-topic", labels_topic, "--label-delay-seconds", "5"]) == 0  # fmt: skip
    want = synthetic.generate_behavioural(300, 0)
    events = [json.loads(r.value) for r in _read_all(kafka, topic, 300)]
    labels = [json.loads(r.value) for r in _read_all(kafka, labels_topic, 300)]
    assert all("label_time" not in e for e in events)
    row = {e["transaction_id"]: i for i, e in enumerate(events)}
    assert len(labels) == 300
    assert [lab["label_time"] for lab in labels] == sorted(want["label_time"].tolist())
    assert all(lab["label_time"] == want["label_time"][row[lab["transaction_id"]]] for lab in labels)
