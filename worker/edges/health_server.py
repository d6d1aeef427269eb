"""``/metrics``, ``/healthz`` and ``/readyz`` on a small HTTP server of a few threads.

``/healthz``: the loop is alive (it polled, or stepped through a retry, within the stall bound).
``/readyz``: a model is loaded, its files are still in the models directory (so a restart or a
new replica could start) and this worker owns partitions. Each answers with a short JSON reason,
so ``curl`` says why a probe fails.

The server (``HealthServer``) costs a fixed number of threads however many clients connect. One
thread (``fraud-health``) accepts connections and reads request heads without blocking; it answers
a complete ``/healthz`` head itself (a read of the heartbeat, so it never queues behind a slow
``/metrics`` or a ``/readyz`` stuck on a hung models directory) and hands any other to one of
``workers`` handler threads, which answers it and hands a keep-alive connection back. So a
connection that never finishes its request holds no thread, only a socket: at most
``max_connections`` are open, each must deliver its whole request head within ``head_timeout``
seconds (however slowly its bytes come), and an idle keep-alive connection is closed after
``keepalive_timeout``. When the cap is full, a new connection takes the place of the one that has
waited longest for its request; a probe sends its request as soon as it connects, so a flood of
unfinished connections cannot starve ``/healthz``. Dropped connections are counted by reason
(``DROP_REASONS``) in ``fraud_health_connections_dropped_total``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import queue
import select
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from worker.edges.health import HealthState

logger = logging.getLogger(__name__)

HEAD_TIMEOUT = 5.0  # seconds for a whole request head, from connect (or its first byte after a keep-alive idle)
KEEPALIVE_TIMEOUT = 75.0  # idle keep-alive: longer than a 1-minute scrape interval, so Prometheus reuses it
MAX_CONNECTIONS = 64  # open at once, idle or answering
WORKERS = 4  # handler threads: a response takes a millisecond or two, and waits at most WRITE_TIMEOUT
WRITE_TIMEOUT = 5.0  # for a whole response to a client that does not read it
MAX_HEAD = 16 * 1024  # a probe's or a scrape's head is a few hundred bytes
READ_SIZE = 4096
ACCEPT_BURST = 16  # accepts per round: a quarter of the cap, so a new connection outlives three bursts
ACCEPT_PAUSE = 0.1
# Why a connection was closed before it delivered a request (fraud_health_connections_dropped_total{reason}):
# no complete head within head_timeout; its place taken by a new connection when the cap was full; a head over MAX_HEAD.
DROP_REASONS = ("timeout", "cap", "too_large")


class HealthServer:
    """Serves the registry and the probes until ``close``; port 0 picks a free port (see ``port``).

    ``dropped`` (``fraud_health_connections_dropped_total``) counts, by reason, the connections closed
    before they delivered a complete request.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        state: HealthState,
        dropped: Counter | None = None,
        *,
        head_timeout: float = HEAD_TIMEOUT,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        workers: int = WORKERS,
    ) -> None:
        self._handler = type("Handler", (_Handler,), {"registry": registry, "state": state})
        self._dropped = {r: dropped.labels(reason=r) for r in DROP_REASONS} if dropped is not None else {}
        self.head_timeout, self.keepalive_timeout = head_timeout, keepalive_timeout
        self.max_connections = max_connections
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            # A long accept queue: a full one drops a probe's SYN, and the client resends it only after 1 s.
            self._listener.listen(socket.SOMAXCONN)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        # poll(), not epoll: registering and unregistering make no system call. Under a flood each
        # system call gives the GIL up, and taking it back may wait for the scoring thread, so the
        # accept thread makes as few as it can: accept, close, and a recv only when bytes came.
        self._poll = select.poll()
        self._waiting: dict[int, _Conn] = {}  # by file descriptor; no complete head yet; oldest first
        self._busy = 0  # handed to the handler threads, not yet handed back
        self._accepting = False
        self._resume_at: float | None = None  # when to accept again after accept() failed
        self._ready: queue.SimpleQueue[_Conn | None] = queue.SimpleQueue()
        self._returned: queue.SimpleQueue[tuple[_Conn, bool]] = queue.SimpleQueue()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="fraud-health", daemon=True)
        self._workers = [
            threading.Thread(target=self._work, name=f"fraud-health-{i + 1}", daemon=True) for i in range(workers)
        ]

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def start(self) -> HealthServer:
        for worker in self._workers:
            worker.start()
        self._thread.start()
        logger.info("metrics and health on http://%s:%s/", self._listener.getsockname()[0], self.port)
        return self

    def close(self) -> None:
        """Stop serving and close every connection, idle or not (a response being sent may take up to 5 s)."""
        self._closing = True
        self._wake()
        if self._thread.ident is not None:  # started: the accept thread closes its sockets as it ends
            self._thread.join()
        else:
            self._shut()
        for _ in self._workers:
            self._ready.put(None)
        for worker in self._workers:
            if worker.is_alive():
                worker.join()
        for pending in (self._ready, self._returned):
            while not pending.empty():
                item = pending.get_nowait()
                if item is not None:
                    _close((item if isinstance(item, _Conn) else item[0]).sock)
        self._wake_r.close()
        self._wake_w.close()

    # The accept thread: everything below up to _work runs on it alone, so it needs no lock.

    def _run(self) -> None:
        self._poll.register(self._wake_r, select.POLLIN)
        self._listen(True)
        listener, wake = self._listener.fileno(), self._wake_r.fileno()
        try:
            while not self._closing:
                timeout = max(0.0, self._next_deadline() - time.monotonic())
                fds = [fd for fd, _ in self._poll.poll(math.ceil(timeout * 1000))]
                if listener in fds:  # first: what the burst evicts needs no read, and what the last
                    self._accept()  # burst took is among the newest, so it is read below
                if wake in fds:
                    _drain(self._wake_r)
                for fd in fds:
                    conn = self._waiting.get(fd)
                    if conn is not None:
                        self._read(conn)
                self._take_back()
                now = time.monotonic()
                if self._resume_at is not None and now >= self._resume_at:
                    self._resume_at = None
                    self._listen(True)
                self._expire(now)
        except Exception:  # noqa: BLE001 - the probes are gone: say so loudly, a liveness probe will restart us
            logger.exception("health server stopped")
        finally:
            self._shut()

    def _shut(self) -> None:
        for conn in list(self._waiting.values()):
            self._forget(conn)
            _close(conn.sock)
        self._listener.close()

    def _listen(self, on: bool) -> None:
        if on and not self._accepting:
            self._poll.register(self._listener, select.POLLIN)
        elif not on and self._accepting:
            self._poll.unregister(self._listener)
        self._accepting = on

    def _accept(self) -> None:
        # A bounded burst per round, so the heads of the connections just taken are read before
        # the next burst could evict them.
        for _ in range(ACCEPT_BURST):
            full = len(self._waiting) + self._busy >= self.max_connections
            if full and not self._waiting:  # every slot is answering a request: leave the rest queued
                self._listen(False)
                return
            try:
                sock, _ = self._listener.accept()  # blocking (not inherited); read with MSG_DONTWAIT
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # reset while it waited in the queue
                continue
            except OSError as exc:  # e.g. out of file descriptors: pause rather than spin on it
                logger.warning("health server: accept failed, pausing for %.1fs: %s", ACCEPT_PAUSE, exc)
                self._listen(False)
                self._resume_at = time.monotonic() + ACCEPT_PAUSE
                return
            if full:
                self._drop(next(iter(self._waiting.values())), "cap")
            conn = _Conn(sock, time.monotonic() + self.head_timeout)
            self._wait(conn)

    def _wait(self, conn: _Conn) -> None:
        self._waiting[conn.fd] = conn
        self._poll.register(conn.fd, select.POLLIN)

    def _forget(self, conn: _Conn) -> None:
        del self._waiting[conn.fd]
        self._poll.unregister(conn.fd)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(READ_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._forget(conn)
            _close(conn.sock)
            return
        if conn.idle:  # the next request on a keep-alive connection: its head has head_timeout from now
            conn.idle = False
            conn.deadline = time.monotonic() + self.head_timeout
        conn.buf += data
        if _head_complete(conn.buf):
            self._forget(conn)
            self._dispatch(conn)
        elif len(conn.buf) > MAX_HEAD:
            self._drop(conn, "too_large")

    def _dispatch(self, conn: _Conn) -> None:
        """Answer the complete heads in ``conn.buf``: ``/healthz`` here, anything else on a handler thread.

        ``/healthz`` only reads the loop's heartbeat, so answering it here costs microseconds and it
        never queues behind a slow ``/metrics`` or a ``/readyz`` stuck on a hung models directory.
        """
        while _head_complete(conn.buf):
            if not conn.buf.startswith(_LIVENESS):
                self._busy += 1
                self._ready.put(conn)
                return
            try:
                keep = self._answer(conn, wait=False)
            except Exception:  # noqa: BLE001 - a bad request must not stop the accept thread
                logger.exception("health server: request failed")
                keep = False
            if not keep:
                _close(conn.sock)
                return
        conn.idle = not conn.buf
        conn.deadline = time.monotonic() + (self.keepalive_timeout if conn.idle else self.head_timeout)
        self._wait(conn)

    def _take_back(self) -> None:
        while True:
            try:
                conn, keep = self._returned.get_nowait()
            except queue.Empty:
                return
            self._busy -= 1
            self._listen(True)
            if keep:
                self._dispatch(conn)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._waiting.values() if c.deadline <= now]:
            if conn.idle:  # a keep-alive connection left unused: closing it is the normal end
                self._forget(conn)
                _close(conn.sock)
            else:
                self._drop(conn, "timeout")

    def _next_deadline(self) -> float:
        soonest = min((c.deadline for c in self._waiting.values()), default=math.inf)
        return min(soonest, self._resume_at or math.inf, time.monotonic() + 1.0)

    def _drop(self, conn: _Conn, reason: str) -> None:
        """Close a connection that did not deliver a request; one that began a head is told why, unless
        it only lost its place under the cap (in a flood that answer would cost a system call each)."""
        self._forget(conn)
        if conn.buf and reason != "cap":
            try:
                conn.sock.send(_REFUSALS[reason], socket.MSG_DONTWAIT)
            except OSError:
                pass
        counter = self._dropped.get(reason)
        if counter is not None:  # counted before the close, so whoever sees the close sees the count
            counter.inc()
        _close(conn.sock)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (a wake-up is pending anyway) or closed
            pass

    # The handler threads.

    def _work(self) -> None:
        while True:
            conn = self._ready.get()
            if conn is None:
                return
            keep = False
            if not self._closing:
                try:
                    keep = self._answer(conn)
                except Exception:  # noqa: BLE001 - one bad request must not take a handler thread away
                    logger.exception("health server: request failed")
            if not keep:
                _close(conn.sock)
            self._returned.put((conn, keep))
            self._wake()

    def _answer(self, conn: _Conn, wait: bool = True) -> bool:
        """Answer the request at the head of ``conn.buf``; True when the connection stays open.

        ``wait=False`` (the accept thread) sends without blocking: a short answer fits in the socket's
        buffer unless the client has stopped reading, and then the connection is closed instead.
        """
        rfile, wfile = io.BytesIO(bytes(conn.buf)), io.BytesIO()
        handler = self._handler((rfile, wfile), _peer(conn.sock), self)
        conn.buf = bytearray(rfile.read())  # what came after the head: the start of the next request
        data = wfile.getvalue()
        try:
            if wait:
                conn.sock.settimeout(WRITE_TIMEOUT)  # for the whole response (sendall), not per send
                conn.sock.sendall(data)
                conn.sock.settimeout(None)
            elif conn.sock.send(data, socket.MSG_DONTWAIT) < len(data):
                return False
        except OSError:
            return False
        # An HTTP/0.9-style request line (two words) got a bare body, with no length to delimit it:
        # never kept open, even when its headers ask for keep-alive (http.server honours them).
        return not handler.close_connection and not self._closing and handler.request_version != "HTTP/0.9"


