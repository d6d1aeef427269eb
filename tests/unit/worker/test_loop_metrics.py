"""Every metric after one scripted batch through the real loop code, read from a fresh registry.

The Kafka clients are small stand-ins (what they return is the script); decoding, scoring, the
metrics and the health state are the real ones. The same values are checked end to end, through
a real broker and a real Prometheus server, in tests/integration/test_observability.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
from kafka import TopicPartition
from prometheus_client import CollectorRegistry

from tests.support.bundles import make_bundle
from tests.unit.worker.conftest import SPEC
from training.evaluate import histogram
from worker.config import WorkerConfig
from worker.health import HealthState
from worker.loop import Worker, _Rebalance
from worker.metrics import WorkerMetrics
from worker.models import ModelWatcher

TOPIC = "transactions"


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic, key=None, value=None, headers=None):
        from kafka.future import Future

        self.sent.append((topic, key, value))
        return Future().success(None)  # acknowledged at once

    def flush(self, timeout=None) -> None:
        pass


class FakeConsumer:
    def __init__(self, ends: dict, positions: dict) -> None:
        self.ends, self.positions = ends, positions
        self.commits: list[dict] = []

    def assignment(self):
        return set(self.ends)

    def end_offsets(self, partitions, timeout_ms=None):
        return {tp: self.ends[tp] for tp in partitions}

    def position(self, tp, timeout_ms=None):
        return self.positions[tp]

    def highwater(self, tp):
        return self.ends[tp]

    def commit(self, offsets, timeout_ms=None) -> None:
        self.commits.append(offsets)

    def commit_async(self, offsets, callback=None):
        from kafka.future import Future

        self.commit(offsets)
        if callback is not None:
            callback(offsets, None)
        return Future().success(None)


def event(i: int, features: np.ndarray) -> bytes:
    doc = {"transaction_id": f"tx-{i}", **dict(zip(SPEC["feature_names"], features.tolist(), strict=True))}
    return json.dumps(doc).encode()


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
    worker = Worker(WorkerConfig(), watcher, metrics, health)

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
    worker._consumer, worker._producer = consumer, FakeProducer()
    asyncio.run(_Rebalance(worker).on_partitions_assigned({p0, p1}))
    worker._handle(polled)
    worker._update_lag()
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
    worker._pending[TopicPartition(TOPIC, 0)] = 110
    worker._commit_pending(retry=False)
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
        worker = Worker(WorkerConfig(), watcher, metrics, HealthState(30))
        worker._consumer = FakeConsumer({TopicPartition(TOPIC, 0): n}, {TopicPartition(TOPIC, 0): n})
        worker._producer = FakeProducer()
        rng = np.random.default_rng(n)
        values = [event(i, f) for i, f in enumerate(rng.normal(0, 3, (n, 6)))] + [b"bad"] * n
        batch = [Record(TOPIC, 0, i, 0, None, v, []) for i, v in enumerate(values)]
        caplog.clear()
        with caplog.at_level(logging.INFO):
            worker._handle({TopicPartition(TOPIC, 0): batch})
        return len(caplog.records)

    assert lines_for(500) == lines_for(5)


def test_a_batch_loses_the_records_of_revoked_partitions_and_nothing_else():
    """Results of a batch polled before a rebalance are not sent for the partitions it revoked."""
    from worker.decode import Decoder
    from worker.loop import _Batch, _without

    names = SPEC["feature_names"]
    rng = np.random.default_rng(5)
    values = [event(i, f) for i, f in enumerate(rng.normal(0, 1, (6, len(names))))]
    values[1] = b"{broken"
    values[4] = b"[]"
    p0, p1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    polled = {p0: [Record(TOPIC, 0, 10 + i, 0, None, values[i], []) for i in range(3)],
              p1: [Record(TOPIC, 1, 20 + i, 0, None, values[3 + i], []) for i in range(3)]}  # fmt: skip
    batch = _Batch.of(polled, epoch=0)
    batch.decoded = Decoder(names).decode_batch([r.value for r in batch.records])
    kept = _without(batch, frozenset({p0}))
    assert [r.offset for r in kept.records] == [20, 21, 22]
    assert kept.first_offsets == {p1: 20} and kept.next_offsets == {p1: 23}
    assert kept.decoded.transaction_ids == ["tx-3", "tx-5"] and kept.decoded.index == [0, 2]
    assert [(i, e.reason) for i, e in kept.decoded.errors] == [(1, "not_an_object")]
    np.testing.assert_array_equal(kept.decoded.features, batch.decoded.features[[2, 3]])


def test_offsets_are_committed_in_order_when_acknowledgements_arrive_out_of_order(tmp_path):
    """A batch without results sent after one still waiting for its alerts is committed only after it."""
    from kafka.future import Future

    worker, p0 = _one_partition_worker(tmp_path)

    class SlowProducer(FakeProducer):
        def __init__(self):
            super().__init__()
            self.futures = []

        def send(self, topic, key=None, value=None, headers=None):
            self.sent.append((topic, key, value))
            self.futures.append(Future())
            return self.futures[-1]

    worker._producer = producer = SlowProducer()
    first = [Record(TOPIC, 0, i, 0, None, v, []) for i, v in enumerate([b"bad"] * 3)]  # DLQ records: results
    fine = event(9, np.zeros(len(SPEC["feature_names"])))
    second = [Record(TOPIC, 0, 3 + i, 0, None, fine, []) for i in range(4)]  # scored below the threshold: none
    worker._emit(_batch(worker, first))
    worker._emit(_batch(worker, second))
    time.sleep(0.3)  # time enough for the committer thread, were anything acknowledged
    assert worker._consumer.commits == [] and not worker._tail.settled.is_set()
    for f in producer.futures:
        f.success(None)
    assert worker._wait_settled(worker._tail)
    assert [c[p0].offset for c in worker._consumer.commits][-1] == 7
    assert sorted(c[p0].offset for c in worker._consumer.commits) == [c[p0].offset for c in worker._consumer.commits]
    worker._stop_committer()


def _one_partition_worker(tmp_path, **settings) -> tuple[Worker, TopicPartition]:
    """A worker decoding in place, serving a fresh bundle, with a stand-in consumer of one partition."""
    models = tmp_path / "models"
    make_bundle(models, "v1", **SPEC)
    metrics = WorkerMetrics(CollectorRegistry())
    watcher = ModelWatcher(str(models), metrics)
    watcher.load_initial()
    worker = Worker(WorkerConfig(decoder_processes=0, **settings), watcher, metrics, HealthState(30))
    p0 = TopicPartition(TOPIC, 0)
    worker._consumer = FakeConsumer({p0: 1000}, {p0: 0})
    return worker, p0


def _batch(worker, records):
    from worker.decode import Decoder
    from worker.loop import _Batch

    batch = _Batch.of({TopicPartition(TOPIC, 0): records}, worker._epoch)
    batch.scorer = worker.models.scorer
    batch.decoded = Decoder(SPEC["feature_names"]).decode_batch([r.value for r in records])
    return batch


def test_commits_without_results_are_coalesced_and_hurried_when_waited_for(tmp_path, monkeypatch):
    """Batches without results wait for the commit interval; results, and whatever the loop waits for, do not."""
    import worker.loop

    monkeypatch.setattr(worker.loop, "COMMIT_INTERVAL", 30.0)
    w, p0 = _one_partition_worker(tmp_path)
    w._producer = FakeProducer()
    fine = event(9, np.zeros(len(SPEC["feature_names"])))  # scored below the threshold: no results
    offset = iter(range(1000))

    def records(value: bytes, n: int) -> list:
        return [Record(TOPIC, 0, next(offset), 0, None, value, []) for _ in range(n)]

    def committed() -> list[int]:
        return [c[p0].offset for c in w._consumer.commits]

    w._emit(_batch(w, records(b"bad", 2)))  # a DLQ record is a result: committed at once
    deadline = time.monotonic() + 5
    while committed() != [2] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert committed() == [2]
    w._emit(_batch(w, records(fine, 3)))
    w._emit(_batch(w, records(fine, 3)))
    time.sleep(0.3)
    assert committed() == [2]  # acknowledged, waiting for the interval
    start = time.monotonic()
    assert w._wait_settled(w._tail)
    assert committed() == [2, 8] and time.monotonic() - start < 5  # one commit for both, without the interval
    w._emit(_batch(w, records(b"bad", 1)))
    assert w._wait_settled(w._tail) and committed() == [2, 8, 9]
    w._stop_committer()


def test_a_short_batch_is_sent_before_the_next_poll_and_a_longer_one_after_it(tmp_path):
    """With time to spare (a poll of at most a third of max_batch_size), a batch's results do not wait
    for the next poll; a longer batch is decoded while the next poll runs, and sent after it."""
    w, p0 = _one_partition_worker(tmp_path, max_batch_size=6)
    w._producer = producer = FakeProducer()
    producer.close = lambda timeout=None: None
    w._consumer.close = lambda autocommit=True: None
    w._connect = lambda: True
    script = [[Record(TOPIC, 0, o, 0, None, b"bad", []) for o in offsets] for offsets in ([0, 1], [2, 3, 4], [])]
    sent_before_poll: list[int] = []

    def poll(timeout_ms=0, max_records=None):
        sent_before_poll.append(len(producer.sent))
        if not script:
            w.request_stop()
            return {}
        records = script.pop(0)
        return {p0: records} if records else {}

    w._consumer.poll = poll
    assert w.run() == 0
    # Poll 2 follows the short batch's two DLQ records; poll 3 comes before the longer batch's three.
    assert sent_before_poll == [0, 2, 2, 5]
    assert [c[p0].offset for c in w._consumer.commits][-1] == 5


def test_the_loop_and_the_committer_thread_never_commit_at_once(tmp_path):
    """A commit from the loop (a retry) waits for the committer thread's, so commits never go backwards."""
    w, p0 = _one_partition_worker(tmp_path)
    w._producer = FakeProducer()
    consumer, lock = w._consumer, threading.Lock()
    in_flight, most = [0], [0]

    def slow_commit(offsets, timeout_ms=None):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.02)  # the broker's answer is on its way
        consumer.commits.append(offsets)
        with lock:
            in_flight[0] -= 1

    consumer.commit = slow_commit
    for i in range(10):
        w._emit(_batch(w, [Record(TOPIC, 0, i, 0, None, b"bad", [])]))  # a DLQ record: committed at once
        time.sleep(0.005)  # the committer thread has taken the offsets and waits for the broker
        w._commit_pending()
    assert w._wait_settled(w._tail)
    w._stop_committer()
    offsets = [c[p0].offset for c in consumer.commits]
    assert most[0] == 1, f"{most[0]} commits in flight at once"
    assert offsets == sorted(offsets) and offsets[-1] == 10


def test_the_output_topics_metadata_is_fetched_ahead_and_a_missing_topic_is_left_to_the_first_send():
    from kafka.errors import KafkaTimeoutError

    from worker.loop import _learn_topics

    asked: list[str] = []
    done = threading.Event()

    class Producer:
        def partitions_for(self, topic):
            asked.append(topic)
            if topic == "transactions-dlq":
                raise KafkaTimeoutError("no such topic yet")
            if len(asked) == 3:
                done.set()
            return {0}

    _learn_topics(Producer(), WorkerConfig(scores_topic="fraud-scores"))
    assert done.wait(5)
    assert asked == ["fraud-alerts", "transactions-dlq", "fraud-scores"]
