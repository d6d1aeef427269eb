"""tail-alerts reads a compressed batch no further than the worker's inflate cap: on a real broker, a
gzip batch of alerts that inflates to 64 MB takes a few MB of memory, and the alerts after it print."""

from __future__ import annotations

import json
import tracemalloc

from tests.conftest import KafkaClients
from worker.kafka_compat.inflate import DEFAULT_CAP
from worker.programs.subcommands import tail_alerts as tail


def _alert(txn: str, pad: int = 0) -> bytes:
    alert = {"transaction_id": txn, "score": 0.99, "threshold": 0.9, "model_version": "v1", "reasons": []}
    if pad:
        alert["pad"] = "0" * pad
    return json.dumps(alert).encode()


def test_tail_alerts_reads_a_compressed_bomb_no_further_than_the_cap(kafka: KafkaClients, capsys):
    topic = kafka.topic(partitions=1, prefix="alerts")
    plain = kafka.producer(linger_ms=0)
    plain.send(topic, value=_alert("tx-before")).get(timeout=30)
    gz = kafka.producer(compression_type="gzip", max_request_size=128 << 20, batch_size=128 << 20, linger_ms=500)
    futures = [gz.send(topic, value=_alert("tx-in-a")), gz.send(topic, value=_alert("tx-bomb", 64 << 20)),
               gz.send(topic, value=_alert("tx-in-b"))]  # fmt: skip
    gz.flush(timeout=60)
    assert {f.get(timeout=1).offset for f in futures} == {1, 2, 3}
    plain.send(topic, value=_alert("tx-after")).get(timeout=30)
    del futures

    tracemalloc.start()
    try:
        code = tail.main(["--bootstrap-servers", kafka.bootstrap, "--topic", topic, "--from-beginning",
                          "--max-alerts", "5"])  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert len(lines) == 5, out
    assert "ALERT tx-before" in lines[0] and "ALERT tx-after" in lines[4], out
    # The bomb's batch is unread (the producer may put the alert before it in a batch of its own).
    assert "not read: batch_too_large" in lines[2] and "tx-bomb" not in out, out
    # The capped inflate holds at most the cap (16 MiB) and a copy of it while its buffer grows;
    # kafka-python's own inflates all 64 MB and parses the alert out of them.
    assert peak < 3 * DEFAULT_CAP, f"tail-alerts peaked at {peak >> 20} MiB reading a 64 MB batch"
