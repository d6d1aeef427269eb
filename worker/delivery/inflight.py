"""The emitted batches not yet accounted for, oldest first, and the bounded wait for them to settle."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator

from kafka.errors import KafkaTimeoutError

from worker.delivery.batch import Batch
from worker.delivery.committer import Committer
from worker.edges.health import HealthState
from worker.edges.metrics import WorkerMetrics
from worker.edges.trouble import TROUBLE_LOG_INTERVAL, Trouble

logger = logging.getLogger(__name__)

ACK_REPORT_SECONDS = 5.0  # results unacknowledged this long count as a broker error


class InFlight:
    """Batches emitted and not yet accounted for (at_least_once.py), in emission order."""

    def __init__(
        self, committer: Committer, health: HealthState, metrics: WorkerMetrics, trouble: Trouble, ack_timeout: float
    ) -> None:
        self._committer = committer
        self._health = health
        self._metrics = metrics
        self._trouble = trouble
        self._ack_timeout = ack_timeout  # the producer's own delivery timeout, plus a margin
        self._batches: deque[Batch] = deque()
        self.last_with_results: Batch | None = None  # the last batch that sent anything

    def append(self, batch: Batch) -> None:
        self._batches.append(batch)

    def settled(self) -> Iterator[Batch]:
        """Take the settled batches at the front, one at a time."""
        while self._batches and self._batches[0].settled.is_set():
            yield self._batches.popleft()

    def take_all(self) -> list[Batch]:
        """Every batch still in flight (after a failure: all of them are dropped and polled again)."""
        batches = list(self._batches)
        self._batches.clear()
        self.last_with_results = None
        return batches

    def wait(self, batch: Batch) -> None:
        """Wait until ``batch`` and every batch before it is settled; past the timeout they fail."""
        if not self._wait_for(batch):
            for b in self._batches:  # it and everything before it
                if not b.settled.is_set():
                    b.fail(KafkaTimeoutError("results not acknowledged in time"))
                    b.settle()

    def finish(self) -> bool:
        """At shutdown: False (logged) if a batch failed, else every batch is accounted for."""
        for b in self._batches:
            if b.error is not None:
                logger.warning("results of %s not acknowledged: %s", b.describe(), b.error)
                return False
        self._batches.clear()
        return True

    def _wait_for(self, batch: Batch) -> bool:
        """Wait for ``batch`` to settle, at most the producer's delivery timeout; False if it did not.

        Alive while waiting (a restart would not bring the broker back), and a broker that has
        not answered for a while is counted and reported, once per interval.
        """
        if not batch.settled.is_set():
            self._committer.hurry(batch)
        waited = 0.0
        while not batch.settled.wait(min(ACK_REPORT_SECONDS, self._ack_timeout - waited)):
            waited += ACK_REPORT_SECONDS
            if waited >= self._ack_timeout:
                return False
            self._health.beat()
            self._metrics.broker_errors.labels(stage="produce").inc()
            if self._trouble.throttle.ready("ack"):
                logger.warning("results of %s not acknowledged after %.0fs; still waiting (reported once per %.0fs)",
                               batch.describe(), waited, TROUBLE_LOG_INTERVAL)  # fmt: skip
        return True
