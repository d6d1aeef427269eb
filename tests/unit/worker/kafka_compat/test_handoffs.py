"""The poll() hand-off shortcuts (worker/handoffs.py): taken only when kafka-python's call would do nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from kafka import KafkaConsumer
from kafka.consumer.fetcher import Fetcher
from kafka.coordinator.base import BaseCoordinator

from worker.kafka_compat.handoffs import coordinator_ready_shortcut, install_handoff_shortcuts, send_fetches_shortcut


class Calls:
    """The original kafka-python method: records its calls, returns ``result``."""

    def __init__(self, result) -> None:
        self.result = result
        self.calls: list[tuple] = []

    def __call__(self, *args):
        self.calls.append(args)
        return self.result


def coordinator(node, connected: set[int]):
    return SimpleNamespace(coordinator_id=node, _client=SimpleNamespace(connected=lambda n: n in connected))


def fetcher(pending: set[int], brokers: list[int]):
    cluster = SimpleNamespace(brokers=lambda: [SimpleNamespace(node_id=b) for b in brokers])
    return SimpleNamespace(_nodes_with_pending_fetch_requests=pending, _manager=SimpleNamespace(cluster=cluster))


def test_coordinator_check_answered_without_a_hand_off_while_its_connection_is_up():
    original = Calls(False)
    assert coordinator_ready_shortcut(coordinator(1, {1}), original)(500) is True
    assert original.calls == []


@pytest.mark.parametrize(
    "node, connected",
    [(None, {1}), (1, set()), (1, {2})],
    ids=["coordinator unknown", "no connection", "connected elsewhere only"],
)
def test_coordinator_check_left_to_kafka_python_otherwise(node, connected):
    original = Calls("kafka-python's answer")
    assert coordinator_ready_shortcut(coordinator(node, connected), original)(500) == "kafka-python's answer"
    assert original.calls == [(500,)]


def test_no_fetch_sent_while_every_broker_has_one_in_flight():
    original = Calls(["future"])
    assert send_fetches_shortcut(fetcher({1, 2, 3}, [1, 2, 3]), original)() == []
    assert original.calls == []


@pytest.mark.parametrize(
    "pending, brokers",
    [(set(), [1]), ({1, 2}, [1, 2, 3]), ({1}, [])],
    ids=["nothing in flight", "a broker without a fetch in flight", "no broker known yet"],
)
def test_fetches_left_to_kafka_python_otherwise(pending, brokers):
    original = Calls(["future"])
    assert send_fetches_shortcut(fetcher(pending, brokers), original)() == ["future"]
    assert original.calls == [()]


def test_shortcut_reads_the_pending_set_as_it_is_at_each_call():
    f, original = fetcher({1}, [1]), Calls(["future"])
    send = send_fetches_shortcut(f, original)
    assert send() == []
    f._nodes_with_pending_fetch_requests.discard(1)  # the IO thread: the fetch was answered
    assert send() == ["future"]


def test_installed_on_one_consumer_only_and_on_the_internals_it_expects():
    """Fails when a kafka-python release renames or reshapes what the shortcuts read."""
    consumer = KafkaConsumer(group_id="g", bootstrap_servers="127.0.0.1:1", api_version=(4, 0))
    other = KafkaConsumer(group_id="g", bootstrap_servers="127.0.0.1:1", api_version=(4, 0))
    try:
        coord, fetch = consumer._coordinator, consumer._fetcher
        assert isinstance(coord, BaseCoordinator) and isinstance(fetch, Fetcher)
        assert hasattr(coord, "coordinator_id") and callable(coord._client.connected)
        assert isinstance(fetch._nodes_with_pending_fetch_requests, set)
        assert callable(fetch._manager.cluster.brokers)
        install_handoff_shortcuts(consumer)
        assert coord.ensure_coordinator_ready.__name__ == "ensure_coordinator_ready"
        assert "ensure_coordinator_ready" in vars(coord) and "send_fetches" in vars(fetch)
        assert "ensure_coordinator_ready" not in vars(other._coordinator)
        assert "send_fetches" not in vars(other._fetcher)
        # With no broker known, both go to kafka-python (nothing in flight, no coordinator).
        assert coord.coordinator_id is None
    finally:
        consumer.close()
        other.close()
