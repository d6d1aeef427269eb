"""Compressed batches inflate to a cap; the records of one over it (or unreadable) come out unread, one per offset."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct

import pytest
from kafka.consumer.fetcher import Fetcher
from kafka.protocol.consumer import IsolationLevel
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.memory_records import MemoryRecords
from kafka.record.util import calc_crc32c

from tests.unit.worker.kafka_compat.test_records import TP, batch
from worker.core.decode import Unread
from worker.kafka_compat.inflate import capped, check_cap, gunzip
from worker.kafka_compat.records import BatchRecords
from worker.pipeline.decoder_process import DecoderProcess, InlineDecoder, _Submitted

GZIP = DefaultRecordBatch.CODEC_GZIP


@pytest.mark.parametrize("size", [0, 1, 1000, 1001, 3_000_000])
def test_gunzip_inflates_as_gzip_does_up_to_the_cap_and_no_further(size):
    data = os.urandom(size // 2) + bytes(size - size // 2)
    z = gzip.compress(data)
    assert gunzip(z, 10_000_000) == data
    assert gunzip(z, 1000) == (data if size <= 1000 else None)
    assert gunzip(gzip.compress(b"ab") + gzip.compress(b"cd") + bytes(4), 100) == b"abcd"  # members, padding


def test_a_zip_bomb_takes_no_more_than_the_cap():
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as f:
        for _ in range(200):
            f.write(bytes(1_000_000))
    bomb = buf.getvalue()  # 200 MB of zeros in about 200 KB
    assert len(bomb) < 300_000
    assert gunzip(bomb, 16 << 20) is None


def fetch() -> bytes:
    """A plain batch, a gzip batch under any cap here, a gzip batch of 5 MB of zeros, a plain batch."""
    ts = 1_700_000_000_000
    small = [(i, ts + i, b"k%d" % i, b'{"n":%d}' % i, []) for i in range(3)]
    bomb = [(0, ts, b"b0", b"{}", []), (1, ts, b"b1", bytes(5_000_000), [("h", b"v")]), (2, ts, None, b"{}", [])]
    return (batch(small, 0) + batch(small, 3, compression=GZIP) + batch(bomb, 6, compression=GZIP)
            + batch(small, 9))  # fmt: skip


def take(cls, data: bytes, level=IsolationLevel.READ_UNCOMMITTED, fetch_offset=0) -> tuple[list, int]:
    part = cls(fetch_offset, TP, MemoryRecords(data), check_crcs=True, isolation_level=level)
    return part.take(None), part.next_fetch_offset


@pytest.mark.parametrize("base", [Fetcher.PartitionRecords, BatchRecords])
@pytest.mark.parametrize("level", [IsolationLevel.READ_UNCOMMITTED, IsolationLevel.READ_COMMITTED])
def test_a_batch_over_the_cap_comes_out_unread_offset_by_offset_and_the_rest_as_kafka_python_reads_it(base, level):
    data = fetch()
    theirs, their_next = take(Fetcher.PartitionRecords, data, level)
    ours, our_next = take(capped(base, 1_000_000), data, level)
    assert our_next == their_next == 12
    assert [r.offset for r in ours] == list(range(12))
    assert ours[:6] == theirs[:6] and ours[9:] == theirs[9:]
    for r in ours[6:9]:
        assert type(r.value) is Unread and r.value.reason == "batch_too_large"
        assert "gzip batch of 3 records inflates past 1000000 bytes" == r.value.detail
        assert r.key is None and r.headers == [] and r.timestamp == 1_700_000_000_000
        assert len(r.value) == 61
    assert struct.unpack_from(">q", ours[6].value)[0] == 6  # the header: its base offset first
    # A fetch from the middle of the batch starts at that offset, as kafka-python's would.
    ours, _ = take(capped(base, 1_000_000), data, level, fetch_offset=7)
    assert [r.offset for r in ours] == list(range(7, 12))
    # Under a cap above its size, the batch reads as kafka-python reads it.
    assert take(capped(base, 6_000_000), data, level) == (theirs, their_next)


def test_a_batch_whose_codec_is_missing_comes_out_unread(monkeypatch):
    data = bytearray(batch([(0, 1, None, b"{}", []), (1, 1, None, b"{}", [])], 4, compression=GZIP))
    attrs = struct.unpack_from(">h", data, DefaultRecordBatch.ATTRIBUTES_OFFSET)[0]
    struct.pack_into(">h", data, DefaultRecordBatch.ATTRIBUTES_OFFSET, attrs & ~0x07 | DefaultRecordBatch.CODEC_ZSTD)
    struct.pack_into(">I", data, DefaultRecordBatch.CRC_OFFSET, calc_crc32c(memoryview(data)[21:]))
    monkeypatch.setattr("kafka.codec.zstd", None)
    ours, next_offset = take(capped(BatchRecords, 1 << 20), bytes(data))
    assert next_offset == 6 and [r.value.reason for r in ours] == ["batch_unreadable"] * 2
    assert ours[0].value.detail.startswith("zstd: ")


def test_the_start_up_check_passes_on_this_kafka_python():
    check_cap(Fetcher.PartitionRecords)
    check_cap(BatchRecords)


def test_the_decoder_sets_unread_and_oversized_values_aside_without_copying_them():
    names = ("f0",)
    ok = json.dumps({"transaction_id": "t", "f0": 1}).encode()
    values = [ok, b"{" * 5_000_000, Unread(bytes(61), "batch_too_large", "gzip batch ..."), None, ok]
    entry = _Submitted(values, names, 65536)
    assert sum(len(v) for v in entry.sent if v is not None) < 100  # the child is sent none of the 5 MB
    for decoder in (InlineDecoder(), DecoderProcess()):
        decoder.submit(values, names, 65536)
        got = decoder.result()
        decoder.close()
        assert got.index == [0, 4]
        assert [(i, e.reason) for i, e in got.errors] == [(1, "too_large"), (2, "batch_too_large"), (3, "empty_value")]
        assert got.errors[0][1].detail == "value is 5000000 bytes, limit 65536"
