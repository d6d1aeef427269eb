"""The health server's request parser (worker/edges/health.py): generated request heads, pipelined and
malformed, answered by the server's own ``_answer`` on a socket pair, the way its accept thread
and handler threads answer a connection's buffered bytes, on one TCP connection to itself.

Contract: answering a head raises nothing, consumes at least the head it answered (the dispatch
loop always progresses), and a connection stays open only after an HTTP/1.x response (``HTTP/1.x
NNN``); anything else (a malformed request line, which http.server answers with a bare error body
or nothing) closes it.
"""

from __future__ import annotations

import re
import select
import socket
import time
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from fuzz.gen import CONTROL, Mutator, example_strategy

NAME = "health"
MIN_INPUTS = 10_000
EXAMPLES = 6_500  # ~1.7 requests each
MEMORY_BYTES = 32 << 20
STATUS = re.compile(rb"HTTP/1\.[01] \d{3} ")
PATHS = ("/healthz", "/readyz", "/metrics", "/healthz?x=1", "/nope", "/", "*", "", "/%00", "/\x1b[2J", "//healthz",
         "/healthz#", "/" + "a" * 70_000, "http://x/healthz", "/healthz?" + "&" * 5000)  # fmt: skip
METHODS = ("GET", "GET", "GET", "HEAD", "POST", "PUT", "get", "", "GET GET", "\x00GET", "CONNECT")
VERSIONS = ("HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.1x", "HTTP/99999999999999999999.1",
            "HTTP/1.-1", "http/1.1", "", "HTTP/1.1 extra")  # fmt: skip
HEADERS = ("Host: x", "Connection: close", "Connection: keep-alive", "Content-Length: 5", "Content-Length: -1",
           "Content-Length: 99999999999999999999", "Transfer-Encoding: chunked", "Expect: 100-continue",
           "X: " + "y" * 70_000, ": novalue", "NoColon", " folded", "X-\x1b: \x00", "Host: \udc80")  # fmt: skip


def strategy() -> st.SearchStrategy:
    return st.tuples(example_strategy, st.integers(1, 3))


def inputs_of(example: Any) -> int:
    return int(example[1])


def setup(workdir: Path) -> Any:
    from prometheus_client import CollectorRegistry, Counter

    from worker.edges.health import HealthState
    from worker.edges.health_server import HealthServer

    registry = CollectorRegistry()
    Counter("fuzz_requests", "a sample for /metrics", registry=registry).inc()
    state = HealthState(30.0)
    state.beat()
    server = HealthServer("127.0.0.1", 0, registry, state)  # bound, never started: _answer only
    # A TCP pair, as the server's connections are (a peer address is a (host, port) pair).
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    theirs.setblocking(False)
    return server, ours, theirs


def teardown(context: Any) -> None:
    server, ours, theirs = context
    server.close()
    ours.close()
    theirs.close()


def _request(m: Mutator) -> bytes:
    rng = m.rng
    words = (rng.choice(METHODS), rng.choice(PATHS), rng.choice(VERSIONS))
    line = " ".join(x for x in words if x or rng.random() < 0.3)
    headers = [rng.choice(HEADERS) for _ in range(rng.choice((0, 1, 2, 5, 120)))]
    eol = rng.choice(("\r\n", "\r\n", "\n", "\r"))
    text = eol.join([line, *headers]) + eol + eol
    if rng.random() < 0.1:
        text = rng.choice(CONTROL) + text
    data = text.encode("utf-8", "surrogatepass")
    return m.bytes_mutation(data) if rng.random() < 0.2 else data


def check(context: Any, example: Any) -> int:
    from worker.edges.health_server import _Conn, _head_complete

    server, ours, theirs = context
    (seed, extra), count = example
    m = Mutator(seed, extra)
    requests = [_request(m) for _ in range(count)]
    conn = _Conn(ours, time.monotonic() + 5)
    conn.buf = bytearray(b"".join(requests))
    answered = 0
    while _head_complete(conn.buf):
        before = len(conn.buf)
        keep = server._answer(conn, wait=False)
        answered += 1
        assert len(conn.buf) < before, "the answer consumed nothing: the dispatch loop would spin"
        response = _drain(theirs)
        if keep:
            assert STATUS.match(response), f"kept open after {response[:80]!r}"
        else:
            break
        assert answered <= count * 2 + 2, "more answers than requests"
    return count


def _drain(sock: socket.socket) -> bytes:
    """What the server wrote: the first bytes waited for (loopback delivery is not instant), the rest read
    until the socket is empty; an answer ends with its body, so a short wait after it is enough."""
    chunks = []
    wait = 0.05
    while select.select([sock], [], [], wait)[0]:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        wait = 0.002
    return b"".join(chunks)
