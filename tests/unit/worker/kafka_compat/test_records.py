"""The worker's record reader gives what kafka-python's own reader gives, record for record."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import IsolationLevel
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.record.util import calc_crc32c
from kafka.structs import TopicPartition

from worker.kafka_compat.counters import TAKEN
from worker.kafka_compat.records import BatchRecords, install_reader

TP = TopicPartition("transactions", 3)
H = DefaultRecordBatch


def batch(
    records: list[tuple[int, int, bytes | None, bytes | None, list]],
    base_offset: int = 0,
    epoch: int = 0,
    compression: int = 0,
    transactional: bool = False,
    append_time: int | None = None,
    compacted_tail: int = 0,
) -> bytes:
    """One v2 record batch, as a broker would store it. Records are (offset delta, timestamp, key, value, headers).

    ``compacted_tail`` records after the last one were removed by compaction: the batch's last offset is beyond it.
    """
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=compression, is_transactional=transactional,
        producer_id=7 if transactional else -1, producer_epoch=0 if transactional else -1,
        base_sequence=0 if transactional else -1, batch_size=1 << 30,
    )  # fmt: skip
    for delta, ts, key, value, headers in records:
        builder.append(delta, timestamp=ts, key=key, value=value, headers=headers)
    buf = bytearray(builder.build())
    struct.pack_into(">q", buf, 0, base_offset)
    struct.pack_into(">i", buf, 12, epoch)  # the broker sets the leader epoch
    struct.pack_into(">i", buf, 23, records[-1][0] + compacted_tail)
    if append_time is not None:  # and, on a LogAppendTime topic, the timestamp type and time
        attrs = struct.unpack_from(">h", buf, H.ATTRIBUTES_OFFSET)[0] | H.TIMESTAMP_TYPE_MASK
        struct.pack_into(">h", buf, H.ATTRIBUTES_OFFSET, attrs)
        struct.pack_into(">q", buf, 35, append_time)
    struct.pack_into(">I", buf, H.CRC_OFFSET, calc_crc32c(memoryview(buf)[H.ATTRIBUTES_OFFSET :]))
    return bytes(buf)


def read(cls, data: bytes, fetch_offset: int = 0, take: int | None = None, **kw) -> dict:
    """Everything a fetcher sees of ``cls`` reading ``data``: records per take, positions, counters, drains."""
    drains: list[int] = []
    part = cls(fetch_offset, TP, MemoryRecords(data), check_crcs=True, on_drain=lambda p: drains.append(1), **kw)
    takes, positions = [], []
    while part:
        got = part.take(take)
        takes.append(got)
        positions.append(part.next_fetch_offset)
        if not got and part:
            break
    return {"takes": takes, "positions": positions, "read": (part.records_read, part.bytes_read),
            "epoch": part.leader_epoch, "drains": len(drains)}  # fmt: skip


def same(data: bytes, **kw) -> dict:
    ours, theirs = read(BatchRecords, data, **kw), read(Fetcher.PartitionRecords, data, **kw)
    assert ours == theirs
    return ours


def records_of(result: dict) -> list:
    return [r for got in result["takes"] for r in got]


ULB_LIKE = b'{"transaction_id":"tx-000000001","Time":0.0,"V1":-1.3598071336738,"Amount":149.62}' * 9

record = st.tuples(
    st.integers(0, 2_000_000_000_000),
    st.one_of(st.none(), st.binary(max_size=40)),
    st.one_of(st.none(), st.binary(max_size=300), st.just(ULB_LIKE)),
    st.lists(st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=20))), max_size=3),
)


@st.composite
def fetches(draw) -> tuple[bytes, int, int | None]:
    """Some batches in a row, offsets with gaps (compaction), a fetch offset inside them and a take size."""
    data, base = b"", draw(st.integers(0, 2**40))
    first = base
    for _ in range(draw(st.integers(1, 4))):
        recs, delta = [], 0
        for ts, key, value, headers in draw(st.lists(record, min_size=1, max_size=20)):
            recs.append((delta, ts, key, value, headers))
            delta += draw(st.sampled_from([1, 1, 1, 2, 200]))
        append_time = draw(st.one_of(st.none(), st.integers(0, 2**41)))
        tail = draw(st.sampled_from([0, 0, 2]))
        data += batch(recs, base, draw(st.integers(0, 5)), append_time=append_time, compacted_tail=tail)
        base += recs[-1][0] + tail + 1 + draw(st.sampled_from([0, 0, 3]))
    fetch_offset = draw(st.integers(first, base))
    return data, fetch_offset, draw(st.sampled_from([None, 1, 7, 500]))


@settings(max_examples=300, deadline=None)
@given(fetches())
def test_plain_batches_read_as_kafka_python_reads_them(fetch):
    data, fetch_offset, take = fetch
    same(data, fetch_offset=fetch_offset, take=take)


def test_a_worker_sized_fetch_reads_every_record_with_its_offset_and_value():
    values = [ULB_LIKE + b"%d" % i for i in range(1200)]
    data = b"".join(
        batch([(j, 1_764_000_000_000 + j, b"acct-%d" % j, v, []) for j, v in enumerate(values[s : s + 400])], s)
        for s in range(0, 1200, 400)
    )
    result = same(data, take=500)
    assert [len(t) for t in result["takes"]] == [500, 500, 200]
    got = records_of(result)
    assert [r.offset for r in got] == list(range(1200))
    assert [r.value for r in got] == values
    assert got[401].key == b"acct-1" and got[401].timestamp == 1_764_000_000_001
    assert result["drains"] == 1


def test_lengths_of_one_two_three_and_more_varint_bytes():
    sizes = [0, 63, 64, 8191, 8192, 70_000, 1_100_000]
    recs = [(j, 1_764_000_000_000 + (-1) ** j * j * 10**9, b"k" * n, b"v" * n, []) for j, n in enumerate(sizes)]
    got = records_of(same(batch(recs)))
    assert [len(r.value) for r in got] == sizes


def test_the_next_fetch_starts_after_a_compacted_tail():
    result = same(batch([(0, 1, None, b"a", []), (1, 2, None, b"b", [])], base_offset=10, compacted_tail=5))
    assert [r.offset for r in records_of(result)] == [10, 11]
    assert result["positions"][-1] == 17


def test_log_append_time_is_the_batchs_time():
    got = records_of(same(batch([(0, 5, None, b"a", []), (1, 9, None, b"b", [])], append_time=123_456)))
    assert [(r.timestamp, r.timestamp_type) for r in got] == [(123_456, 1), (123_456, 1)]


def test_headers_and_null_keys_and_values():
    got = records_of(same(batch([(0, 1, None, None, [("trace", b"x"), ("empty", None)]), (1, 2, b"", b"", [])])))
    assert got[0].headers == [("trace", b"x"), ("empty", None)]
    assert (got[0].key, got[0].value, got[1].key, got[1].value) == (None, None, b"", b"")


@pytest.mark.parametrize("compression", [DefaultRecordBatch.CODEC_GZIP, DefaultRecordBatch.CODEC_NONE])
def test_compressed_and_transactional_batches_are_left_to_kafka_python(compression):
    recs = [(j, 10 + j, None, ULB_LIKE, []) for j in range(30)]
    data = batch(recs, 0) + batch(recs, 30, compression=compression, transactional=True) + batch(recs, 60)
    got = records_of(same(data, take=25))
    assert [r.offset for r in got] == list(range(90))


def test_deserializers_are_left_to_kafka_python():
    data = batch([(j, j, None, b"v%d" % j, []) for j in range(5)])

    class Upper:
        def deserialize(self, topic, headers, data):
            return data.upper()

    before = TAKEN["record_reader"]
    assert [r.value for r in records_of(same(data, value_deserializer=Upper()))] == [b"V%d" % j for j in range(5)]
    assert TAKEN["record_reader"] == before


@settings(max_examples=100, deadline=None)
@given(fetches())
def test_read_committed_fetches_without_aborted_transactions_are_read_here_alike(fetch):
    data, fetch_offset, take = fetch
    before = TAKEN["record_reader"]
    same(data, fetch_offset=fetch_offset, take=take, isolation_level=IsolationLevel.READ_COMMITTED)
    assert TAKEN["record_reader"] > before


def test_a_read_committed_fetch_listing_an_aborted_transaction_is_left_to_kafka_python():
    from collections import namedtuple

    aborted_transaction = namedtuple("AbortedTransaction", "producer_id first_offset")  # a fetch response's entry
    recs = [(j, 10 + j, None, ULB_LIKE, []) for j in range(10)]
    data = batch(recs, 0) + batch(recs, 10, transactional=True) + batch(recs, 20)
    aborted = [aborted_transaction(producer_id=7, first_offset=10)]
    before = TAKEN["record_reader"]
    got = records_of(same(data, isolation_level=IsolationLevel.READ_COMMITTED, aborted_transactions=aborted))
    assert [r.offset for r in got] == list(range(10)) + list(range(20, 30))  # the aborted batch skipped
    assert TAKEN["record_reader"] == before


def test_a_corrupt_batch_fails_its_checksum_as_in_kafka_python():
    data = bytearray(batch([(j, j, None, ULB_LIKE, []) for j in range(3)]))
    data[200] ^= 0xFF
    for cls in (BatchRecords, Fetcher.PartitionRecords):
        with pytest.raises(CorruptRecordError, match="crc"):
            cls(0, TP, MemoryRecords(bytes(data)), check_crcs=True).take(None)


@pytest.mark.parametrize("where", ["record length", "value length"])
def test_a_record_that_does_not_add_up_is_corrupt(where):
    good = batch([(0, 0, None, b"abc", []), (1, 0, None, b"defg", [])])
    data = bytearray(good)
    # The first record: length varint at 61, attributes, timestamp delta, offset delta, key length, value length.
    data[61 if where == "record length" else 66] += 2
    struct.pack_into(">I", data, H.CRC_OFFSET, calc_crc32c(memoryview(data)[H.ATTRIBUTES_OFFSET :]))
    for cls in (BatchRecords, Fetcher.PartitionRecords):
        with pytest.raises(CorruptRecordError):
            cls(0, TP, MemoryRecords(bytes(data)), check_crcs=True).take(None)


def test_install_reader_puts_the_reader_in_the_consumers_fetcher():
    consumer = KafkaConsumer(bootstrap_servers="127.0.0.1:9", api_version=(4, 0))
    try:
        assert consumer._fetcher.PartitionRecords is Fetcher.PartitionRecords
        install_reader(consumer)
        assert consumer._fetcher.PartitionRecords is BatchRecords
    finally:
        consumer.close()
