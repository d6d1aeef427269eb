"""Compressed record batches inflated to a cap; the records of one that passes it are dead-lettered unread.

kafka-python inflates a compressed batch whole (``DefaultRecordBatch._maybe_uncompress``, with
``kafka.codec.gzip_decode``): a few kilobytes of gzip can hold a gigabyte of zeros, and the worker
holds 256 MiB. ``CappedBatch`` inflates gzip in steps and stops one byte past the cap. A batch it
cannot read is not an error that would stop the partition (a poll that fails, then the same fetch
again for ever): its records are handed on unread, one per offset of the batch, each with no key,
no headers and an ``Unread`` value (worker/core/decode.py) holding the batch's 61-byte header, so the
worker dead-letters each (``batch_too_large``: it inflates past the cap; ``batch_unreadable``: its
codec's library is not installed, or its compressed data is corrupt) and ``reconcile`` accounts
for every offset. Gzip is bounded as it inflates; snappy, lz4 and zstd (whose libraries the worker
does not install) go through kafka-python's own decoder and are refused after it, if over the cap.

``install_cap(consumer, cap)`` wraps the fetcher's ``PartitionRecords`` class (kafka-python's own,
or ``BatchRecords`` of records.py) so each fetch's batches are read through ``CappedBatches``. It
relies on kafka-python internals: ``KafkaConsumer._fetcher``, ``Fetcher.PartitionRecords`` and its
``_unpack_records``; ``DefaultRecordBatch``'s ``_buffer``, ``_pos``, ``_decompressed``,
``_maybe_uncompress``, ``_assert_has_codec`` and ``__next__``; ``DefaultRecord``'s constructor.
``check_cap()`` reads a sample gzip batch through it at start (worker/kafka_compat/__init__.py).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

from kafka import KafkaConsumer
from kafka.consumer.fetcher import Fetcher
from kafka.errors import UnsupportedCodecError
from kafka.record.default_records import DefaultRecord, DefaultRecordBatch

from worker.core.decode import Unread
from worker.kafka_compat.counters import TAKEN

HEADER_SIZE = DefaultRecordBatch.HEADER_STRUCT.size  # 61
DEFAULT_CAP = 16 * 1024 * 1024
_STEP = 1 << 20  # compressed bytes fed to zlib at a time


def gunzip(data: Any, cap: int) -> bytearray | None:
    """``data`` (one or more gzip members) inflated, or None past ``cap`` bytes; raises zlib.error if corrupt."""
    out = bytearray()
    view = memoryview(data)
    while len(view):
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = bytes(view)
        while not d.eof:
            chunk = d.decompress(pending, cap + 1 - len(out))
            out += chunk
            if len(out) > cap:
                return None
            pending = d.unconsumed_tail
            if not pending and not chunk and not d.eof:
                raise zlib.error("gzip data ends before its member does")
        view = memoryview(d.unused_data)
        if not any(view):  # trailing zero padding (gzip.GzipFile ignores it too)
            break
    return out


_Batch: Any = DefaultRecordBatch  # kafka-python's slots are not typed


class CappedBatch(_Batch):
    """A compressed ``DefaultRecordBatch`` that inflates to at most ``cap`` bytes, or yields its records unread."""

    _buffer: bytearray
    _pos: int
    _decompressed: bool

    def __init__(self, buffer: Any, cap: int) -> None:
        super().__init__(buffer)
        self._cap = cap
        self._unread: Unread | None = None
        self._next_offset = 0

    def _maybe_uncompress(self) -> None:
        if self._decompressed:
            return
        TAKEN["inflate_cap"] += 1
        codec = self.compression_type
        header = bytes(memoryview(self._buffer)[:HEADER_SIZE])
        inflated: bytearray | None
        try:
            if codec == self.CODEC_GZIP:
                inflated = gunzip(memoryview(self._buffer)[self._pos :], self._cap)
            else:
                self._assert_has_codec(codec)  # UnsupportedCodecError without the codec's library
                super()._maybe_uncompress()  # kafka-python's own decoder, unbounded
                inflated = self._buffer if len(self._buffer) <= self._cap else None
        except UnsupportedCodecError as exc:
            self._unread = Unread(header, "batch_unreadable", f"{_codec_name(codec)}: {exc}")
        except Exception as exc:  # noqa: BLE001 - corrupt compressed data: the records cannot be read
            self._unread = Unread(header, "batch_unreadable", f"{_codec_name(codec)} data is corrupt: {exc}"[:200])
        else:
            if inflated is None:
                self._unread = Unread(
                    header, "batch_too_large",
                    f"{_codec_name(codec)} batch of {self.records_count} records inflates past {self._cap} bytes",
                )  # fmt: skip
            else:
                self._buffer, self._pos = inflated, 0
        if self._unread is not None:
            self._buffer, self._pos, self._next_offset = bytearray(), 0, self.base_offset
        self._decompressed = True

    def __next__(self) -> Any:
        if self._unread is None:
            return super().__next__()
        if self._next_offset > self.last_offset:
            raise StopIteration
        offset, self._next_offset = self._next_offset, self._next_offset + 1
        append_time = self.timestamp_type == self.LOG_APPEND_TIME
        timestamp = self.max_timestamp if append_time else self.first_timestamp
        return DefaultRecord(0, offset, timestamp, self.timestamp_type, None, self._unread, [])

    next = __next__


def _codec_name(codec: int) -> str:
    return {1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}.get(codec, f"codec {codec}")


class CappedBatches:
    """``MemoryRecords`` whose compressed format-v2 batches come out as ``CappedBatch``es."""

    def __init__(self, records: Any, cap: int) -> None:
        self._records = records
        self._cap = cap

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        if type(batch) is DefaultRecordBatch and batch.compression_type != DefaultRecordBatch.CODEC_NONE:
            return CappedBatch(batch._buffer, self._cap)
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._records, name)


_CAPPED: dict[tuple[Any, int], Any] = {}


def capped(base: Any, cap: int) -> Any:
    """``base`` (a ``Fetcher.PartitionRecords``) reading compressed batches to at most ``cap`` bytes."""
    if (base, cap) not in _CAPPED:

        def _unpack_records(self: Any, tp: Any, records: Any, key_deserializer: Any, value_deserializer: Any
                            ) -> Iterator[Any]:  # fmt: skip
            return base._unpack_records(self, tp, CappedBatches(records, cap), key_deserializer, value_deserializer)

        _CAPPED[base, cap] = type(f"Capped{base.__name__}", (base,), {"_unpack_records": _unpack_records})
    return _CAPPED[base, cap]


def install_cap(consumer: KafkaConsumer, cap: int) -> None:
    """Make ``consumer`` inflate compressed batches to at most ``cap`` bytes (checked first)."""
    fetcher = consumer._fetcher
    if not isinstance(fetcher, Fetcher):
        raise TypeError(f"unexpected kafka-python fetcher {type(fetcher).__name__}")
    check_cap(fetcher.PartitionRecords)
    fetcher.PartitionRecords = capped(fetcher.PartitionRecords, cap)


def check_cap(base: Any = Fetcher.PartitionRecords) -> None:
    """Raise unless ``base`` reads a sample gzip batch through the cap as kafka-python does, and
    hands its records on unread when the cap is below its inflated size."""
    from kafka.consumer.fetcher import IsolationLevel
    from kafka.record.default_records import DefaultRecordBatchBuilder
    from kafka.record.memory_records import MemoryRecords
    from kafka.structs import TopicPartition

    for name in ("_buffer", "_pos", "_decompressed"):
        if name not in DefaultRecordBatch.__slots__:
            raise TypeError(f"kafka-python's DefaultRecordBatch.{name} is gone")
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=DefaultRecordBatch.CODEC_GZIP, is_transactional=False, producer_id=-1,
        producer_epoch=-1, base_sequence=-1, batch_size=1 << 20,
    )  # fmt: skip
    for i in range(3):
        builder.append(i, timestamp=1_700_000_000_000 + i, key=b"k%d" % i, value=b'{"a":1}' * 100, headers=[])
    data = bytes(builder.build())
    tp = TopicPartition("probe", 0)

    def read(cls: Any) -> tuple:
        part = cls(0, tp, MemoryRecords(data), check_crcs=True, isolation_level=IsolationLevel.READ_UNCOMMITTED)
        return tuple(part.take(None)), part.next_fetch_offset

    before = TAKEN["inflate_cap"]
    if read(capped(base, DEFAULT_CAP)) != read(Fetcher.PartitionRecords):
        raise ValueError("kafka-python's reader and the capped reader disagree on a sample gzip batch")
    unread, next_offset = read(capped(base, 1000))
    TAKEN["inflate_cap"] = before  # the probe is not a use
    if (
        next_offset != 3
        or [r.offset for r in unread] != [0, 1, 2]
        or any(type(r.value) is not Unread or r.value.reason != "batch_too_large" or r.key is not None for r in unread)
    ):
        raise ValueError("the capped reader did not hand on a sample batch over its cap unread, offset by offset")
