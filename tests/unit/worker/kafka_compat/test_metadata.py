"""The wait for the input topic's partitions before the first poll (worker/kafka_compat/metadata.py).

The consumer is a stand-in with kafka-python's shapes: a cluster whose metadata requests are
answered by a script, one answer per request. The same wait is checked end to end, through a real
broker, by the first assignment in tests/integration/test_worker_end_to_end.py.
"""

from __future__ import annotations

import logging

from kafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError

from worker.kafka_compat.metadata import await_partitions

TOPIC = "transactions"


class Cluster:
    def __init__(self, known: bool = False) -> None:
        self.partitions: dict[str, set[int]] = {TOPIC: {0, 1, 2}} if known else {}
        self.requests = 0

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions.get(topic)

    def request_update(self) -> str:
        self.requests += 1
        return f"update-{self.requests}"


class Consumer:
    """``_cluster``, ``_manager.wait_for`` and ``_net.run`` as await_partitions uses them."""

    def __init__(self, answers: list[str], known: bool = False) -> None:
        self._cluster = Cluster(known)
        self._answers = list(answers)
        self._manager = self
        self._net = self
        self.timeouts: list[float] = []

    def wait_for(self, future, timeout_ms):  # never called: run() plays the answer instead
        raise AssertionError("run() answers")

    def run(self, fn, future, timeout_ms):
        assert fn == self.wait_for and future == f"update-{self._cluster.requests}"
        self.timeouts.append(timeout_ms)
        answer = self._answers.pop(0)
        if answer == "with the topic":
            self._cluster.partitions[TOPIC] = {0, 1, 2}
        elif answer == "no such topic":
            raise UnknownTopicOrPartitionError(TOPIC)
        elif answer == "no answer":
            raise KafkaTimeoutError("Timed out")
        # "without the topic": a refresh asked for before subscribe() answered this request


def test_known_partitions_need_no_request():
    consumer = Consumer([], known=True)
    await_partitions(consumer, TOPIC, 5_000)
    assert consumer._cluster.requests == 0


def test_an_answer_without_the_topic_is_followed_by_another_request():
    consumer = Consumer(["without the topic", "without the topic", "with the topic"])
    await_partitions(consumer, TOPIC, 5_000)
    assert consumer._cluster.requests == 3
    assert consumer._cluster.partitions_for_topic(TOPIC) == {0, 1, 2}
    assert all(0 < t <= 5_000 for t in consumer.timeouts)


def test_a_topic_that_does_not_exist_ends_the_wait_at_once(caplog):
    consumer = Consumer(["no such topic"])
    with caplog.at_level(logging.INFO, logger="worker.kafka_compat.metadata"):
        await_partitions(consumer, TOPIC, 5_000)
    assert consumer._cluster.requests == 1
    assert any("not fetched before joining the group" in r.getMessage() for r in caplog.records)


def test_the_wait_gives_up_at_its_bound_with_one_warning(caplog, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("worker.kafka_compat.metadata.time.monotonic", lambda: clock[0])
    consumer = Consumer(["no answer"] * 10)
    real_run = consumer.run

    def slow_run(fn, future, timeout_ms):
        clock[0] += timeout_ms / 1000  # the broker says nothing for as long as it is given
        return real_run(fn, future, timeout_ms)

    consumer.run = slow_run
    with caplog.at_level(logging.WARNING, logger="worker.kafka_compat.metadata"):
        await_partitions(consumer, TOPIC, 2_000)
    assert consumer._cluster.requests == 1 and consumer.timeouts == [2_000]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"no metadata for {TOPIC} after 2000 ms; the group join goes ahead without it"]