class _Conn:
    """A client connection and the bytes of its request head so far."""

    __slots__ = ("sock", "fd", "deadline", "buf", "idle")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.deadline = deadline  # for the whole head, or for the first byte of the next one when idle
        self.buf = bytearray()
        self.idle = False  # kept alive after a response, nothing of the next request yet


_LIVENESS = (b"GET /healthz ", b"GET /healthz?")


def _head_complete(buf: bytearray) -> bool:
    return b"\r\n\r\n" in buf or b"\n\n" in buf  # http.server accepts bare LF line ends too


def _refusal(status: HTTPStatus) -> bytes:
    return f"HTTP/1.1 {status.value} {status.phrase}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".encode()


_REFUSALS = {
    "timeout": _refusal(HTTPStatus.REQUEST_TIMEOUT),
    "too_large": _refusal(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE),
}


def _peer(sock: socket.socket) -> tuple[str, int]:
    try:
        return sock.getpeername()
    except OSError:
        return ("-", 0)


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    """Answers one request read from ``rfile`` into ``wfile`` (in-memory files; the server does the I/O)."""

    registry: CollectorRegistry
    state: HealthState
    protocol_version = "HTTP/1.1"  # keep-alive for HTTP/1.1 clients (every response has a Content-Length)

    def setup(self) -> None:
        self.rfile, self.wfile = self.request

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def finish(self) -> None:
        pass

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
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - probes every few seconds: keep quiet
        logger.debug("%s " + format, self.address_string(), *args)
