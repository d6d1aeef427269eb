"""Consumer lag per partition, from the broker's end offsets, every few seconds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from worker.edges.logs import Throttle
from worker.edges.metrics import WorkerMetrics

logger = logging.getLogger(__name__)

LAG_INTERVAL = 5.0
LAG_TIMEOUT_MS = 2_000


class LagReporter:
    """``maybe_update`` sets ``fraud_consumer_lag`` at most every ``interval`` seconds."""

    def __init__(
        self, metrics: WorkerMetrics, throttle: Throttle, clock: Callable[[], float] = time.monotonic,
        interval: float = LAG_INTERVAL,
    ) -> None:  # fmt: skip
        self.metrics = metrics
        self.throttle = throttle
        self._clock = clock
        self.interval = interval
        self._next = 0.0

    def maybe_update(self, consumer: KafkaConsumer) -> None:
        now = self._clock()
        if now >= self._next:
            self._next = now + self.interval
            self.update(consumer)

    def update(self, consumer: KafkaConsumer) -> None:
        lag: dict[int, int] = {}
        try:
            assigned = list(consumer.assignment())
            # The broker's end offsets (one ListOffsets request), not the last fetch's highwater:
            # right even for a partition this worker has not fetched from yet.
            ends = consumer.end_offsets(assigned, timeout_ms=LAG_TIMEOUT_MS) if assigned else {}
            for tp in assigned:
                end = ends.get(tp)
                position = consumer.position(tp, timeout_ms=100)
                if end is not None and position is not None:
                    lag[tp.partition] = max(0, end - position)
        except KafkaError as exc:
            # No answer to a ListOffsets request: the one broker call made even while idle, so an
            # outage shows here when nothing is being produced or committed.
            self.metrics.broker_errors.labels(stage="lag").inc()
            if self.throttle.ready("lag"):
                logger.warning("lag query failed: %s (reported once per %.0fs)", exc, self.throttle.interval)
            return
        except AssertionError:  # a partition revoked meanwhile
            return
        self.metrics.set_lag(lag)
