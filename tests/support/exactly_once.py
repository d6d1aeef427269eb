"""Exactly-once checks: read topics as a downstream ``read_committed`` consumer sees them, and count."""

from __future__ import annotations

import time
from collections import Counter

from kafka import KafkaConsumer, TopicPartition

from tests.support.faults import reconcile_run
from tests.support.workers import headers


def read_committed(bootstrap: str, topic: str, timeout: float = 60.0) -> list:
    """Every committed record of ``topic`` up to its last stable offset (no open transaction before it)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False, group_id=None
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)  # read_committed: the last stable offsets
        records: list = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < o for tp, o in ends.items()):
            assert time.monotonic() < deadline, f"{topic}: not read up to {ends} within {timeout:.0f}s"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def stable(bootstrap: str, topic: str, timeout: float = 60.0) -> None:
    """Wait until no transaction is open on ``topic``: the last stable offsets reach the high watermarks."""
    committed_view = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    everything = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(everything.partitions_for_topic(topic) or ())]
        deadline = time.monotonic() + timeout
        while True:
            lso, high = committed_view.end_offsets(tps), everything.end_offsets(tps)
            if lso == high:
                return
            assert time.monotonic() < deadline, f"{topic}: a transaction is still open ({lso} < {high})"
            time.sleep(0.2)
    finally:
        committed_view.close()
        everything.close()


def _sources(bootstrap: str, topic: str) -> Counter:
    """How often each input record (partition, offset) appears on ``topic``, read_committed."""
    counts: Counter = Counter()
    for r in read_committed(bootstrap, topic):
        h = headers(r)
        counts[(int(h["source_partition"]), int(h["source_offset"]))] += 1
    return counts


def _keys(bootstrap: str, topic: str) -> Counter:
    return Counter(r.key.decode() for r in read_committed(bootstrap, topic))


def check_exactly_once(kafka, group: str, topics: dict, n: int, malformed: int) -> dict:
    """Every record scored once, every alert once, every malformed record dead-lettered once."""
    for t in ("alert_topic", "scores_topic", "dlq_topic"):
        stable(kafka.bootstrap, topics[t])
    report = reconcile_run(kafka.bootstrap, group, topics)
    assert report.records == n and report.dead_lettered == malformed, report.as_dict()
    assert report.lost == 0 and report.duplicates == 0, report.as_dict()
    assert report.wrong_alerts == 0 and report.missing_alerts == 0, report.as_dict()
    scores = _sources(kafka.bootstrap, topics["scores_topic"])
    dlq = _sources(kafka.bootstrap, topics["dlq_topic"])
    alerts = _keys(kafka.bootstrap, topics["alert_topic"])
    assert len(scores) + len(dlq) == n
    assert set(scores.values()) <= {1} and set(dlq.values()) <= {1}, "an input record is in the outputs twice"
    assert len(dlq) == malformed
    assert alerts and set(alerts.values()) == {1}, [k for k, c in alerts.items() if c > 1][:5]
    return {"alerts": len(alerts), "scored": len(scores), "dead_lettered": len(dlq)}
