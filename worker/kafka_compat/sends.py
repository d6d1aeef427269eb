"""Send a batch's output records at once: the producer's per-record work done once per batch.

``KafkaProducer.send`` does a batch's worth of work for every record: it checks the headers,
asks the partitioner (which sorts the topic's partitions each time), logs at debug level, takes
the partition's lock and counts an append in progress. With a score record per event (a scores
or shadow topic) that is most of what the worker spends on an event.

``send_all`` (the fast path) takes the topic's partitions once per batch, picks each keyed
record's partition as kafka-python's ``DefaultPartitioner`` does (murmur2 of the key), and appends
the records of each partition under its lock held once, with ``ProducerBatch.try_append`` (the
call kafka-python's own append makes). Each record still gets its own future, so a batch kafka-python
splits or retries completes each record as it would. Where a partition has no open batch with room,
kafka-python's ``RecordAccumulator.append`` makes one. A record without a key or without a value,
for a topic whose partitions are not known yet, near the request size limit, or with another
partitioner configured goes through ``send`` itself, in its place in the order.

It uses kafka-python internals: ``KafkaProducer._accumulator``, ``_metadata``, ``_sender``,
``_transaction_manager`` and ``_closed``;
``RecordAccumulator._tp_lock``, ``_batches``, ``_appends_in_progress``, ``_closed`` and ``append``;
``ProducerBatch.try_append``; ``kafka.partitioner.default.murmur2``. ``check_classes`` looks for
the classes' parts at start and ``check_sends`` for each producer's; ``send_all_plain`` is
kafka-python's own way.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from typing import Any

import kafka.errors as Errors
from kafka import KafkaProducer
from kafka.partitioner.default import DefaultPartitioner, murmur2
from kafka.producer.producer_batch import ProducerBatch
from kafka.producer.record_accumulator import RecordAccumulator
from kafka.structs import TopicPartition

from worker.kafka_compat.counters import TAKEN

Record = tuple[str, "bytes | None", bytes, "list[tuple[str, bytes]] | None"]  # topic, key, value, headers
# Below this many bytes of key, value and headers a record certainly fits a request: the size
# kafka-python estimates adds at most a few dozen bytes of framing to them.
_FRAMING = 1024


def check_classes() -> None:
    """Raise unless the kafka-python classes ``send_all`` relies on have what it calls (at start)."""
    for owner, name in ((RecordAccumulator, "_tp_lock"), (RecordAccumulator, "append"),
                        (ProducerBatch, "try_append"), (KafkaProducer, "send")):  # fmt: skip
        if not callable(getattr(owner, name, None)):
            raise TypeError(f"kafka-python's {owner.__name__}.{name} is gone")
    wanted = ["timestamp_ms", "key", "value", "headers", "now"]
    got = list(inspect.signature(ProducerBatch.try_append).parameters)[1:]
    if got != wanted:
        raise TypeError(f"ProducerBatch.try_append takes {got}, not {wanted}")
    wanted = ["tp", "timestamp_ms", "key", "value", "headers", "now", "abort_on_new_batch"]
    got = list(inspect.signature(RecordAccumulator.append).parameters)[1:]
    if got != wanted:
        raise TypeError(f"RecordAccumulator.append takes {got}, not {wanted}")
    if murmur2(b"21") & 0xFFFFFFFF != -973932308 & 0xFFFFFFFF:  # the Java client's Utils.murmur2("21")
        raise TypeError("kafka.partitioner.default.murmur2 no longer hashes as the Java client does")


def check_sends(producer: KafkaProducer) -> None:
    """Raise unless ``producer`` has every internal ``send_all`` uses (each new producer)."""
    acc = getattr(producer, "_accumulator", None)
    if not isinstance(acc, RecordAccumulator):
        raise TypeError(f"KafkaProducer._accumulator is {type(acc).__name__}, not a RecordAccumulator")
    progress = getattr(acc, "_appends_in_progress", None)
    for owner, name in ((getattr(producer, "_sender", None), "wakeup"),
                        (getattr(producer, "_metadata", None), "partitions_for_topic"),
                        (progress, "increment"), (progress, "decrement")):  # fmt: skip
        if not callable(getattr(owner, name, None)):
            raise TypeError(f"kafka-python's {type(owner).__name__}.{name} is gone")
    for owner, name in ((acc, "_batches"), (acc, "_closed"), (producer, "_closed"),
                        (producer, "_transaction_manager"), (producer, "config")):  # fmt: skip
        if not hasattr(owner, name):
            raise TypeError(f"kafka-python's {type(owner).__name__}.{name} is gone")
    if not {"max_request_size", "partitioner"} <= set(producer.config):
        raise TypeError("KafkaProducer.config lacks max_request_size or partitioner")


def send_all_plain(producer: KafkaProducer, records: Sequence[Record]) -> list[Any]:
    """kafka-python's own way: ``send`` for each record, in order."""
    return [producer.send(topic, key=key, value=value, headers=headers) for topic, key, value, headers in records]


