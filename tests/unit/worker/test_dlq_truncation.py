"""A DLQ record too large for a Kafka request is sent with its value (and, if need be, its key) cut."""

from __future__ import annotations

from kafka.consumer.fetcher import ConsumerRecord
from kafka.record.default_records import DefaultRecordBatchBuilder

from worker.core.decode import DecodedRows
from worker.core.errors import DecodeError
from worker.core.outputs import DLQ_MAX_BYTES, build_outputs, dlq_limit, truncated_count
from worker.edges.config import WorkerConfig


def record(offset: int, value: bytes | None, key: bytes | None = None) -> ConsumerRecord:
    return ConsumerRecord("transactions", 0, 0, offset, 1_700_000_000_000, 0, key, value, [], None, -1, -1, -1)


def dead_letters(config: WorkerConfig, records: list[ConsumerRecord]) -> list:
    errors = [(i, DecodeError("too_large", f"value is {len(r.value or b'')} bytes")) for i, r in enumerate(records)]
    decoded = DecodedRows(b"", 1, [], [], [], errors).to_batch()
    settings = config.output_settings
    out = build_outputs(settings, None, records, decoded, None, None, 0)  # type: ignore[arg-type]
    return out.records, truncated_count(settings, records, decoded)


def test_a_record_over_the_bound_is_cut_below_the_producer_and_broker_limits() -> None:
    c = WorkerConfig()
    small, big = record(0, b"x" * 1000, b"k"), record(1, b"{" * 1_100_000, b"key")
    (s, b), truncated = dead_letters(c, [small, big])
    assert truncated == 1
    assert s[2] == small.value and "truncated" not in dict(s[3])
    topic, key, value, headers = b
    h = dict(headers)
    assert (topic, key, h["truncated"], h["original_size"]) == ("transactions-dlq", b"key", b"true", b"1100000")
    assert h["error"] == b"too_large" and h["source_offset"] == b"1" and "original_key_size" not in h
    assert value == big.value[: len(value)]
    size = len(key) + len(value) + sum(len(k) + len(v) for k, v in headers)
    assert size == DLQ_MAX_BYTES == dlq_limit(c.output_settings)
    # What the producer counts (batch framing included) stays below its 1 MiB max_request_size and
    # the broker's default max.message.bytes (1 MiB + 12).
    assert DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers) < 1_048_576


def test_a_huge_key_is_cut_too_and_the_limit_follows_max_request_size() -> None:
    c = WorkerConfig(kafka_options=(("max_request_size", 200_000),))
    assert dlq_limit(c.output_settings) == 200_000 - 16_384
    (r,), truncated = dead_letters(c, [record(0, b"v" * 10, b"k" * 300_000)])
    _, key, value, headers = r
    h = dict(headers)
    assert truncated == 1 and h["original_key_size"] == b"300000" and h["original_size"] == b"10"
    assert value == b"" and len(key) + sum(len(k) + len(v) for k, v in headers) == dlq_limit(c.output_settings)


def test_a_null_value_stays_null() -> None:
    (r,), truncated = dead_letters(WorkerConfig(), [record(0, None, b"k" * 1_200_000)])
    assert r[2] is None and truncated == 1 and dict(r[3])["original_size"] == b"0"
