"""``ExactlyOnce`` (worker/delivery/exactly_once.py) alone, with a stand-in producer and consumer: what it
sends into each transaction, and what it tells the loop to do (``Next``) when a send, a commit or the
group's membership fails."""

from __future__ import annotations

import asyncio
import threading

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError, ProducerFencedError
from prometheus_client import CollectorRegistry

from tests.unit.worker.standins import FakeClients, FakeConsumer, FakeTransactionalProducer
from worker.delivery import ExactlyOnce, Next, Shared
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
RECORDS = [("alerts", b"k", b"alert", []), ("scores", b"k", b"score", [])]


class Parts:
    """An ``ExactlyOnce`` over stand-ins, and what it reached: the producer, the consumer, the metrics."""

    def __init__(self, producer: FakeTransactionalProducer, interval: float = 60.0) -> None:
        self.producer, self.consumer = producer, FakeConsumer({P0: 50, P1: 20}, {P0: 50, P1: 20})
        self.clients = FakeClients(self.consumer, producer)
        self.registry = CollectorRegistry()
        metrics, health = WorkerMetrics(self.registry), HealthState(30)
        trouble = Trouble(metrics, health, threading.Event(), max_backoff=0.01)
        source = ConsumerSlot()
        source.attach(self.consumer, KafkaCompat())
        self.restarts = Restarts()
        shared = Shared(source, ProducerSlot(self.clients, trouble.throttle), Revocations(), self.restarts, trouble,
                        metrics, health)  # fmt: skip
        self.accounted: list[Batch] = []
        self.eos = ExactlyOnce(shared, self.accounted.append, commit_interval=interval, ack_timeout=5.0)

    def transactions(self, outcome: str) -> float:
        return self.registry.get_sample_value("fraud_transactions_total", {"outcome": outcome}) or 0.0


def batch(first: dict, last: dict) -> Batch:
    return Batch([], first, {tp: o + 1 for tp, o in last.items()}, epoch=0)


def with_one_committed(parts: Parts) -> Parts:
    """The first transaction commits at once (none before it); the next one waits for the interval."""
    parts.eos.emit(batch({P0: 0, P1: 0}, {P0: 0, P1: 0}), RECORDS, held=None)
    assert parts.eos.finish() is Next.GO_ON
    parts.producer.events.clear()
    parts.accounted.clear()
    return parts


def test_a_batch_goes_into_the_open_transaction_and_commits_with_its_offsets_when_due():
    parts = Parts(FakeTransactionalProducer(), interval=0.0)  # due at once
    eos, producer = parts.eos, parts.producer
    assert eos.poll_timeout(500) == 500  # no transaction open: the poll waits as long as it likes
    b = batch({P0: 40, P1: 7}, {P0: 42, P1: 9})
    assert eos.emit(b, RECORDS, held=None) is Next.GO_ON
    assert [t for t, _, _ in producer.sent] == ["alerts", "scores"]
    assert eos.finish() is Next.GO_ON
    assert producer.events == ["init", "begin", "offsets", "commit"]
    assert {tp: m.offset for tp, m in producer.offsets[0].items()} == {P0: 43, P1: 10}
    assert parts.accounted == [b] and b.settled.is_set()
    assert parts.transactions("committed") == 1 and parts.consumer.commits == []
    assert parts.restarts.take({P0, P1}) == {P0: 43, P1: 10}  # where a revoked partition starts again


def test_an_open_transaction_shortens_the_poll_to_when_it_is_due():
    eos = Parts(FakeTransactionalProducer(), interval=0.2).eos
    eos.emit(batch({P0: 0}, {P0: 9}), RECORDS, held=None)  # the first commit starts at once
    assert eos.finish() is Next.GO_ON
    eos.emit(batch({P0: 10}, {P0: 19}), RECORDS, held=None)
    assert eos.transaction.is_open and 0 <= eos.poll_timeout(500) <= 200


def test_a_failed_send_aborts_the_transaction_and_asks_to_reposition_with_a_new_producer():
    parts = Parts(FakeTransactionalProducer(fail_send=KafkaTimeoutError("no leader")))
    assert parts.eos.emit(batch({P0: 0}, {P0: 9}), RECORDS, held=None) is Next.REPOSITION
    assert parts.transactions("aborted") == 1 and parts.accounted == []
    assert len(parts.clients.discarded) == 1 and parts.eos.producer.current is None
    assert "offsets" not in parts.producer.events and not parts.eos.transaction.is_open


