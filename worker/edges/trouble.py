"""Broker trouble: counted per stage, logged once per interval, and retried after a growing backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from worker.edges.health import HealthState
from worker.edges.logs import Throttle
from worker.edges.metrics import WorkerMetrics

logger = logging.getLogger(__name__)

TROUBLE_LOG_INTERVAL = 30.0


class Trouble:
    """``report`` counts, logs and backs off (interruptible by ``stop``); ``recovered`` resets the backoff."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        health: HealthState,
        stop: threading.Event,
        max_backoff: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.health = health
        self.throttle = Throttle(TROUBLE_LOG_INTERVAL, clock)  # also for the other once-per-interval lines
        self._stop = stop
        self._max_backoff = max_backoff
        self._clock = clock
        self._backoff = 0.0

    def report(self, stage: str, message: str) -> None:
        self.metrics.broker_errors.labels(stage=stage).inc()
        if self.throttle.ready(stage):
            held = self.throttle.take_suppressed(stage)
            more = f" ({held} more since the last report)" if held else ""
            logger.warning("%s; retrying with backoff, reported once per %.0fs%s", message, TROUBLE_LOG_INTERVAL, more)
        self._backoff = min(max(0.25, self._backoff * 2), self._max_backoff)
        deadline = self._clock() + self._backoff
        while not self._stop.is_set() and self._clock() < deadline:
            self.health.beat()  # alive and retrying: a restart would not bring the broker back
            self._stop.wait(min(0.2, max(0.0, deadline - self._clock())))

    def recovered(self) -> None:
        if self._backoff:
            logger.info("broker reachable again; resuming")
            self._backoff = 0.0
