"""Broker trouble: counted per stage, logged once per interval, and retried after a growing backoff.

Also the one trouble that is not retried: another instance took this one's ``group_instance_id``
(``replaced``), so this one stops with exit status 1.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kafka.errors import FencedInstanceIdError

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
        group: tuple[str, str | None] = ("", None),  # the group id and group_instance_id, for ``replaced``
    ) -> None:
        self.metrics = metrics
        self.health = health
        self.throttle = Throttle(TROUBLE_LOG_INTERVAL, clock)  # also for the other once-per-interval lines
        self._stop = stop
        self._max_backoff = max_backoff
        self._clock = clock
        self._backoff = 0.0
        self._group = group
        self.exit_code = 0  # 1 once another instance took this one's group_instance_id

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

    def replaced(self, error: BaseException) -> bool:
        """Another instance joined with this one's group_instance_id: this one stops, exit status 1.

        Rejoining would fence the other in turn, and both would score every event.
        """
        if not isinstance(error, FencedInstanceIdError):
            return False
        if not self._stop.is_set():
            logger.error("another worker joined group %s as group_instance_id %r, so this one stops: each "
                         "instance needs its own id (%s)", *self._group, error)  # fmt: skip
        self.exit_code = 1
        self._stop.set()
        return True
