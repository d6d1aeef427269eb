"""Read a topic as a downstream ``read_committed`` consumer sees it: records of committed transactions only."""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition


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