def send_all(producer: KafkaProducer, records: Sequence[Record]) -> list[Any]:
    """The records' futures, in order; each partition receives its records in their order."""
    if producer._closed:
        raise Errors.IllegalStateError("KafkaProducer already closed!")
    TAKEN["batch_send"] += 1
    limit = producer.config["max_request_size"] - _FRAMING
    default_partitioner = type(producer.config["partitioner"]) is DefaultPartitioner
    partitions: dict[str, list[int] | None] = {}
    futures: list[Any] = [None] * len(records)
    groups: dict[TopicPartition, list[int]] = {}  # records waiting to be appended, by partition
    for i, (topic, key, value, headers) in enumerate(records):
        if topic not in partitions:
            known = producer._metadata.partitions_for_topic(topic)
            partitions[topic] = sorted(known) if known and default_partitioner else None
        parts = partitions[topic]
        if (parts is None or type(key) is not bytes or type(value) is not bytes  # no key, a tombstone, ...
                or len(key) + len(value) + (_header_bytes(headers) if headers else 0) > limit):  # fmt: skip
            _append_groups(producer, records, groups, futures)  # what came before it goes first
            groups.clear()
            futures[i] = producer.send(topic, key=key, value=value, headers=headers)
            continue
        tp = TopicPartition(topic, parts[(murmur2(key) & 0x7FFFFFFF) % len(parts)])
        group = groups.get(tp)
        if group is None:
            groups[tp] = [i]
        else:
            group.append(i)
    _append_groups(producer, records, groups, futures)
    return futures


def send_to_plain(
    producer: KafkaProducer, topic: str, partition: int, records: Sequence[tuple[bytes, bytes]]
) -> list[Any]:
    """kafka-python's own way: ``send`` for each (key, value), to ``partition``, in order."""
    return [producer.send(topic, key=key, value=value, partition=partition) for key, value in records]


def send_to(
    producer: KafkaProducer, topic: str, partition: int, records: Sequence[tuple[bytes, bytes]]
) -> list[Any]:
    """``records`` (key, value) to ``partition`` of ``topic`` in order (the feature changelog's writes: a flush's
    entity states, one partition at a time); their futures. ``send_all``'s appends, without the partitioner."""
    if producer._closed:
        raise Errors.IllegalStateError("KafkaProducer already closed!")
    if partition not in (producer._metadata.partitions_for_topic(topic) or ()):
        return send_to_plain(producer, topic, partition, records)  # send() waits for the topic's metadata
    TAKEN["batch_send"] += 1
    limit = producer.config["max_request_size"] - _FRAMING
    tp = TopicPartition(topic, partition)
    full: list[Record] = [(topic, key, value, None) for key, value in records]
    futures: list[Any] = [None] * len(full)
    rows: list[int] = []
    for i, (_, key, value, _) in enumerate(full):
        if type(key) is not bytes or type(value) is not bytes or len(key) + len(value) > limit:
            _append_groups(producer, full, {tp: rows} if rows else {}, futures)  # what came before it goes first
            rows = []
            futures[i] = producer.send(topic, key=key, value=value, partition=partition)
            continue
        rows.append(i)
    _append_groups(producer, full, {tp: rows} if rows else {}, futures)
    return futures


def _header_bytes(headers: list[tuple[str, bytes]]) -> int:
    return sum(len(k) * 4 + len(v) for k, v in headers)  # at most 4 bytes of UTF-8 per character


def _append_groups(producer: KafkaProducer, records: Sequence[Record], groups: dict[TopicPartition, list[int]],
                   futures: list[Any]) -> None:  # fmt: skip
    acc, tm = producer._accumulator, producer._transaction_manager
    transactional = tm is not None and tm.is_transactional()
    for tp, rows in groups.items():
        if transactional:
            tm.maybe_add_partition_to_transaction(tp)
        _append(acc, tp, rows, records, futures)
    if groups:
        producer._sender.wakeup()


def _append(acc: RecordAccumulator, tp: TopicPartition, rows: list[int], records: Sequence[Record],
            futures: list[Any]) -> None:  # fmt: skip
    """Append ``rows`` to ``tp``'s open batch under its lock; where it is full, kafka-python makes the next."""
    pos, n = 0, len(rows)
    lock = acc._tp_lock(tp)
    while pos < n:
        acc._appends_in_progress.increment()
        try:
            with lock:
                if acc._closed:
                    raise Errors.IllegalStateError("RecordAccumulator is closed")
                dq = acc._batches[tp]
                if dq:
                    last, now = dq[-1], time.monotonic()
                    while pos < n:
                        _, key, value, headers = records[rows[pos]]
                        future = last.try_append(None, key, value, headers or [], now=now)
                        if future is None:
                            break
                        futures[rows[pos]] = future
                        pos += 1
        finally:
            acc._appends_in_progress.decrement()
        if pos < n:  # no batch, or the last is full: kafka-python's append opens the next
            _, key, value, headers = records[rows[pos]]
            futures[rows[pos]] = acc.append(tp, None, key, value, headers or [])[0]
            pos += 1
