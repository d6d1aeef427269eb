"""Every metric after one scripted batch through the real loop code, read from a fresh registry.

The Kafka clients are small stand-ins handed to the worker through its ``clients`` argument (what
they return is the script); decoding, scoring, the metrics and the health state are the real
ones. The same values are checked end to end, through a real broker and a real Prometheus
server, in tests/integration/test_observability.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import numpy as np
import pytest
from kafka import TopicPartition
from prometheus_client import CollectorRegistry

from tests.support.bundles import make_bundle
from tests.unit.worker.conftest import SPEC
from tests.unit.worker.standins import FakeClients, FakeConsumer, FakeProducer, Record, event
from training.evaluate import histogram
from worker.edges.config import WorkerConfig
from worker.edges.health import HealthState
from worker.edges.metrics import WorkerMetrics
from worker.models.watcher import ModelWatcher
from worker.pipeline.loop import Worker

TOPIC = "transactions"


def connected(worker_config, watcher, metrics, health, consumer, producer) -> Worker:
    worker = Worker(worker_config, watcher, metrics, health, clients=FakeClients(consumer, producer))
    assert worker.connect()
    return worker


@pytest.fixture
def scripted(tmp_path):
    """A worker serving a bundle with a training histogram, fed one batch: 2 partitions, 2 bad records."""
    rng = np.random.default_rng(3)
    models = tmp_path / "models"
    train_scores = rng.beta(0.5, 4.0, 20_000)
    make_bundle(models, "v1", score_histogram=histogram(train_scores, bins=10), **SPEC)
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, drift_window=100)
    watcher = ModelWatcher(str(models), metrics)
    scorer = watcher.load_initial()
    health = HealthState(stall_seconds=30)
    health.model_version, health.model_check = scorer.version, watcher.files_problem
    features = rng.normal(0, 1.5, (8, len(SPEC["feature_names"])))
    now = int(time.time() * 1000)
    bad = [b"{not json", json.dumps({"transaction_id": "x"}).encode()]
    values = [event(i, f) for i, f in enumerate(features)] + bad
    p0, p1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    polled = {
        p0: [Record(TOPIC, 0, 100 + i, now - 50, None, v, []) for i, v in enumerate(values[:6])],
        p1: [Record(TOPIC, 1, 7 + i, now - 50, None, v, []) for i, v in enumerate(values[6:])],
    }
    # After the batch: positions just past it; the broker already holds 4 more records on partition 0.
    consumer = FakeConsumer(ends={p0: 110, p1: 11}, positions={p0: 106, p1: 11})
    worker = connected(WorkerConfig(), watcher, metrics, health, consumer, FakeProducer())
    asyncio.run(worker.listener.on_partitions_assigned({p0, p1}))
    assert worker.process(polled)
    worker.lag.update(consumer)
    expected_scores = scorer.score(features)
    return registry, worker, consumer, expected_scores


def test_every_metric_after_a_scripted_batch(scripted):
    registry, worker, consumer, scores = scripted
    get = registry.get_sample_value
    hits = int((scores >= SPEC["threshold"]).sum())
    assert 0 < hits < 8  # the script exercises both sides of the threshold

    assert get("fraud_events_consumed_total") == 10
    assert get("fraud_events_scored_total") == 8
    assert get("fraud_alerts_total") == hits
    assert get("fraud_events_invalid_total", {"reason": "invalid_json"}) == 1
    assert get("fraud_events_invalid_total", {"reason": "missing_field"}) == 1
    assert get("fraud_events_invalid_total", {"reason": "too_large"}) == 0  # every reason's series starts at 0
    assert get("fraud_score_count") == 8 and get("fraud_score_sum") == pytest.approx(float(scores.sum()), rel=1e-5)
    assert get("fraud_score_bucket", {"le": "0.7"}) == 8 - hits + int((scores == 0.7).sum())
    assert get("fraud_batch_size_count") == 1 and get("fraud_batch_size_sum") == 10
    assert get("fraud_scoring_seconds_count") == 1
    assert get("fraud_event_latency_seconds_count") == hits
    assert get("fraud_event_latency_seconds_sum") >= 0.05 * hits  # events were 50 ms old

    assert get("fraud_consumer_lag", {"partition": "0"}) == 4
    assert get("fraud_consumer_lag", {"partition": "1"}) == 0
    assert get("fraud_commits_total", {"result": "ok"}) == 1 and get("fraud_commits_total", {"result": "failed"}) == 0
    assert consumer.commits[0][TopicPartition(TOPIC, 0)].offset == 106
    assert consumer.commits[0][TopicPartition(TOPIC, 1)].offset == 11
    assert time.time() - get("fraud_last_commit_timestamp_seconds") < 60
    assert get("fraud_rebalances_total") == 1 and get("fraud_partitions_assigned") == 2
    assert get("fraud_broker_errors_total", {"stage": "produce"}) == 0

    manifest = worker.models.scorer.bundle.manifest
    assert get("fraud_model_info", {"version": "v1", "sha256": manifest.model_sha256}) == 1
    assert get("fraud_model_threshold") == SPEC["threshold"]
    assert get("fraud_model_reloads_total", {"result": "ok"}) == 0
    assert 0 < get("fraud_model_load_seconds") < 30
    assert time.time() - get("fraud_model_last_reload_timestamp_seconds") < 60
    assert get("fraud_score_psi_window_scores") == 8
    assert get("fraud_score_psi") is None  # 8 scores: too few for a PSI worth reporting
    assert worker.health.readyz()[0] == 200


def test_psi_is_exported_once_the_window_fills(scripted):
    registry, worker, _, _ = scripted
    rng = np.random.default_rng(11)
    for _ in range(4):
        worker.metrics.observe_scores(rng.beta(0.5, 4.0, 50))  # like the training scores
    assert registry.get_sample_value("fraud_score_psi_window_scores") == 100  # the window drops whole batches
    assert registry.get_sample_value("fraud_score_psi") < 0.15
    for _ in range(4):
        worker.metrics.observe_scores(np.clip(rng.beta(0.5, 4.0, 50) + 0.3, 0, 1))
    assert registry.get_sample_value("fraud_score_psi") > 0.2


def test_a_failed_commit_is_counted_and_keeps_the_last_commit_time(scripted):
    registry, worker, consumer, _ = scripted
    from kafka.errors import KafkaTimeoutError

    before = registry.get_sample_value("fraud_last_commit_timestamp_seconds")

    def refuse(offsets, timeout_ms=None):
        raise KafkaTimeoutError("coordinator gone")

    consumer.commit = refuse
    worker.committer.add({TopicPartition(TOPIC, 0): 110}, frozenset())
    _, error = worker.committer.commit_pending()
    assert isinstance(error, KafkaTimeoutError)
    assert registry.get_sample_value("fraud_commits_total", {"result": "failed"}) == 1
    assert registry.get_sample_value("fraud_last_commit_timestamp_seconds") == before


def test_nothing_is_logged_per_event_at_info(tmp_path, caplog):
    """A batch of 500 events logs no more lines at INFO than a batch of 5."""

    def lines_for(n: int) -> int:
        models = tmp_path / f"models-{n}"
        make_bundle(models, "v1", **SPEC)
        metrics = WorkerMetrics(CollectorRegistry())
        watcher = ModelWatcher(str(models), metrics)
        watcher.load_initial()
        consumer = FakeConsumer({TopicPartition(TOPIC, 0): n}, {TopicPartition(TOPIC, 0): n})
        worker = connected(WorkerConfig(), watcher, metrics, HealthState(30), consumer, FakeProducer())
        rng = np.random.default_rng(n)
        values = [event(i, f) for i, f in enumerate(rng.normal(0, 3, (n, 6)))] + [b"bad"] * n
        batch = [Record(TOPIC, 0, i, 0, None, v, []) for i, v in enumerate(values)]
        caplog.clear()
        with caplog.at_level(logging.INFO):
            worker.process({TopicPartition(TOPIC, 0): batch})
        return len(caplog.records)

    assert lines_for(500) == lines_for(5)


def _one_partition_worker(tmp_path, producer, **settings) -> tuple[Worker, TopicPartition]:
    """A worker decoding in place, serving a fresh bundle, with a stand-in consumer of one partition."""
    models = tmp_path / "models"
    make_bundle(models, "v1", **SPEC)
    metrics = WorkerMetrics(CollectorRegistry())
    watcher = ModelWatcher(str(models), metrics)
    watcher.load_initial()
    p0 = TopicPartition(TOPIC, 0)
    config = WorkerConfig(decoder_processes=0, **settings)
    worker = Worker(config, watcher, metrics, HealthState(30), clients=FakeClients(FakeConsumer({p0: 1000}, {p0: 0}),
                                                                                      producer))  # fmt: skip
    return worker, p0


def test_a_short_batch_is_sent_before_the_next_poll_and_a_longer_one_after_it(tmp_path):
    """With time to spare (a poll of at most a third of max_batch_size), a batch's results do not wait
    for the next poll; a longer batch is decoded while the next poll runs, and sent after it."""
    producer = FakeProducer()
    producer.close = lambda timeout=None: None
    w, p0 = _one_partition_worker(tmp_path, producer, max_batch_size=6)
    consumer = w.clients.stand_in_consumer
    script = [[Record(TOPIC, 0, o, 0, None, b"bad", []) for o in offsets] for offsets in ([0, 1], [2, 3, 4], [])]
    sent_before_poll: list[int] = []

    def poll(timeout_ms=0, max_records=None):
        sent_before_poll.append(len(producer.sent))
        if not script:
            w.request_stop()
            return {}
        records = script.pop(0)
        return {p0: records} if records else {}

    consumer.poll = poll
    assert w.run() == 0
    # Poll 2 follows the short batch's two DLQ records; poll 3 comes before the longer batch's three.
    assert sent_before_poll == [0, 2, 2, 5]
    assert [c[p0].offset for c in consumer.commits][-1] == 5
