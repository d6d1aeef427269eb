"""The test broker is a real Apache Kafka: topics, groups, commits and rebalances behave as Kafka's."""

from __future__ import annotations

import time

from kafka import TopicPartition

N = 300


def _produce(kafka, topic: str, n: int = N) -> None:
    producer = kafka.producer()
    for i in range(n):
        producer.send(topic, key=str(i % 17).encode(), value=f"event-{i}".encode())
    producer.flush(timeout=30)


def _drain(consumer, want: int, timeout: float = 30.0) -> list:
    records: list = []
    deadline = time.monotonic() + timeout
    while len(records) < want and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


def test_topic_with_three_partitions_round_trips_every_record(kafka):
    topic = kafka.topic(partitions=3)
    assert kafka.consumer().partitions_for_topic(topic) == {0, 1, 2}
    _produce(kafka, topic)
    consumer = kafka.consumer(topic, group_id=kafka.group())
    values = sorted(r.value.decode() for r in _drain(consumer, N))
    assert values == sorted(f"event-{i}" for i in range(N))
    # Keys decide partitions: every record of one key landed on one partition.
    by_key: dict[bytes, set[int]] = {}
    consumer.seek_to_beginning()
    for r in _drain(consumer, N):
        by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(parts) == 1 for parts in by_key.values())


def test_restarted_consumer_resumes_exactly_at_committed_offsets(kafka):
    topic = kafka.topic(partitions=3)
    group = kafka.group()
    _produce(kafka, topic)

    first = kafka.consumer(topic, group_id=group, enable_auto_commit=False, max_poll_records=40)
    seen: list[tuple[int, int]] = []
    while len(seen) < N // 2:
        for batch in first.poll(timeout_ms=1000).values():
            seen.extend((r.partition, r.offset) for r in batch)
    first.commit()  # commits the position: everything returned so far
    committed = {tp.partition: first.committed(tp) for tp in first.assignment()}
    first.close()

    second = kafka.consumer(topic, group_id=group, enable_auto_commit=False)
    rest = [(r.partition, r.offset) for r in _drain(second, N - len(seen))]
    for partition, offset in rest:
        assert offset >= (committed.get(partition) or 0)
    assert len(set(seen) & set(rest)) == 0, "a committed record was delivered again"
    assert len(set(seen) | set(rest)) == N, "a record was lost across the restart"


def test_two_consumers_in_one_group_split_the_partitions(kafka):
    topic = kafka.topic(partitions=3)
    group = kafka.group()
    a = kafka.consumer(topic, group_id=group)
    b = kafka.consumer(topic, group_id=group)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        a.poll(timeout_ms=200)
        b.poll(timeout_ms=200)
        got_a, got_b = a.assignment(), b.assignment()
        if got_a and got_b and len(got_a) + len(got_b) == 3:
            break
    assert got_a and got_b, "both members should own partitions"
    assert got_a.isdisjoint(got_b)
    assert got_a | got_b == {TopicPartition(topic, p) for p in range(3)}
