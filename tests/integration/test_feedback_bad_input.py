"""fraud-feedback against bad input on a real broker: labels dated out of range, damaged stores, and
the export rebuilt from the topics alone.

The score records are written straight to a co-partitioned scores topic (the worker's format,
with features), so each test takes seconds: 240 transactions, 216 of them labelled, plus a label
at 2^63 ms and one dated next year that must both be skipped and counted.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec
import pytest

from tests.conftest import KafkaClients, unique
from tests.support.broker import REPO
from tests.support.feedback import FeedbackProcess, wait_totals
from tests.support.workers import produce
from worker.feedback.records import encode_label

PARTITIONS = 3
N = 240
FAST = ("--refresh-seconds", "0.5")
YEAR_MS = 365 * 86_400_000


@dataclass
class Traffic:
    scores_topic: str
    labels_topic: str
    expected: dict[str, int]  # outcome counts of the labelled transactions (the bad labels change nothing)


@pytest.fixture(scope="module")
def traffic(kafka_bootstrap) -> Iterator[Traffic]:
    kafka = KafkaClients(kafka_bootstrap)
    scores_topic = kafka.topic(partitions=PARTITIONS, prefix="scores")
    labels_topic = kafka.topic(partitions=PARTITIONS, prefix="labels")
    now = int(time.time() * 1000)
    expected = dict.fromkeys(("tp", "fp", "fn", "tn"), 0)
    scores, labels = [], []
    for i in range(N):
        txn, score = f"tx-{i}", ((i * 37) % 100) / 100
        features = {"f0": float(i), "f1": score * 3, "f2": -float(i % 7)}
        scores.append((txn.encode(), msgspec.json.encode({
            "transaction_id": txn, "score": score, "threshold": 0.5, "model_version": "v1",
            "event_time": now - 3_600_000 + i, "features": features,
        })))  # fmt: skip
        if i % 10 == 9:
            continue  # unlabelled: pending, not exported
        fraud = i % 3 == 0
        labels.append((txn.encode(), encode_label(txn, fraud, now, "test")))
        flagged = score >= 0.5
        expected[("tp" if fraud else "fp") if flagged else ("fn" if fraud else "tn")] += 1
    # Two labels that would flip tx-0 and tx-1 if taken: one past what SQLite holds, one dated next year.
    bad = [
        (
            b"tx-0",
            msgspec.json.encode({"transaction_id": "tx-0", "is_fraud": False, "label_time": 2**63, "source": "test"}),
        ),  # fmt: skip
        (b"tx-1", encode_label("tx-1", True, now + YEAR_MS, "test")),
    ]
    half = len(labels) // 2
    producer = kafka.producer(linger_ms=5)
    produce(producer, scores_topic, scores)
    produce(producer, labels_topic, labels[:half] + bad + labels[half:])
    try:
        yield Traffic(scores_topic, labels_topic, expected)
    finally:
        kafka.close()


def _run(bootstrap: str, traffic: Traffic, feedbacks: list, state, group: str) -> FeedbackProcess:
    fb = FeedbackProcess(bootstrap, traffic.scores_topic, traffic.labels_topic, group, state, FAST).start()
    feedbacks.append(fb)
    wait_totals([fb], traffic.expected, timeout=60)
    return fb


def test_labels_dated_out_of_range_are_skipped_and_counted(kafka_bootstrap, traffic, feedbacks, tmp_path):
    fb = _run(kafka_bootstrap, traffic, feedbacks, tmp_path / "state", unique("fb"))
    assert fb.proc.poll() is None, "the service keeps running"
    assert fb.metric("fraud_feedback_invalid_total", {"topic": "labels", "reason": "out_of_range"}) == 1
    assert fb.metric("fraud_feedback_invalid_total", {"topic": "labels", "reason": "future"}) == 1
    assert fb.metric("fraud_feedback_records_total", {"topic": "labels"}) == N - N // 10 + 2
    assert fb.stop() == 0


def test_damaged_stores_are_moved_aside_and_rebuilt_from_the_topics(kafka_bootstrap, traffic, feedbacks, tmp_path):
    state, group = tmp_path / "state", unique("fb")
    assert _run(kafka_bootstrap, traffic, feedbacks, state, group).stop() == 0
    stores = sorted(state.glob("partition-*.sqlite"))
    assert len(stores) == PARTITIONS
    size = stores[0].stat().st_size
    stores[0].write_bytes(os.urandom(size))  # garbage bytes
    stores[1].unlink()
    stores[1].mkdir()  # a directory in its place
    with open(stores[2], "r+b") as fh:  # truncated to its header page
        fh.truncate(4096)
    fb = _run(kafka_bootstrap, traffic, feedbacks, state, group)  # the same totals, from the topics
    deadline = time.monotonic() + 30
    while fb.metric("fraud_feedback_store_rebuilds_total") < PARTITIONS and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fb.metric("fraud_feedback_store_rebuilds_total") == PARTITIONS, fb.output()[-3000:]
    aside = sorted(p.name for p in state.iterdir() if ".corrupt-" in p.name)
    assert [n.split(".corrupt-")[0] for n in aside if not n.endswith(("-wal", "-shm"))] == [s.name for s in stores]
    assert "moved aside" in fb.output()
    assert fb.proc.poll() is None
    wait_totals([fb], traffic.expected, timeout=30)
    assert fb.stop() == 0


def _export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worker.programs.fraud_feedback", "export", *args], cwd=REPO, capture_output=True,
        text=True,
        timeout=120, env={k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")},
    )  # fmt: skip


def test_export_from_the_topics_writes_the_rows_of_the_stores(kafka_bootstrap, traffic, feedbacks, tmp_path):
    state = tmp_path / "state"
    assert _run(kafka_bootstrap, traffic, feedbacks, state, unique("fb")).stop() == 0
    from_stores, from_topics = tmp_path / "stores.csv.gz", tmp_path / "topics.csv.gz"
    a = _export("--state-dir", str(state), "--since", "30d", "--out", str(from_stores))
    assert a.returncode == 0, a.stderr
    b = _export("--from-topics", "--since", "30d", "--out", str(from_topics), "--bootstrap-servers", kafka_bootstrap,
                "--scores-topic", traffic.scores_topic, "--labels-topic", traffic.labels_topic)  # fmt: skip
    assert b.returncode == 0, b.stderr
    labelled = N - N // 10
    assert f"{labelled:,} labelled examples" in b.stdout, b.stdout
    assert "skipped 1 labels:future, 1 labels:out_of_range" in b.stdout, b.stdout
    rows_a = gzip.decompress(from_stores.read_bytes()).decode().splitlines()
    rows_b = gzip.decompress(from_topics.read_bytes()).decode().splitlines()
    assert len(rows_a) == labelled + 1
    assert rows_b == rows_a


def test_a_compressed_label_batch_past_the_inflate_cap_is_counted_and_the_partition_goes_on(
    kafka_bootstrap, feedbacks, tmp_path
):
    """A gzip batch of labels that inflates past 16 MiB is not inflated whole: its three records are
    counted invalid (batch_too_large), and the labels after it are joined."""
    kafka = KafkaClients(kafka_bootstrap)
    try:
        scores_topic, labels_topic = kafka.topic(prefix="scores"), kafka.topic(prefix="labels")
        now = int(time.time() * 1000)
        scores = [(f"tx-{i}".encode(), msgspec.json.encode({
            "transaction_id": f"tx-{i}", "score": s, "threshold": 0.5, "model_version": "v1", "event_time": now - 1000,
        })) for i, s in enumerate((0.9, 0.2, 0.1))]  # fmt: skip
        plain = kafka.producer(linger_ms=0)
        produce(plain, scores_topic, scores)
        produce(plain, labels_topic, [(b"tx-0", encode_label("tx-0", True, now, "test"))])
        gz = kafka.producer(compression_type="gzip", max_request_size=32 << 20, batch_size=32 << 20, linger_ms=500)
        bomb = msgspec.json.encode({"transaction_id": "tx-1", "is_fraud": True, "label_time": now,
                                    "source": "a" * (20 << 20)})  # fmt: skip
        futures = [gz.send(labels_topic, key=b"tx-1", value=encode_label("tx-1", True, now, "test")),
                   gz.send(labels_topic, key=b"tx-1", value=bomb),
                   gz.send(labels_topic, key=b"tx-2", value=encode_label("tx-2", True, now, "test"))]  # fmt: skip
        gz.flush(timeout=30)
        assert {f.get(timeout=1).offset for f in futures} == {1, 2, 3}, "one compressed batch"
        produce(plain, labels_topic, [(b"tx-2", encode_label("tx-2", False, now, "test"))])

        fb = FeedbackProcess(kafka_bootstrap, scores_topic, labels_topic, unique("fb"), tmp_path / "state", FAST)
        feedbacks.append(fb.start())
        wait_totals([fb], {"tp": 1, "fp": 0, "fn": 0, "tn": 1}, timeout=60)  # tx-0 and the later tx-2 label
        deadline = time.monotonic() + 30
        while fb.metric("fraud_feedback_records_total", {"topic": "labels"}) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert fb.metric("fraud_feedback_invalid_total", {"topic": "labels", "reason": "batch_too_large"}) == 3
        assert fb.metric("fraud_feedback_records_total", {"topic": "labels"}) == 5
        assert fb.proc.poll() is None
        assert fb.stop() == 0
    finally:
        kafka.close()
