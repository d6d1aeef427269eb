"""Faults 2 and 3: the broker goes away mid-stream, and the broker is not there yet at start.

Each test runs a broker of its own (``scripts/local-kafka`` with its own state directory and
ports) so that stopping it disturbs no other test; the broker is stopped in teardown.
"""

from __future__ import annotations

import json
import time

from tests.conftest import KafkaClients
from tests.support.faults import fresh_topics, outage_producer, reconcile_run
from tests.support.stream import Stream
from tests.support.workers import WorkerProcess, produce, wait_committed

OUTAGE = 20.0


# The one start-up warning of a worker without trusted_keys is no broker trouble.
UNSIGNED_NOTICE = "model bundles are not signature-checked"


def _trouble_warnings(worker: WorkerProcess) -> list[str]:
    return [line for line in worker.output().splitlines()
            if (" WARNING " in line or " ERROR " in line) and UNSIGNED_NOTICE not in line]  # fmt: skip


def test_broker_stopped_for_20s_mid_stream_worker_recovers_by_itself(own_broker, ulb, models_dir, workers):
    own_broker.start()
    clients = KafkaClients(own_broker.bootstrap)
    try:
        topics = fresh_topics(clients)
        group = clients.group()
        n = 18_000
        worker = WorkerProcess(own_broker.bootstrap, models_dir, group=group, **topics,
                               extra=["--retry-backoff-max-seconds", "2"]).start()  # fmt: skip
        workers.append(worker)
        worker.wait_ready()
        producer = outage_producer(clients)
        stream = Stream(producer, topics["input_topic"], [(f"acct-{i % 17}".encode(), ulb.event(i)) for i in range(n)],
                        rate=600)  # fmt: skip
        stream.start()
        worker.wait_metric("fraud_events_scored_total", 3000)
        before = worker.metric("fraud_events_scored_total")
        t0 = time.monotonic()
        own_broker.stop()
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - t0)))
        assert worker.proc.poll() is None, "the worker died with the broker"
        assert worker.get("/healthz")[0] == 200, "retrying is alive"
        during = worker.metric("fraud_events_scored_total")
        own_broker.start()
        down = time.monotonic() - t0
        stream.finish()
        wait_committed(clients, group, topics["input_topic"], timeout=180, workers=[worker])
        recovered = time.monotonic() - t0
        # The outage is counted, at whichever stage met it first.
        stages = ("poll", "produce", "commit", "lag")
        assert sum(worker.metric("fraud_broker_errors_total", {"stage": s}) for s in stages) > 0
        assert worker.stop() == 0
        report = reconcile_run(own_broker.bootstrap, group, topics)
        assert report.records >= n and report.lost == 0, report.as_dict()
        assert report.wrong_alerts == 0 and report.missing_alerts == 0, report.as_dict()
        warnings = _trouble_warnings(worker)
        print(f"broker down {down:.0f}s (scored {before:,.0f} before, {during:,.0f} at the restart); all "
              f"{n:,} committed {recovered:.0f}s after the stop; lost {report.lost}, duplicates "
              f"{report.duplicates}; {len(warnings)} warning lines")  # fmt: skip
        assert len(warnings) <= 30, "\n".join(warnings)  # per kind and 30 s window, not per attempt
    finally:
        clients.close()


def test_worker_started_before_the_broker_waits_then_works(own_broker, ulb, models_dir, workers):
    names = {
        k: f"{k.split('_')[0]}-{own_broker.port}" for k in ("input_topic", "alert_topic", "dlq_topic", "scores_topic")
    }
    group = f"g-{own_broker.port}"
    worker = WorkerProcess(own_broker.bootstrap, models_dir, group=group, **names,
                           extra=["--retry-backoff-max-seconds", "2"]).start()  # fmt: skip
    workers.append(worker)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the metrics server comes up once the model is loaded
        try:
            worker.get("/healthz")
            break
        except OSError:
            time.sleep(0.2)
    waited = time.monotonic()
    for _ in range(6):
        time.sleep(2.5)
        assert worker.proc.poll() is None, worker.output()[-3000:]
        assert worker.get("/healthz")[0] == 200, "waiting for the broker is alive"
        status, body = worker.get("/readyz")
        assert status == 503, body
    waited = time.monotonic() - waited
    assert worker.metric("fraud_broker_errors_total", {"stage": "connect"}) >= 1
    warnings_while_waiting = _trouble_warnings(worker)
    attempts = worker.metric("fraud_broker_errors_total", {"stage": "connect"})
    print(f"\nready: {json.loads(body)}; {attempts:.0f} connection attempts failed, {len(warnings_while_waiting)} "
          f"warning/error lines in {waited:.0f}s of waiting")  # fmt: skip
    # Logged once per 30 s, not per attempt (kafka-python's own lines are throttled the same way).
    assert len(warnings_while_waiting) <= 6, "\n".join(warnings_while_waiting)

    own_broker.start()
    clients = KafkaClients(own_broker.bootstrap)
    try:
        from kafka.admin import NewTopic

        clients.admin().create_topics([NewTopic(names["input_topic"], 3, 1)] + [
            NewTopic(names[k], 1, 1) for k in ("alert_topic", "dlq_topic", "scores_topic")])  # fmt: skip
        for k in names:
            clients.wait_for_topic(names[k], 3 if k == "input_topic" else 1)
        n = 5000
        produce(clients.producer(linger_ms=20), names["input_topic"], [(None, ulb.event(i)) for i in range(n)])
        wait_committed(clients, group, names["input_topic"], timeout=120, workers=[worker])
        assert worker.get("/readyz")[0] == 200
        assert worker.stop() == 0
        report = reconcile_run(own_broker.bootstrap, group, names)
        assert report.records == n and report.lost == 0 and report.duplicates == 0, report.as_dict()
        assert report.wrong_alerts == 0 and report.missing_alerts == 0
    finally:
        clients.close()
