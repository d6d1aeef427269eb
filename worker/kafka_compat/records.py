"""Kafka record batches -> ``ConsumerRecord``s, at about a third of kafka-python's per-record cost.

kafka-python reads each record of a fetch through several Python objects: a ``DefaultRecord``
built by seven ``decode_varint`` calls, CRC and deserializer calls that do nothing for record
format v2, then the ``ConsumerRecord``. That was most of the worker's polling cost
(benchmarks/README.md, "Throughput: what bounds it, in detail"). ``BatchRecords`` reads the
common kind of batch (format v2, uncompressed, not part of a transaction) in one loop per batch
and yields the same ``ConsumerRecord``s, with the same positions, counters and errors.
kafka-python's own code still reads everything else: compressed, transactional, control and older
batches, and every fetch of a consumer with deserializers. A ``read_committed`` consumer (the
exactly-once mode) is read here too when the fetch lists no aborted transaction for the partition:
kafka-python's read_committed steps then change nothing for a plain batch (it skips only batches
of aborted transactions, which are transactional, and control batches); a fetch that lists one is
left to kafka-python whole.

``install_reader(consumer)`` puts it in a consumer's fetcher. It relies on kafka-python
internals: ``KafkaConsumer._fetcher``, ``Fetcher.PartitionRecords`` (the class the fetcher builds
per fetched partition, its ``_unpack_records`` and, for read_committed, its ``aborted_transactions``
and ``aborted_producer_ids``) and ``DefaultRecordBatch._buffer``.
``check_reader()`` reads one batch with both readers at start (worker/kafka_compat/__init__.py);
tests/unit/worker/kafka_compat/test_records.py checks them record for record over generated
fetches, and tests/integration/test_kafka_compat.py that a real consumer reads through it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord, Fetcher, IsolationLevel
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatch
from kafka.structs import TopicPartition

from worker.kafka_compat.counters import TAKEN

HEADER_SIZE = DefaultRecordBatch.HEADER_STRUCT.size  # 61 bytes before the first record


def install_reader(consumer: KafkaConsumer) -> None:
    """Make ``consumer`` read plain record batches with ``BatchRecords``."""
    fetcher = consumer._fetcher
    if not isinstance(fetcher, Fetcher):
        raise TypeError(f"unexpected kafka-python fetcher {type(fetcher).__name__}")
    fetcher.PartitionRecords = BatchRecords


def check_reader() -> None:
    """Raise unless kafka-python's reader and ``BatchRecords`` read a sample batch alike."""
    from kafka.record.default_records import DefaultRecordBatchBuilder
    from kafka.record.memory_records import MemoryRecords

    if not isinstance(getattr(Fetcher, "PartitionRecords", None), type):
        raise TypeError("kafka-python's Fetcher.PartitionRecords is gone")
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False, producer_id=-1, producer_epoch=-1,
        base_sequence=-1, batch_size=1 << 20,
    )  # fmt: skip
    for i, (key, headers) in enumerate([(None, []), (b"k" * 200, [("h", b"v"), ("n", None)]), (b"k", [])]):
        builder.append(i, timestamp=1_700_000_000_000 + i, key=key, value=b'{"a":1}' * (i * 40 + 1), headers=headers)
    data = bytes(builder.build())
    tp = TopicPartition("probe", 0)

    def read(cls: Any, isolation_level: int) -> tuple:
        part = cls(1, tp, MemoryRecords(data), check_crcs=True, isolation_level=isolation_level)
        return tuple(part.take(None)), part.next_fetch_offset, part.records_read, part.bytes_read

    before = TAKEN["record_reader"]
    for level in (IsolationLevel.READ_UNCOMMITTED, IsolationLevel.READ_COMMITTED):
        ours, theirs = read(BatchRecords, level), read(Fetcher.PartitionRecords, level)
        if ours != theirs:
            raise ValueError("kafka-python's reader and BatchRecords disagree on a sample batch")
    taken, TAKEN["record_reader"] = TAKEN["record_reader"] - before, before  # the probe is not a use
    if taken != 2:
        raise ValueError("BatchRecords did not read the sample batch itself (kafka-python's reading changed)")


def _varint(b: bytes, p: int) -> tuple[int, int]:
    """A zigzag varint at ``b[p]`` -> (value, next position)."""
    v = b[p]
    p += 1
    if v & 0x80:
        v &= 0x7F
        shift = 7
        while True:
            x = b[p]
            p += 1
            v |= (x & 0x7F) << shift
            if not x & 0x80:
                break
            shift += 7
    return (v >> 1) ^ -(v & 1), p


class _Rest:
    """``MemoryRecords.next_batch()`` over one batch already read and the rest of ``records``."""

    def __init__(self, first: Any, records: Any) -> None:
        self._first = first
        self._records = records

    def next_batch(self) -> Any:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return self._records.next_batch()


def _plain(batch: Any) -> bool:
    return (
        isinstance(batch, DefaultRecordBatch)
        and batch.compression_type == DefaultRecordBatch.CODEC_NONE
        and not batch.is_transactional
        and not batch.is_control_batch
    )


