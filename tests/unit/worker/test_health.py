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


def test_readyz_fails_when_the_serving_model_is_removed_from_disk(models):
    from worker.models import ModelWatcher

    watcher = ModelWatcher(str(models), WorkerMetrics(CollectorRegistry()))
    watcher.load_initial()
    state = HealthState(stall_seconds=10)
    state.model_version, state.partitions, state.model_check = "v1", 1, watcher.files_problem
    assert state.readyz()[0] == 200
    (models / "CURRENT").rename(models / "CURRENT.away")
    code, body = state.readyz()
    assert code == 503 and "CURRENT is missing" in body["reason"] and body["model_version"] == "v1"
    (models / "CURRENT.away").rename(models / "CURRENT")
    assert state.readyz()[0] == 200
    (models / "v1" / "model.tflite").unlink()
    code, body = state.readyz()
    assert code == 503 and "model.tflite of the serving model is missing" in body["reason"]
    assert state.healthz()[0] == 200  # still alive and scoring with the model in memory: do not restart it
