"""Exactly-once mode without a broker: the transaction's life (worker/delivery/transactions.py) and the worker.

The worker is driven through its public interface (``process``, ``run`` with a scripted poll, the
rebalance listener, ``delivery.reposition``) with the stand-in clients of standins.py; the
guarantee alone: tests/unit/worker/delivery/test_exactly_once.py. The broker-side guarantees
(read_committed readers, fencing, crashes) are tested on a real broker in
tests/integration/test_exactly_once.py and test_exactly_once_faults.py.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from kafka import TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError, ProducerFencedError
from kafka.future import Future
from prometheus_client import CollectorRegistry

from tests.unit.worker.conftest import SPEC
from tests.unit.worker.standins import FakeClients, FakeConsumer, FakeTransactionalProducer, Record, event
from worker.delivery import Next
from worker.delivery.batch import Batch
from worker.delivery.transactions import PartitionsLost, Transaction
from worker.edges.config import WorkerConfig
from worker.edges.health import HealthState
from worker.edges.metrics import WorkerMetrics
from worker.models.watcher import ModelWatcher
from worker.pipeline.loop import Worker

TOPIC = "transactions"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def batch(first: dict, last: dict) -> Batch:
    return Batch([], first, {tp: o + 1 for tp, o in last.items()}, epoch=0)


def finished(txn: Transaction):
    ended = txn.wait(timeout=10, beat=lambda: None)
    assert ended is not None
    return ended


def test_commits_start_one_interval_apart_and_commit_the_highest_offsets():
    clock, committed = Clock(), []
    txn = Transaction(0.25, committed.append, clock)
    producer = FakeTransactionalProducer()
    assert not txn.is_open and not txn.due() and txn.remaining() == float("inf")
    txn.begin(producer)
    assert txn.due()  # no commit yet: the first one may start at once
    txn.start_commit(producer)
    finished(txn)
    producer.events.clear()
    txn.begin(producer)
    txn.begin(producer)  # already open: no second begin
    assert producer.events == ["begin"]
    txn.add(batch({P0: 10}, {P0: 19}), "gm-1")
    txn.add(batch({P0: 20, P1: 5}, {P0: 29, P1: 9}), "gm-2")
    clock.now += 0.125
    assert not txn.due() and txn.remaining() == pytest.approx(0.125)
    clock.now += 0.125
    assert txn.due()
    txn.start_commit(producer)
    assert not txn.is_open and txn.ending
    ended = finished(txn)
    assert ended.error is None and len(ended.batches) == 2 and ended.finished_ms > 0
    assert producer.events == ["begin", "offsets", "commit"]
    assert {tp: m.offset for tp, m in producer.offsets[1].items()} == {P0: 30, P1: 10}
    assert committed == producer.offsets
    clock.now += 0.25 + 0.5  # the stream paused: a transaction opened now is due at once
    txn.begin(producer)
    assert txn.due()
    assert txn.wait(timeout=1, beat=lambda: None) is None  # taken once


def test_a_failed_send_fails_the_commit_before_any_offset_is_sent():
    txn = Transaction(0.1, lambda offsets: pytest.fail("nothing may be committed"))
    producer = FakeTransactionalProducer()
    txn.begin(producer)
    txn.sent(Future().success(None))
    txn.sent(Future().failure(MessageSizeTooLargeError("too large")))
    txn.add(batch({P0: 0}, {P0: 9}), "gm")
    txn.start_commit(producer)
    ended = finished(txn)
    assert isinstance(ended.error, MessageSizeTooLargeError) and not ended.fenced
    assert producer.events == ["begin"]  # no offsets, no commit: the transaction can only be aborted


def test_a_fenced_producer_is_told_apart_from_an_error_worth_retrying():
    for error, fenced in ((ProducerFencedError(), True), (KafkaTimeoutError(), False)):
        txn = Transaction(0.1, lambda offsets: None)
        producer = FakeTransactionalProducer(fail_commit=error)
        txn.begin(producer)
        txn.add(batch({P0: 0}, {P0: 9}), "gm")
        txn.start_commit(producer)
        ended = finished(txn)
        assert ended.error is error and ended.fenced is fenced


def test_lost_partitions_give_the_open_transaction_up_without_touching_the_producer():
    txn = Transaction(0.1, lambda offsets: pytest.fail("nothing may be committed"))
    producer = FakeTransactionalProducer()
    txn.begin(producer)
    txn.add(batch({P0: 0}, {P0: 9}), "gm")
    txn.give_up()
    ended = finished(txn)
    assert isinstance(ended.error, PartitionsLost) and len(ended.batches) == 1
    assert producer.events == ["begin"] and not txn.is_open


def test_revocation_commits_the_open_transaction_and_waits_for_it():
    txn = Transaction(10.0, lambda offsets: None)
    producer = FakeTransactionalProducer()
    txn.begin(producer)
    txn.add(batch({P1: 3}, {P1: 4}), "gm")
    txn.commit_now(producer)  # not due yet: committed anyway, before the partitions go
    assert producer.events == ["begin", "offsets", "commit"]
    assert txn.ended() and finished(txn).error is None


def test_a_commit_that_never_ends_counts_as_failed_after_the_timeout_and_the_wait_stays_alive():
    release = threading.Event()

    class Stuck(FakeTransactionalProducer):
        def commit_transaction(self) -> None:
            release.wait(5)

    txn, producer, beats = Transaction(0.1, lambda offsets: None), Stuck(), []
    txn.begin(producer)
    txn.add(batch({P0: 0}, {P0: 0}), "gm")
    txn.start_commit(producer)
    t0 = time.monotonic()
    ended = txn.wait(timeout=0.3, beat=lambda: beats.append(1), step=0.1)
    release.set()
    assert ended is not None and isinstance(ended.error, KafkaTimeoutError)
    assert beats and time.monotonic() - t0 < 2


# -- the worker in exactly-once mode, with stand-in clients ----------------------------------------


def exactly_once_worker(tmp_path, producer, consumer, **settings) -> tuple[Worker, CollectorRegistry]:
    from tests.support.bundles import make_bundle

    make_bundle(tmp_path / "models", "v1", **SPEC)
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    watcher = ModelWatcher(str(tmp_path / "models"), metrics)
    watcher.load_initial()
    config = WorkerConfig(processing_guarantee="exactly-once", scores_topic="scores", decoder_processes=0, **settings)
    worker = Worker(config, watcher, metrics, HealthState(30), clients=FakeClients(consumer, producer))
    assert worker.connect()
    return worker, registry


def transactions(registry: CollectorRegistry, outcome: str) -> float:
    return registry.get_sample_value("fraud_transactions_total", {"outcome": outcome}) or 0.0


def scored(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("fraud_events_scored_total") or 0.0


def run_polling(worker: Worker, polls: list) -> None:
    """Run ``worker`` with each poll answered by the next of ``polls`` (a callable is called first, then
    answers with what it returns); it stops when they run out."""
    script = list(polls)

    def poll(timeout_ms=0, max_records=None):
        if not script:
            worker.request_stop()
            return {}
        answer = script.pop(0)
        return answer() if callable(answer) else answer

    worker.consumer.poll = poll
    assert worker.run() == 0


def polled_batch(n: int = 6) -> dict:
    rng = np.random.default_rng(5)
    now = int(time.time() * 1000)
    values = [event(i, f) for i, f in enumerate(rng.normal(0, 1, (n, len(SPEC["feature_names"]))))]
    values[2] = b"{not json"
    return {
        P0: [Record(TOPIC, 0, 40 + i, now, None, v, []) for i, v in enumerate(values[: n // 2])],
        P1: [Record(TOPIC, 1, 7 + i, now, None, v, []) for i, v in enumerate(values[n // 2 :])],
    }


def test_the_loop_puts_a_batchs_outputs_and_offsets_in_one_transaction_and_never_commits_itself(tmp_path):
    producer, consumer = FakeTransactionalProducer(), FakeConsumer({P0: 43, P1: 10}, {P0: 43, P1: 10})
    worker, registry = exactly_once_worker(tmp_path, producer, consumer)
    assert worker.process(polled_batch())
    assert producer.events == ["init", "begin", "offsets", "commit"]
    assert {tp: m.offset for tp, m in producer.offsets[0].items()} == {P0: 43, P1: 10}
    topics = [t for t, _, _ in producer.sent]
    assert topics.count("scores") == 5 and topics.count(WorkerConfig().dlq_topic) == 1
    assert consumer.commits == []  # the offsets went with the transaction
    assert transactions(registry, "committed") == 1
    assert scored(registry) == 5  # counted once committed


def test_a_failed_commit_starts_over_from_the_committed_offsets_with_a_new_producer(tmp_path):
    producer = FakeTransactionalProducer(fail_commit=KafkaError("coordinator went away"))
    consumer = FakeConsumer({P0: 43, P1: 10}, {P0: 43, P1: 10})
    consumer.committed_offsets = {P0: 40}  # P1: nothing committed yet
    # The test does not wait out the backoff.
    worker, registry = exactly_once_worker(tmp_path, producer, consumer, retry_backoff_max_seconds=0.01)
    assert not worker.process(polled_batch())
    assert consumer.seeks == []  # not before the new producer has ended what the old one left
    producer.events.clear()
    assert worker.delivery.reposition() is Next.GO_ON
    assert producer.events == ["init"]
    assert sorted(consumer.seeks, key=str) == [(P0, 40), (P1, "beginning")]
    assert transactions(registry, "aborted") == 1
    assert scored(registry) == 0  # nothing counted: it will be scored again
    assert consumer.commits == []


def test_a_fenced_worker_does_not_rewind_but_rejoins_the_group(tmp_path):
    producer = FakeTransactionalProducer(fail_commit=ProducerFencedError())
    consumer = FakeConsumer({P0: 43, P1: 10}, {P0: 43, P1: 10})
    worker, _ = exactly_once_worker(tmp_path, producer, consumer)
    clients = worker.clients
    assert isinstance(clients, FakeClients)
    run_polling(worker, [polled_batch(), {}, {}])  # the commit fails at the idle poll after the batch
    assert consumer.seeks == [] and clients.connections == 3  # connect, run's connect, then the rejoin


def test_a_revoked_partition_is_sought_back_to_its_last_commit_in_case_it_comes_straight_back(tmp_path):
    """kafka-python keeps the fetch position of a partition revoked and assigned straight back; the
    worker drops what it polled and did not commit, so the listener seeks back (worker/delivery/rebalance.py)."""
    producer, consumer = FakeTransactionalProducer(), FakeConsumer({P0: 43, P1: 10}, {P0: 43, P1: 10})
    # A batch of 6 is more than a third of max_batch_size: it stays in the decoder during the next poll.
    worker, _ = exactly_once_worker(tmp_path, producer, consumer, max_batch_size=6)
    assert worker.process(polled_batch())  # committed: P0 up to 43, P1 up to 10
    later = polled_batch()
    for records in later.values():  # polled, and still in the decoder when the rebalance comes
        for r in records:
            r.offset += 3

    def rebalance() -> dict:  # inside the next poll, as kafka-python calls the listener
        asyncio.run(worker.listener.on_partitions_revoked({P0, P1}))
        return {}

    run_polling(worker, [later, rebalance])
    assert sorted(consumer.seeks) == [(P0, 43), (P1, 10)]


def test_a_batch_polled_after_the_partitions_were_lost_is_polled_again_from_the_committed_offsets(tmp_path):
    """The open transaction is given up; a batch emitted before the loop took that outcome is not skipped."""
    producer, consumer = FakeTransactionalProducer(), FakeConsumer({P0: 43, P1: 10}, {P0: 43, P1: 10})
    # Nothing commits on its own in this test (but the first transaction, due at once).
    worker, registry = exactly_once_worker(tmp_path, producer, consumer, commit_interval_ms=60_000)
    assert worker.process(polled_batch())  # the first transaction commits (the first is due at once)
    transaction = worker.delivery.transaction  # type: ignore[attr-defined]
    open_at_rebalance = []

    def lost() -> dict:  # a second transaction is open with the batch before; the partitions are lost in this poll
        open_at_rebalance.append(transaction.is_open)
        asyncio.run(worker.listener.on_partitions_lost({P0, P1}))
        consumer.committed_offsets = {P0: 43, P1: 10}
        return polled_batch()  # polled by that same poll, under the new assignment

    run_polling(worker, [polled_batch(), lost])
    assert open_at_rebalance == [True]
    assert transactions(registry, "aborted") == 1
    assert not transaction.is_open
    assert sorted(consumer.seeks) == [(P0, 43), (P1, 10)]  # that batch is read again, not skipped
