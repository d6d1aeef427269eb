"""``AtLeastOnce`` (worker/delivery/at_least_once.py) alone, with a stand-in producer and consumer: offsets
committed after the results are acknowledged, and the rewind (``Next.REWOUND``) after a failed send."""

from __future__ import annotations

import asyncio
import threading

from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError
from kafka.future import Future
from prometheus_client import CollectorRegistry

from tests.unit.worker.standins import FakeClients, FakeConsumer, FakeProducer, Record
from worker.delivery import AtLeastOnce, Next, Shared
from worker.delivery.batch import Batch
from worker.delivery.consumer import ConsumerSlot
from worker.delivery.producer import ProducerSlot
from worker.delivery.rebalance import Restarts, Revocations
from worker.edges.health import HealthState
from worker.edges.metrics import WorkerMetrics
from worker.edges.trouble import Trouble
from worker.kafka_compat import KafkaCompat

TOPIC = "transactions"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
RESULTS = [("alerts", b"k", b"alert", [])]


class Unacknowledged(FakeProducer):
    """Sends whose acknowledgement the test gives (or refuses) later."""

    def __init__(self) -> None:
        super().__init__()
        self.futures: list[Future] = []

    def send(self, topic, key=None, value=None, headers=None):
        self.sent.append((topic, key, value))
        self.futures.append(Future())
        return self.futures[-1]


class Parts:
    def __init__(self, producer: FakeProducer) -> None:
        self.producer, self.consumer = producer, FakeConsumer({P0: 50, P1: 20}, {P0: 50, P1: 20})
        self.clients = FakeClients(self.consumer, producer)
        self.registry = CollectorRegistry()
        metrics, health = WorkerMetrics(self.registry), HealthState(30)
        trouble = Trouble(metrics, health, threading.Event(), max_backoff=0.01)
        source = ConsumerSlot()
        source.attach(self.consumer, KafkaCompat())
        shared = Shared(source, ProducerSlot(self.clients, trouble.throttle), Revocations(), Restarts(), trouble,
                        metrics, health)  # fmt: skip
        self.accounted: list[Batch] = []
        self.alo = AtLeastOnce(shared, self.accounted.append, commit_interval=0.01, ack_timeout=5.0)


def batch(tp: TopicPartition, first: int, last: int) -> Batch:
    return Batch.of({tp: [Record(TOPIC, tp.partition, o, 0, None, b"{}", []) for o in range(first, last + 1)]}, 0)


def test_offsets_are_committed_once_the_results_are_acknowledged():
    parts = Parts(Unacknowledged())
    b = batch(P0, 40, 42)
    assert parts.alo.ready(b, held=None) is Next.GO_ON
    assert parts.alo.emit(b, RESULTS, held=None) is Next.GO_ON
    assert b.urgent and parts.consumer.commits == []
    parts.producer.futures[0].success(None)
    assert parts.alo.finish() is Next.GO_ON
    assert [{tp: m.offset for tp, m in c.items()} for c in parts.consumer.commits] == [{P0: 43}]
    assert parts.accounted == [b]
    parts.alo.close()


def test_a_failed_send_rewinds_to_the_failed_batch_and_the_batches_behind_it():
    parts = Parts(Unacknowledged())
    failed = batch(P0, 40, 42)
    parts.alo.emit(failed, RESULTS, held=None)
    parts.producer.futures[0].failure(KafkaTimeoutError("not acknowledged"))
    assert failed.settled.wait(5)
    behind, held = batch(P0, 43, 44), batch(P1, 7, 9)  # the batch to emit now, and one still in the decoder
    assert parts.alo.ready(behind, held) is Next.REWOUND
    assert sorted(parts.consumer.seeks) == [(P0, 40), (P1, 7)]
    assert len(parts.clients.discarded) == 1 and parts.consumer.commits == [] and parts.accounted == []
    assert parts.registry.get_sample_value("fraud_broker_errors_total", {"stage": "produce"}) == 1
    assert parts.alo.chain.tail is None  # the chain starts over
    parts.alo.close()


def test_revocation_hands_the_pending_offsets_to_the_listener_and_loss_drops_them():
    """(Waiting for results in flight runs on kafka-python's IO loop: tests/integration/test_kafka_compat.py.)"""
    parts = Parts(FakeProducer())
    parts.alo.committer.add({P0: 43, P1: 10}, frozenset())
    offsets = asyncio.run(parts.alo.on_revocation({P0}))
    assert {tp: m.offset for tp, m in offsets.items()} == {P0: 43}
    assert parts.alo.revocations.since(0) == {P0}
    parts.alo.on_lost({P1})
    assert not parts.alo.committer.has_pending and parts.alo.revocations.since(0) == {P0, P1}
    parts.alo.close()
    assert parts.consumer.commits == []  # nothing left to commit at close
