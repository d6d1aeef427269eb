"""Acceptance 2: malformed records interleaved with valid ones each land once in the DLQ with the
right reason and source headers, every valid record is scored, and the invalid counter matches."""

from __future__ import annotations

import json
from collections import Counter

from tests.support.bundles import ULB_FEATURES
from tests.support.workers import WorkerProcess, headers, produce, read_topic, wait_committed

VALID = 300


def _bad_records(ulb) -> list[tuple[str, bytes | None, bytes | None]]:
    good = json.loads(ulb.event(0))

    def variant(**change) -> bytes:
        doc = {k: v for k, v in good.items() if k not in change or change[k] is not ...}
        doc.update({k: v for k, v in change.items() if v is not ...})
        return json.dumps(doc).encode()

    body = ulb.event(1).decode()
    return [
        ("invalid_json", b"acct", b"{this is not json"),
        ("invalid_utf8", b"acct", b'{"transaction_id": "\xff\xfe\xfa"}'),
        ("not_an_object", b"acct", b"[1, 2, 3]"),
        ("missing_field", b"acct", variant(transaction_id=...)),
        ("missing_field", b"acct", variant(V7=...)),
        ("not_a_number", b"acct", variant(Amount="12.50")),
        ("not_a_number", b"acct", variant(V3=True)),
        ("non_finite", b"acct", body.replace('"V2": ', '"V2": NaN, "x": ', 1).encode()),
        ("non_finite", b"acct", body.replace('"V4": ', '"V4": Infinity, "y": ', 1).encode()),
        ("non_finite", b"acct", body.replace('"Amount": ', '"Amount": 1e999, "z": ', 1).encode()),
        ("bad_transaction_id", b"acct", variant(transaction_id="")),
        ("bad_transaction_id", b"acct", variant(transaction_id=12345)),
        ("bad_event_time", b"acct", variant(event_time="yesterday")),
        ("empty_value", b"acct", b""),
        ("empty_value", b"acct", None),
        ("too_large", b"acct", variant(padding="x" * 100_000)),
        ("duplicate_field", b"acct", body.replace('"V1": ', '"V1": 0.5, "V1": ', 1).encode()),
        ("duplicate_field", None, body.replace('{"transaction_id"', '{"Time": 1, "transaction_id"', 1).encode()),
    ]


def test_malformed_records_go_to_the_dlq_once_each_and_valid_ones_are_scored(kafka, ulb, models_dir, topics, workers):
    bad = _bad_records(ulb)
    assert len({reason for reason, _, _ in bad}) >= 11 and len(bad) >= 12
    records, expected_ids = [], []
    for i in range(VALID):
        records.append((b"acct", ulb.event(i, prefix="ok")))
        expected_ids.append(f"ok-{i}")
        if i % 16 == 0 and i // 16 < len(bad):
            _, key, value = bad[i // 16]
            records.append((key, value))
    topic = kafka.topic(partitions=1, prefix="transactions")
    topics = dict(topics, input_topic=topic)
    produce(kafka.producer(max_request_size=2_000_000), topic, records)
    group = kafka.group()
    worker = WorkerProcess(kafka.bootstrap, models_dir, group=group, **topics).start()
    workers.append(worker)
    worker.wait_ready()
    wait_committed(kafka, group, topic, workers=[worker])

    dlq = read_topic(kafka, topics["dlq_topic"])
    assert len(dlq) == len(bad)
    by_offset = {int(headers(r)["source_offset"]): r for r in dlq}
    assert len(by_offset) == len(bad), "each bad record once"
    positions = [n for n, (key, value) in enumerate(records) if (key, value) in {(k, v) for _, k, v in bad}]
    for (reason, key, value), offset in zip(bad, positions, strict=True):
        r = by_offset[offset]
        h = headers(r)
        assert h["error"] == reason, (h, value[:80] if value else value)
        assert h["error_detail"]
        assert h["source_topic"] == topic and h["source_partition"] == "0"
        assert r.key == key and r.value == value, "the original bytes, unchanged"

    scores = [json.loads(r.value)["transaction_id"] for r in read_topic(kafka, topics["scores_topic"])]
    assert sorted(scores) == sorted(expected_ids)
    want = Counter(reason for reason, _, _ in bad)
    for reason, n in want.items():
        assert worker.metric("fraud_events_invalid_total", {"reason": reason}) == n, reason
    assert worker.metric("fraud_events_scored_total") == VALID
    assert worker.stop() == 0
    assert set(ULB_FEATURES) <= set(json.loads(ulb.event(0)))
