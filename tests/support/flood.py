"""Connections that never finish a request, and a probe that times ``/healthz`` meanwhile."""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from tests.support.broker import REPO

PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: flood\r\nUser-Agent: flood\r\n"


class Flood(threading.Thread):
    """Opens ``n`` connections to ``port`` in a loop, none finishing its request head.

    Connection ``i`` sends nothing (``i % 3 == 0``), half a head at once (1) or its head one byte per
    ``trickle`` seconds (2, a slowloris client). After the last one it goes on trickling for ``hold``
    seconds, then closes what is still open. ``opened``: connections made; ``refused``: connects that
    failed or timed out.
    """

    def __init__(self, port: int, n: int = 2000, hold: float = 2.0, trickle: float = 1.0) -> None:
        super().__init__(name="flood", daemon=True)
        self.port, self.n, self.hold, self.trickle = port, n, hold, trickle
        self.opened = self.refused = 0
        self.error: BaseException | None = None
        self._open: list[socket.socket] = []
        self._slow: dict[socket.socket, tuple[int, float]] = {}  # bytes sent, when the next is due

    def run(self) -> None:
        try:
            for i in range(self.n):
                self._connect(i % 3)
                if i % 20 == 0:
                    self._drip()
            end = time.monotonic() + self.hold
            while time.monotonic() < end:
                self._drip()
                time.sleep(0.02)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc
        finally:
            for sock in self._open:
                sock.close()

    def finish(self, timeout: float = 60.0) -> None:
        self.join(timeout)
        assert not self.is_alive() and self.error is None, self.error

    def _connect(self, kind: int) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            self.refused += 1
            return
        self.opened += 1
        self._open.append(sock)
        try:
            if kind == 1:
                sock.sendall(PARTIAL_HEAD[: len(PARTIAL_HEAD) // 2])
            elif kind == 2:
                self._slow[sock] = (0, time.monotonic())
        except OSError:
            pass

    def _drip(self) -> None:
        now = time.monotonic()
        for sock, (sent, due) in list(self._slow.items()):
            if due > now:
                continue
            try:
                sock.send(PARTIAL_HEAD[sent % len(PARTIAL_HEAD) : sent % len(PARTIAL_HEAD) + 1])
            except OSError:  # the server closed it
                del self._slow[sock]
                continue
            self._slow[sock] = (sent + 1, now + self.trickle)


@dataclass
class Probes:
    """``/healthz`` latencies (seconds, one fresh connection each, as a kubelet probes) and thread counts."""

    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)

    @property
    def p95(self) -> float:
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(len(lat) * 0.95))]

    def summary(self) -> str:
        lat = sorted(self.latencies)
        return (
            f"{len(lat)} probes: max {lat[-1] * 1000:.1f} ms, p95 {self.p95 * 1000:.1f} ms, "
            f"p50 {lat[len(lat) // 2] * 1000:.1f} ms; "
            f"threads max {max(self.threads)}"
        )


def probe_while(running: threading.Thread, port: int, threads_of: int | str = "self", every: float = 0.02) -> Probes:
    """Time ``GET /healthz`` on ``port`` and count the threads of process ``threads_of`` until ``running`` ends."""
    out = Probes()
    while running.is_alive():
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            resp.read()
            out.statuses.append(resp.status)
        except OSError:
            out.statuses.append(0)
        finally:
            conn.close()
        out.latencies.append(time.perf_counter() - t0)
        out.threads.append(thread_count(threads_of))
        time.sleep(every)
    return out


def thread_count(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads line")


def flood_and_probe(
    port: int, threads_of: int | str = "self", n: int = 2000, hold: float = 2.0
) -> tuple[Flood, Probes]:
    """Run a ``Flood`` of ``n`` connections against ``port`` and probe ``/healthz`` until it ends."""
    flood = Flood(port, n=n, hold=hold)
    flood.start()
    probes = probe_while(flood, port, threads_of)
    flood.finish()
    return flood, probes


def flood_elsewhere(port: int, pid: int, n: int = 2000, hold: float = 2.0) -> tuple[int, int, Probes]:
    """``flood_and_probe`` from a process of its own, as a kubelet probes from outside the worker's process
    (and without the GIL of a test process that is also producing events): (opened, refused, probes)."""
    cmd = [sys.executable, "-m", "tests.support.flood", str(port), str(pid), f"--connections={n}", f"--hold={hold}"]
    out = json.loads(subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True, timeout=300).stdout)
    return out["opened"], out["refused"], Probes(out["latencies"], out["statuses"], out["threads"])


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.support.flood PORT PID``: ``flood_and_probe``, printed as one JSON object."""
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("pid", type=int, help="the process whose threads to count")
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--hold", type=float, default=2.0)
    args = parser.parse_args(argv)
    flood, probes = flood_and_probe(args.port, args.pid, args.connections, args.hold)
    print(json.dumps({"opened": flood.opened, "refused": flood.refused, "latencies": probes.latencies,
                      "statuses": probes.statuses, "threads": probes.threads}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