def test_a_failed_commit_asks_to_reposition_at_the_committed_offsets_after_a_new_producer():
    parts = Parts(FakeTransactionalProducer(fail_commit=KafkaError("coordinator went away")), interval=0.0)
    parts.consumer.committed_offsets = {P0: 40}  # P1: nothing committed yet
    assert parts.eos.emit(batch({P0: 40, P1: 7}, {P0: 42, P1: 9}), RECORDS, held=None) is Next.GO_ON
    assert parts.eos.finish() is Next.REPOSITION
    assert parts.transactions("aborted") == 1 and parts.accounted == [] and parts.consumer.seeks == []
    parts.producer.events.clear()
    assert parts.eos.reposition() is Next.GO_ON
    assert parts.producer.events == ["init"]  # the new producer first ends what the old one left
    assert sorted(parts.consumer.seeks, key=str) == [(P0, 40), (P1, "beginning")]


def test_reposition_is_asked_again_while_the_committed_offsets_cannot_be_read():
    parts = Parts(FakeTransactionalProducer())

    def unreachable(tp, timeout_ms=None):
        raise KafkaTimeoutError("coordinator unreachable")

    parts.consumer.committed = unreachable
    assert parts.eos.reposition() is Next.REPOSITION
    assert parts.registry.get_sample_value("fraud_broker_errors_total", {"stage": "produce"}) == 1


def test_a_fenced_producer_asks_to_rejoin_the_group_without_rewinding():
    parts = Parts(FakeTransactionalProducer(fail_commit=ProducerFencedError()), interval=0.0)
    parts.eos.emit(batch({P0: 0}, {P0: 9}), RECORDS, held=None)
    assert parts.eos.between_polls(idle=True, held=None) is Next.REJOIN
    assert parts.consumer.seeks == [] and parts.transactions("aborted") == 1
    assert len(parts.clients.discarded) == 1


def test_a_batch_after_a_failed_commit_is_not_sent_but_polled_again():
    parts = Parts(FakeTransactionalProducer(fail_commit=KafkaError("coordinator went away")), interval=0.0)
    parts.eos.emit(batch({P0: 0}, {P0: 9}), RECORDS, held=None)  # its commit starts, and fails
    sent = len(parts.producer.sent)
    assert parts.eos.emit(batch({P0: 10}, {P0: 19}), RECORDS, held=None) is Next.REPOSITION
    assert len(parts.producer.sent) == sent


def test_revocation_commits_the_open_transaction_before_the_partitions_go():
    parts = with_one_committed(Parts(FakeTransactionalProducer()))
    b = batch({P1: 3}, {P1: 4})
    parts.eos.emit(b, RECORDS, held=None)
    assert parts.eos.transaction.is_open and parts.producer.events == ["begin"]  # not due for a minute
    assert asyncio.run(parts.eos.on_revocation({P1})) == {}  # nothing left for the listener to commit
    assert parts.producer.events == ["begin", "offsets", "commit"]
    assert parts.eos.revocations.since(0) == {P1}
    assert parts.eos.between_polls(idle=False, held=None) is Next.GO_ON  # the loop takes the outcome
    assert parts.accounted == [b] and parts.transactions("committed") == 2


def test_lost_partitions_give_the_open_transaction_up_and_ask_to_reposition():
    parts = with_one_committed(Parts(FakeTransactionalProducer()))
    parts.eos.emit(batch({P0: 1}, {P0: 9}), RECORDS, held=None)
    assert parts.eos.transaction.is_open
    parts.eos.on_lost({P0})
    assert "commit" not in parts.producer.events and parts.eos.revocations.since(0) == {P0}
    assert parts.eos.emit(batch({P1: 0}, {P1: 9}), RECORDS, held=None) is Next.REPOSITION
    assert parts.transactions("aborted") == 1 and parts.accounted == []


@pytest.mark.parametrize("final", [False, True])
def test_finish_commits_the_open_transaction_at_once(final):
    parts = with_one_committed(Parts(FakeTransactionalProducer()))
    parts.eos.emit(batch({P0: 1}, {P0: 9}), RECORDS, held=None)
    assert parts.eos.transaction.is_open  # not due: committed by finish, at once
    assert parts.eos.finish(final=final) is Next.GO_ON
    assert parts.producer.events == ["begin", "offsets", "commit"] and parts.transactions("committed") == 2
