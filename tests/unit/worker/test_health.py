"""/metrics, /healthz and /readyz answer with the state the loop reports, and keep answering under a flood
of connections that never finish a request (a real server on port 0)."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from tests.support.flood import PARTIAL_HEAD, Flood, probe_while, thread_count
from worker.edges.health import HealthState
from worker.edges.health_server import DROP_REASONS, WORKERS, HealthServer
from worker.edges.metrics import WorkerMetrics


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
    from worker.models.watcher import ModelWatcher

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


def _server(registry: CollectorRegistry | None = None, **limits) -> tuple[HealthServer, CollectorRegistry]:
    registry = registry or CollectorRegistry()
    metrics = WorkerMetrics(registry)
    server = HealthServer("127.0.0.1", 0, registry, HealthState(stall_seconds=30),
                          metrics.health_connections_dropped, **limits)  # fmt: skip
    return server.start(), registry


def _dropped(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("fraud_health_connections_dropped_total", {"reason": reason})


def _read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    sock.settimeout(timeout)
    out = b""
    try:
        while chunk := sock.recv(4096):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def _eventually(check, timeout: float = 5.0) -> bool:
    """True once ``check()`` is, polling: the server counts a drop on its own thread, as it closes."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _server_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("fraud-health")]


def test_a_flood_of_unfinished_connections_holds_no_thread_and_healthz_keeps_answering():
    server, registry = _server()
    try:
        threads_serving = thread_count()
        flood = Flood(server.port, n=2000, hold=2.0)
        flood.start()
        probes = probe_while(flood, server.port)
        flood.finish()
        print(f"\n{flood.opened} unfinished connections: {probes.summary()} (serving: {threads_serving})")
        assert flood.opened == 2000 and flood.refused == 0
        assert set(probes.statuses) == {200} and len(probes.latencies) >= 20
        # 95 % within 100 ms, each within 250 ms: tests/integration/test_health_flood.py says why not all
        # within 100 ms on a 2-core machine (measured here: slowest 5 to 46 ms, over 100 ms once in ~100 runs).
        assert probes.p95 < 0.100 and max(probes.latencies) < 0.250, probes.summary()
        assert max(probes.threads) <= threads_serving + 1, probes.summary()  # + the flood's own thread
        # Beyond the cap each new connection took the place of the oldest waiting one.
        assert _dropped(registry, "cap") >= 2000 - server.max_connections
        assert len(_server_threads()) == 1 + WORKERS
    finally:
        server.close()


def test_a_request_head_not_finished_within_the_head_timeout_is_dropped():
    server, registry = _server(head_timeout=0.5)
    try:
        silent = socket.create_connection(("127.0.0.1", server.port))
        partial = socket.create_connection(("127.0.0.1", server.port))
        partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        slow = socket.create_connection(("127.0.0.1", server.port))
        t0 = time.monotonic()
        for i in range(len(PARTIAL_HEAD)):  # a byte every 50 ms: the head's timeout holds as bytes keep coming
            if select.select([slow], [], [], 0.05)[0]:  # the server answered (and closed)
                break
            slow.sendall(PARTIAL_HEAD[i : i + 1])
        took = time.monotonic() - t0
        assert _read_until_closed(slow).startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert 0.45 < took < 1.5, f"the slow head was dropped after {took:.2f}s"
        assert _read_until_closed(partial).startswith(b"HTTP/1.1 408 ")
        assert _read_until_closed(silent) == b""  # it asked nothing: nothing to answer
        assert _dropped(registry, "timeout") == 3
        for sock in (silent, partial, slow):
            sock.close()
    finally:
        server.close()


def test_keep_alive_serves_request_after_request_on_one_connection_and_closes_it_when_idle():
    server, registry = _server(keepalive_timeout=0.5)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.connect()
        sock = conn.sock
        for path in ("/metrics", "/healthz", "/metrics", "/readyz"):  # a scrape, as Prometheus sends it
            conn.request("GET", path, headers={"Accept": "text/plain;version=0.0.4", "Accept-Encoding": "gzip"})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status in (200, 503) and not resp.will_close, path
            assert path != "/metrics" or b"fraud_health_connections_dropped_total" in body
            assert conn.sock is sock, path  # the same connection all along
        # Two requests in one write (pipelined): two answers, in order.
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answers = _read_until_closed(sock)
        assert answers.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 404 " in answers
        assert answers.count(b"HTTP/1.1 ") == 2 and b"Connection: close" in answers

        idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        idle.request("GET", "/healthz")
        assert idle.getresponse().read()
        t0 = time.monotonic()
        assert _read_until_closed(idle.sock) == b""
        assert 0.3 < time.monotonic() - t0 < 2.0
        idle.close()
        conn.close()
        assert sum(_dropped(registry, r) for r in DROP_REASONS) == 0  # a keep-alive ending idle is no drop
    finally:
        server.close()


def test_past_the_cap_a_new_connection_takes_the_place_of_the_oldest_waiting_one():
    server, registry = _server(max_connections=4)
    try:
        waiting = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
        deadline = time.monotonic() + 10
        while len(server._waiting) < 4:  # all four accepted (a loaded machine may take longer than a moment)
            assert time.monotonic() < deadline, "the server did not accept four connections"
            time.sleep(0.01)
        assert _get(server.port, "/healthz")[0] == 200
        assert _read_until_closed(waiting[0]) == b""
        assert _eventually(lambda: _dropped(registry, "cap") == 1)
        huge = socket.create_connection(("127.0.0.1", server.port))
        huge.sendall(b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * (20 * 1024))
        assert _read_until_closed(huge).startswith(b"HTTP/1.1 431 ")
        assert _eventually(lambda: _dropped(registry, "too_large") == 1)  # counted as the server closes it
        for sock in [*waiting, huge]:
            sock.close()
    finally:
        server.close()


def test_close_ends_the_server_threads_and_every_connection_even_idle_ones():
    server, _ = _server()
    port = server.port
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    partial = socket.create_connection(("127.0.0.1", port))
    partial.sendall(b"GET /healthz HTTP/1.1\r\n")
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    kept.request("GET", "/healthz")
    assert kept.getresponse().read()
    time.sleep(0.2)
    t0 = time.monotonic()
    server.close()
    assert time.monotonic() - t0 < 1.0
    assert _server_threads() == []
    for sock in [*idle, partial, kept.sock]:
        assert _read_until_closed(sock, timeout=2) == b""
        sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_healthz_answers_while_every_handler_thread_is_stuck_on_a_readyz():
    release = threading.Event()
    state = HealthState(stall_seconds=30)
    state.model_version, state.partitions = "v1", 1
    state.model_check = lambda: None if release.wait(10) else "hung"  # as a read of a hung models mount would
    registry = CollectorRegistry()
    server = HealthServer("127.0.0.1", 0, registry, state).start()
    try:
        stuck = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(WORKERS + 2)]
        for sock in stuck:
            sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        t0 = time.perf_counter()
        assert _get(server.port, "/healthz")[0] == 200
        assert time.perf_counter() - t0 < 0.100
        release.set()
        for sock in stuck:
            sock.settimeout(5)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
            sock.close()
    finally:
        release.set()
        server.close()
