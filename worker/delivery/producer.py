"""The worker's one producer: made on first need, and discarded after a failure so the retry gets a new one.

kafka-python's producer can stay broken after a failed send or transaction (worker/edges/clients.py,
``discard``), so neither guarantee reuses the producer of a failure: it ``discard``s it, and the
next ``get`` (the retry's send, or the reposition before it) makes a new one. Exactly-once, the new
producer's ``init_transactions`` ends whatever its predecessor left open under the same
transactional id.
"""

from __future__ import annotations

import logging

from kafka import KafkaProducer

from worker.edges.clients import KafkaClients
from worker.edges.logs import Throttle

logger = logging.getLogger(__name__)


class ProducerSlot:
    """Holds the current producer, if any; ``clients`` makes and discards them."""

    def __init__(self, clients: KafkaClients, throttle: Throttle) -> None:
        self._clients = clients
        self._throttle = throttle  # the "starting a new producer" line, once per interval
        self.current: KafkaProducer | None = None

    def get(self) -> KafkaProducer:
        """The current producer, made now if there is none (at start, or after a failure)."""
        if self.current is None:
            self.current = self._clients.producer()
        return self.current

    def discard(self, error: object) -> None:
        """Drop the producer of a failure (``error``); the next ``get`` makes a new one."""
        old, self.current = self.current, None
        if old is not None:
            self._clients.discard(old, error, self._throttle)

    def close(self) -> None:
        """At stop: close the producer, letting what it still holds go out (at most 10 s)."""
        old, self.current = self.current, None
        if old is not None:
            try:
                old.close(timeout=10)
            except Exception as exc:  # noqa: BLE001 - closing goes on
                logger.warning("closing the producer: %s", exc)
