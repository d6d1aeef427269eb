"""The poll() hand-off shortcuts against a real broker: taken while records stream in, and nothing lost."""

from __future__ import annotations

import threading
import time

from worker.kafka_compat.handoffs import install_handoff_shortcuts

N = 3_000


def _counted(calls: dict, name: str, fn):
    def wrapper(*args, **kwargs):
        calls[name] += 1
        return fn(*args, **kwargs)

    return wrapper


def test_a_consumer_with_the_shortcuts_reads_a_live_stream_in_order_and_skips_most_hand_offs(kafka):
    topic = kafka.topic(partitions=3)
    consumer = kafka.consumer(topic, group_id=kafka.group(), enable_auto_commit=False, fetch_max_wait_ms=20)
    coordinator, fetcher = consumer._coordinator, consumer._fetcher
    # kafka-python's own methods, counted: what the shortcuts leave to them.
    calls = {"coordinator": 0, "fetch": 0, "fetch_calls": 0}
    coordinator.ensure_coordinator_ready = _counted(calls, "coordinator", coordinator.ensure_coordinator_ready)
    fetcher.send_fetches = _counted(calls, "fetch", fetcher.send_fetches)
    install_handoff_shortcuts(consumer)
    # Every call, the shortcut's included.
    fetcher.send_fetches = _counted(calls, "fetch_calls", fetcher.send_fetches)
    while not consumer.assignment():
        consumer.poll(timeout_ms=200)

    def produce() -> None:
        producer = kafka.producer()
        for i in range(N):
            producer.send(topic, key=str(i % 7).encode(), value=str(i).encode())
            if i % 50 == 0:
                producer.flush()
                time.sleep(0.005)
        producer.flush(timeout=30)

    producer = threading.Thread(target=produce)
    producer.start()
    calls.update(coordinator=0, fetch=0, fetch_calls=0)
    polls, seen = 0, []
    deadline = time.monotonic() + 60
    while len(seen) < N and time.monotonic() < deadline:
        # As the worker polls: waiting for records, and at once again while a batch is decoded,
        # when the fetch sent by the poll before is usually still in flight.
        for timeout in (100, 0):
            polls += 1
            for records in consumer.poll(timeout_ms=timeout).values():
                seen += [(r.partition, r.offset, int(r.value)) for r in records]
    producer.join()
    consumer.close()

    assert sorted(v for _, _, v in seen) == list(range(N)), "a record was lost or delivered twice"
    by_partition: dict[int, list[int]] = {}
    for partition, offset, _ in seen:
        by_partition.setdefault(partition, []).append(offset)
    assert all(offsets == sorted(offsets) for offsets in by_partition.values())
    # The coordinator stays connected throughout: kafka-python's check is never needed.
    assert calls["coordinator"] == 0, calls
    # With a fetch in flight, sending none is answered without a hand-off.
    assert calls["fetch"] < calls["fetch_calls"] - polls // 4, (calls, polls)
