"""Records too large to dead-letter whole, and a compressed batch that inflates past the cap, never stall
their partition: on a topic taking 8 MB records, a 1.1 MB record, a gzip-compressed 5 MB one and a gzip
batch of 20 MB among valid events. The events after them are scored, the DLQ holds the first two truncated
(with their original size) and one record per offset of the batch (``batch_too_large``), and ``reconcile``
finds nothing lost; under both guarantees. (With ``FRAUD_FAST_PATHS`` leaving ``inflate_cap`` off,
kafka-python inflates the batch whole: its 20 MB record is dead-lettered truncated, the other two scored.)
"""

from __future__ import annotations

import json
import os

import pytest

from tests.integration.test_reconcile import _args, _reconcile
from tests.support.workers import WorkerProcess, headers, read_topic, wait_committed
from worker.kafka_compat import parse_fast_paths

PAD_1MB = 1_100_000
PAD_5MB = 5_000_000
PAD_BOMB = 20_000_000  # over the default max_inflated_batch_bytes (16 MiB) once inflated


def _padded(transaction_id: str, n: int) -> bytes:
    return b'{"transaction_id": "' + transaction_id.encode() + b'", "pad": "' + b"0" * n + b'"}'


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_oversized_records_are_dead_lettered_truncated_and_the_partition_goes_on(
    kafka, ulb, models_dir, topics, workers, capsys, guarantee
):
    topic = kafka.topic(partitions=1, prefix="transactions", **{"max.message.bytes": str(8 << 20)})
    topics = dict(topics, input_topic=topic)
    plain = kafka.producer(max_request_size=8 << 20, linger_ms=0)
    gz = kafka.producer(compression_type="gzip", max_request_size=32 << 20, batch_size=32 << 20,
                        linger_ms=500)  # fmt: skip

    def valid(first: int, last: int, producer=plain) -> None:
        for i in range(first, last):
            producer.send(topic, key=b"acct", value=ulb.event(i, prefix="ok"))
        producer.flush(timeout=30)

    valid(0, 50)
    plain.send(topic, key=b"big", value=_padded("big", PAD_1MB)).get(timeout=30)  # offset 50
    valid(50, 100)
    gz.send(topic, key=b"zip", value=_padded("zip", PAD_5MB)).get(timeout=30)  # offset 101
    valid(100, 150)
    # One gzip batch of three records (offsets 152..154), 20 MB once inflated.
    futures = [gz.send(topic, value=ulb.event(0, prefix="bomb-a")),
               gz.send(topic, key=b"bomb", value=_padded("bomb", PAD_BOMB)),
               gz.send(topic, value=ulb.event(1, prefix="bomb-b"))]  # fmt: skip
    gz.flush(timeout=30)
    assert {f.get(timeout=1).offset for f in futures} == {152, 153, 154}
    valid(150, 200)

    group = kafka.group()
    worker = WorkerProcess(kafka.bootstrap, models_dir, group=group, **topics,
                           extra=["--processing-guarantee", guarantee]).start()  # fmt: skip
    workers.append(worker)
    wait_committed(kafka, group, topic, timeout=45, workers=[worker])

    capped = "inflate_cap" in parse_fast_paths(os.environ.get("FRAUD_FAST_PATHS", "all"))
    dlq = {int(headers(r)["source_offset"]): r for r in read_topic(kafka, topics["dlq_topic"])}
    assert sorted(dlq) == ([50, 101, 152, 153, 154] if capped else [50, 101, 153])
    truncated = [(50, b"big", PAD_1MB), (101, b"zip", PAD_5MB)] + ([] if capped else [(153, b"bomb", PAD_BOMB)])
    for offset, key, size in truncated:
        r, h = dlq[offset], headers(dlq[offset])
        original = _padded(key.decode(), size)
        assert h["error"] == "too_large" and h["truncated"] == "true" and h["original_size"] == str(len(original))
        assert r.key == key and original.startswith(r.value) and 900_000 < len(r.value) < 1_000_000
    for offset in (152, 153, 154) if capped else ():
        r, h = dlq[offset], headers(dlq[offset])
        assert h["error"] == "batch_too_large" and "inflates past 16777216 bytes" in h["error_detail"]
        assert r.key is None and len(r.value) == 61 and "truncated" not in h

    scored = [json.loads(r.value)["transaction_id"] for r in read_topic(kafka, topics["scores_topic"])]
    assert sorted(scored) == sorted([f"ok-{i}" for i in range(200)] + ([] if capped else ["bomb-a-0", "bomb-b-1"]))
    assert worker.metric("fraud_dlq_truncated_total") == len(truncated)
    assert worker.metric("fraud_events_invalid_total", {"reason": "batch_too_large"}) == (3 if capped else 0)

    rc, report = _reconcile(capsys, *_args(kafka, topics, group))
    assert rc == 0, report
    assert report["lost"] == 0 and report["records"] == 205 and report["dead_lettered"] == len(dlq)
