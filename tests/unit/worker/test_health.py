"""/metrics, /healthz and /readyz answer with the state the loop reports."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry

from worker.health import HealthServer, HealthState
from worker.metrics import WorkerMetrics


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_probes_and_metrics():
    registry, clock = CollectorRegistry(), Clock()
    WorkerMetrics(registry).events_consumed.inc(3)
    state = HealthState(stall_seconds=10, clock=clock)
    server = HealthServer("127.0.0.1", 0, registry, state).start()
    try:
        port = server.port
        assert _get(port, "/healthz")[0] == 200
        code, body = _get(port, "/readyz")
        assert code == 503 and json.loads(body)["reason"] == "no model loaded"
        state.model_version = "v1"
        code, body = _get(port, "/readyz")
        assert code == 503 and json.loads(body)["reason"] == "no partitions assigned"
        state.partitions = 2
        code, body = _get(port, "/readyz")
        assert code == 200 and json.loads(body) == {"status": "ready", "model_version": "v1", "partitions": 2}
        clock.now += 11
        code, body = _get(port, "/healthz")
        assert code == 503 and json.loads(body)["status"] == "stalled"
        state.beat()
        assert _get(port, "/healthz")[0] == 200
        code, text = _get(port, "/metrics")
        assert code == 200 and "fraud_events_consumed_total 3.0" in text
        assert _get(port, "/nope")[0] == 404
    finally:
        server.close()
