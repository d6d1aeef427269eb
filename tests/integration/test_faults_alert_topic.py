"""Fault 4: the alert topic refuses writes for a while.

The refusal is real and comes from the broker: the alert topic's ``max.message.bytes`` is set
below the size of one alert, so every produce to it fails with MessageSizeTooLarge while the
scores and DLQ topics still accept theirs. The worker must not commit any offset whose alerts
failed: the group's committed offsets stay put while ``fraud_broker_errors_total{stage="produce"}``
grows. Once the limit is lifted the held batch goes through, and reconciliation finds nothing
lost, wrong or missing.
"""

from __future__ import annotations

import time

import numpy as np

from tests.support.faults import BROKER_MAX_MESSAGE_BYTES, limit_message_bytes, reconcile_run
from tests.support.workers import WorkerProcess, committed, end_offsets, produce, wait_committed


def test_refused_alerts_hold_the_commit_until_the_topic_accepts_them(kafka, ulb, models_dir, topics, workers):
    group = kafka.group()
    worker = WorkerProcess(kafka.bootstrap, models_dir, group=group, **topics,
                           extra=["--max-batch-size", "100", "--retry-backoff-max-seconds", "1"]).start()  # fmt: skip
    workers.append(worker)
    producer = kafka.producer(linger_ms=20)
    produce(producer, topics["input_topic"], [(None, ulb.event(i)) for i in range(2000)])
    wait_committed(kafka, group, topics["input_topic"], workers=[worker])

    limit_message_bytes(kafka, topics["alert_topic"], 64)
    frauds = np.flatnonzero(ulb.labels == 1).tolist()
    second = [(None, ulb.event(i, prefix="f")) for i in frauds] + [
        (None, ulb.event(i, prefix="b")) for i in range(2000, 4000)
    ]
    produce(producer, topics["input_topic"], second)
    held_from = time.monotonic()
    errors = worker.wait_metric("fraud_broker_errors_total", 3, labels={"stage": "produce"}, timeout=60)
    held = committed(kafka, group, topics["input_topic"])
    time.sleep(3)
    assert committed(kafka, group, topics["input_topic"]) == held, "offsets moved while alerts were refused"
    more = worker.metric("fraud_broker_errors_total", {"stage": "produce"})
    assert more > errors, "the worker stopped retrying"
    ends = {tp.partition: o for tp, o in end_offsets(kafka, topics["input_topic"]).items()}
    assert any(held.get(p, 0) < o for p, o in ends.items()), "everything was committed despite refused alerts"
    assert worker.proc.poll() is None and worker.get("/healthz")[0] == 200
    refused_for = time.monotonic() - held_from

    limit_message_bytes(kafka, topics["alert_topic"], BROKER_MAX_MESSAGE_BYTES)
    wait_committed(kafka, group, topics["input_topic"], workers=[worker])
    assert worker.stop() == 0
    report = reconcile_run(kafka.bootstrap, group, topics)
    assert report.records == 2000 + len(second)
    assert report.lost == 0 and report.wrong_alerts == 0 and report.missing_alerts == 0, report.as_dict()
    assert report.alerts > 0
    log = worker.output()
    assert "not acknowledged" in log and "MessageSizeTooLarge" in log
    print(f"alerts refused for {refused_for:.0f}s: {more:.0f} failed produce attempts, committed held at {held} "
          f"(end {ends}); after: lost {report.lost}, wrong {report.wrong_alerts + report.missing_alerts}, "
          f"duplicates {report.duplicates}, alerts {report.alerts}")  # fmt: skip
