"""``/metrics``, ``/healthz`` and ``/readyz`` on a small HTTP server in a daemon thread.

``/healthz``: the loop is alive (it polled, or stepped through a retry, within the stall bound).
``/readyz``: a model is loaded, its files are still in the models directory (so a restart or a
new replica could start) and this worker owns partitions. Each answers with a short JSON reason,
so ``curl`` says why a probe fails.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

logger = logging.getLogger(__name__)


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


class HealthServer:
    """Serves the registry and the probes until ``close``; port 0 picks a free port (see ``port``)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, state: HealthState) -> None:
        handler = type("Handler", (_Handler,), {"registry": registry, "state": state})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fraud-health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        logger.info("metrics and health on http://%s:%s/", self._server.server_address[0], self.port)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    state: HealthState

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._json(*self.state.healthz())
        elif path == "/readyz":
            self._json(*self.state.readyz())
        else:
            self._json(404, {"status": "not found", "paths": ["/metrics", "/healthz", "/readyz"]})

    def _json(self, code: int, body: dict) -> None:
        self._send(code, (json.dumps(body) + "\n").encode(), "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - probes every few seconds: keep quiet
        logger.debug("%s " + format, self.address_string(), *args)
