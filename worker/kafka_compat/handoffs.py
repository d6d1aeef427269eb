"""Two of kafka-python's hand-offs to its IO thread, skipped in each ``poll()`` when they would do nothing.

kafka-python 3.0 runs its network on an IO thread of its own. Every ``KafkaConsumer.poll()``
hands the IO thread two coroutines and waits for each: the group coordinator check
(``ensure_coordinator_ready``) and ``send_fetches``. When the coordinator's connection is up,
the first returns at once; when a fetch is already in flight to every broker, the second sends
nothing. Each hand-off still costs a wake-up of the IO thread, a switch of the interpreter lock
and back: about a fifth of the polling thread's wall time at 25,000 events/s (py-spy,
benchmarks/README.md, "Throughput: what bounds it, in detail"), and the records waiting for the
next poll wait that much longer.

``install_handoff_shortcuts(consumer)`` answers both cases on the polling thread, from state it
only reads, and leaves every other case to kafka-python: an unknown or disconnected coordinator
(its lookup and reconnection), and any broker without a fetch in flight. It relies on kafka-python
internals (``KafkaConsumer._coordinator`` and ``_fetcher``, the coordinator's ``coordinator_id``
and ``_client``, the fetcher's ``_nodes_with_pending_fetch_requests`` and ``_manager``), held by
the same version pin as the record reader; ``check_handoffs(consumer)`` looks for each at start, and
tests/unit/worker/kafka_compat/test_handoffs.py and tests/integration/test_kafka_compat*.py check
them on stand-ins and on a real consumer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer
from kafka.consumer.fetcher import Fetcher
from kafka.coordinator.base import BaseCoordinator

from worker.kafka_compat.counters import TAKEN


def check_handoffs(consumer: KafkaConsumer) -> None:
    """Raise unless every internal the shortcuts read is there, with the expected shape."""
    coordinator, fetcher = consumer._coordinator, consumer._fetcher
    if not isinstance(coordinator, BaseCoordinator) or not isinstance(fetcher, Fetcher):
        raise TypeError(f"unexpected kafka-python internals {type(coordinator).__name__}, {type(fetcher).__name__}")
    for owner, name in ((coordinator, "ensure_coordinator_ready"), (coordinator._client, "connected"),
                        (fetcher, "send_fetches"), (fetcher._manager.cluster, "brokers")):  # fmt: skip
        if not callable(getattr(owner, name, None)):
            raise TypeError(f"kafka-python's {type(owner).__name__}.{name} is gone")
    if not hasattr(coordinator, "coordinator_id"):
        raise TypeError("kafka-python's coordinator has no coordinator_id")
    set(fetcher._nodes_with_pending_fetch_requests)  # iterable, as the shortcut copies it


def install_handoff_shortcuts(consumer: KafkaConsumer) -> None:
    """Skip ``consumer``'s coordinator check and fetch sending in ``poll()`` when each would do nothing."""
    check_handoffs(consumer)
    coordinator, fetcher = consumer._coordinator, consumer._fetcher
    # Instance attributes: other consumers in the process (tests, the benchmark's ceiling) keep kafka-python's own.
    coordinator.ensure_coordinator_ready = coordinator_ready_shortcut(coordinator, coordinator.ensure_coordinator_ready)
    fetcher.send_fetches = send_fetches_shortcut(fetcher, fetcher.send_fetches)


def coordinator_ready_shortcut(coordinator: Any, original: Callable[..., bool]) -> Callable[..., bool]:
    """``ensure_coordinator_ready`` that answers True itself while the coordinator's connection is up.

    kafka-python's own version checks the same first (``coordinator()``), on the IO thread; it is
    called when the coordinator is unknown or its connection down, to look it up or mark it dead.
    """

    def ensure_coordinator_ready(timeout_ms: int | None = None) -> bool:
        node = coordinator.coordinator_id
        if node is not None and coordinator._client.connected(node):
            TAKEN["handoff_shortcuts"] += 1
            return True
        return original(timeout_ms)

    return ensure_coordinator_ready


def send_fetches_shortcut(fetcher: Any, original: Callable[[], list]) -> Callable[[], list]:
    """``send_fetches`` that sends nothing, without a hand-off, while every broker has a fetch in flight.

    kafka-python sends no fetch to a broker with one in flight, so then it would send none at all.
    """

    def send_fetches() -> list:
        pending = set(fetcher._nodes_with_pending_fetch_requests)  # a copy: the IO thread changes it
        if pending:
            brokers = fetcher._manager.cluster.brokers()
            if brokers and all(b.node_id in pending for b in brokers):
                TAKEN["handoff_shortcuts"] += 1
                return []
        return original()

    return send_fetches
