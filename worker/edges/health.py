"""What the probes report: the loop's heartbeat, the serving model, the partitions owned.

``/healthz`` is the heartbeat within the stall bound; ``/readyz`` a model loaded whose files are
still on disk and at least one partition. The pipeline writes this state; the HTTP server
(``health_server.py``) reads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class HealthState:
    """What the probes report, updated by the loop (plain attribute writes: cheap, thread-safe enough)."""

    def __init__(self, stall_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_seconds = stall_seconds
        self._clock = clock
        self.last_beat = clock()
        self.model_version: str | None = None
        self.partitions = 0
        # Says why the serving model's files are gone from disk, or None (ModelWatcher.files_problem).
        self.model_check: Callable[[], str | None] | None = None

    def beat(self) -> None:
        self.last_beat = self._clock()

    def healthz(self) -> tuple[int, dict]:
        idle = self._clock() - self.last_beat
        if idle > self.stall_seconds:
            return 503, {"status": "stalled", "seconds_since_poll": round(idle, 1), "bound": self.stall_seconds}
        return 200, {"status": "ok", "seconds_since_poll": round(idle, 1)}

    def readyz(self) -> tuple[int, dict]:
        if self.model_version is None:
            return 503, {"status": "not ready", "reason": "no model loaded"}
        problem = self.model_check() if self.model_check is not None else None
        if problem is not None:
            return 503, {
                "status": "not ready",
                "reason": f"model removed: {problem}",
                "model_version": self.model_version,
            }
        if self.partitions == 0:
            return 503, {"status": "not ready", "reason": "no partitions assigned", "model_version": self.model_version}
        return 200, {"status": "ready", "model_version": self.model_version, "partitions": self.partitions}