class BatchRecords(Fetcher.PartitionRecords):  # type: ignore[misc]
    """kafka-python's per-fetch record iterator, with a fast path for plain v2 batches."""

    def _nothing_aborted(self) -> bool:
        """read_committed: the fetch lists no aborted transaction for this partition (none pending either)."""
        return self.isolation_level == IsolationLevel.READ_COMMITTED and not (
            self.aborted_transactions or self.aborted_producer_ids
        )

    def _unpack_records(
        self, tp: TopicPartition, records: Any, key_deserializer: Any, value_deserializer: Any
    ) -> Iterator[ConsumerRecord]:
        if (
            key_deserializer is not None
            or value_deserializer is not None
            or (self.isolation_level != IsolationLevel.READ_UNCOMMITTED and not self._nothing_aborted())
        ):
            yield from super()._unpack_records(tp, records, key_deserializer, value_deserializer)
            return
        topic, partition = tp.topic, tp.partition
        new = tuple.__new__
        last = None
        batch = records.next_batch()
        while batch is not None:
            if not _plain(batch):
                # kafka-python reads this batch and the rest of the fetch, and drains.
                yield from super()._unpack_records(tp, _Rest(batch, records), key_deserializer, value_deserializer)
                return
            if self.check_crcs and not batch.validate_crc():
                raise CorruptRecordError(
                    f"Record batch for partition {self.topic_partition} at offset {batch.base_offset} failed crc check"
                )
            TAKEN["record_reader"] += 1
            self.leader_epoch = epoch = batch.leader_epoch
            base = batch.base_offset
            ts_type = batch.timestamp_type
            append_time = batch.max_timestamp if ts_type == DefaultRecordBatch.LOG_APPEND_TIME else None
            first_ts = batch.first_timestamp
            b = bytes(batch._buffer)
            p = HEADER_SIZE
            try:
                # The varints are read inline when they take one byte (two for the lengths), as
                # nearly all do: a call per field would cost a third of the loop.
                for _ in range(batch.records_count):
                    v = b[p]
                    if v < 0x80:
                        length = (v >> 1) ^ -(v & 1)
                        p += 1
                    elif b[p + 1] < 0x80:
                        v = (v & 0x7F) | (b[p + 1] << 7)
                        length = (v >> 1) ^ -(v & 1)
                        p += 2
                    else:
                        length, p = _varint(b, p)
                    start = p
                    v = b[p + 1]  # after the attributes byte, unused in format v2
                    if v < 0x80:
                        ts_delta = (v >> 1) ^ -(v & 1)
                        p += 2
                    else:
                        ts_delta, p = _varint(b, p + 1)
                    v = b[p]
                    if v < 0x80:
                        offset_delta = (v >> 1) ^ -(v & 1)
                        p += 1
                    else:
                        offset_delta, p = _varint(b, p)
                    v = b[p]
                    if v < 0x80:
                        n = (v >> 1) ^ -(v & 1)
                        p += 1
                    else:
                        n, p = _varint(b, p)
                    if n >= 0:
                        key = b[p : p + n]
                        p += n
                    else:
                        key = None
                    v = b[p]
                    if v < 0x80:
                        n = (v >> 1) ^ -(v & 1)
                        p += 1
                    elif b[p + 1] < 0x80:
                        v = (v & 0x7F) | (b[p + 1] << 7)
                        n = (v >> 1) ^ -(v & 1)
                        p += 2
                    else:
                        n, p = _varint(b, p)
                    if n >= 0:
                        value = b[p : p + n]
                        p += n
                    else:
                        value = None
                    if b[p] == 0:  # no headers
                        headers: list[tuple[str, bytes | None]] = []
                        header_size = -1
                        p += 1
                    else:
                        headers, header_size, p = _headers(b, p)
                    if p - start != length or p > len(b):
                        raise CorruptRecordError(
                            f"Invalid record size: expected to read {length} bytes in record payload,"
                            f" but instead read {p - start}"
                        )
                    offset = base + offset_delta
                    self.records_read += 1
                    self.bytes_read += length
                    self.next_fetch_offset = offset + 1
                    yield new(ConsumerRecord, (
                        topic, partition, epoch, offset,
                        first_ts + ts_delta if append_time is None else append_time,
                        ts_type, key, value, headers, None,
                        len(key) if key is not None else -1,
                        len(value) if value is not None else -1,
                        header_size,
                    ))  # fmt: skip
            except IndexError as err:
                raise CorruptRecordError(f"Found invalid record structure: {err!r}") from None
            if p != len(b):
                raise CorruptRecordError(f"{len(b) - p} unconsumed bytes after all records consumed")
            last = batch
            batch = records.next_batch()
        if last is not None:
            # As kafka-python: the next fetch starts after the batch's last offset, even if
            # compaction removed the records at the end of it.
            self.next_fetch_offset = last.next_offset
        self.drain()


def _headers(b: bytes, p: int) -> tuple[list[tuple[str, bytes | None]], int, int]:
    """A record's headers at ``b[p]`` -> (headers, their serialized size or -1, next position)."""
    count, p = _varint(b, p)
    if count == 0:
        return [], -1, p
    if count < 0:
        raise CorruptRecordError(f"Found invalid number of record headers {count}")
    headers: list[tuple[str, bytes | None]] = []
    size = 0
    for _ in range(count):
        n, p = _varint(b, p)
        if n < 0:
            raise CorruptRecordError(f"Invalid negative header key size {n}")
        try:
            key = b[p : p + n].decode("utf-8")
        except UnicodeDecodeError as err:
            raise CorruptRecordError(f"Found invalid record structure: {err!r}") from None
        p += n
        size += len(key.encode("utf-8"))
        n, p = _varint(b, p)
        value = b[p : p + n] if n >= 0 else None
        if n > 0:
            p += n
            size += n
        headers.append((key, value))
    return headers, size, p
