#!/usr/bin/env python3
"""Ask a Kafka broker for cluster metadata; exit 0 once it answers with at least one broker.

Standard library only, so scripts/local-kafka can use it before any virtualenv exists.
Usage: kafka_probe.py HOST:PORT [--wait SECONDS] [--tls-cafile CA.pem]
Speaks ApiVersions v0 (to learn what the broker accepts) then Metadata v4..v8, whose leading
fields (throttle time, broker list) share one layout. With --tls-cafile (a SASL_SSL listener) it
connects over TLS, checking the broker's certificate against that CA, and stops after ApiVersions,
the one request a SASL listener answers before authentication: the listener is up and serving TLS.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import struct
import sys
import time

API_VERSIONS, METADATA = 18, 3


def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    client = b"local-kafka-probe"
    header = struct.pack(">hhih", api_key, version, corr, len(client)) + client
    msg = header + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    size = struct.unpack(">i", _read(sock, 4))[0]
    payload = _read(sock, size)
    if struct.unpack(">i", payload[:4])[0] != corr:
        raise OSError("correlation id mismatch")
    return payload[4:]


def _read(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf


def probe(host: str, port: int, timeout: float = 2.0, tls_cafile: str | None = None) -> int:
    """Number of brokers in the metadata answer (raises OSError when there is no answer).

    Over TLS (``tls_cafile``): 1 once the listener answers ApiVersions.
    """
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock = raw
        if tls_cafile:
            sock = ssl.create_default_context(cafile=tls_cafile).wrap_socket(raw, server_hostname=host)
        sock.settimeout(timeout)
        resp = _request(sock, API_VERSIONS, 0, 1, b"")
        error, n = struct.unpack(">hi", resp[:6])
        if error:
            raise OSError(f"ApiVersions error {error}")
        if tls_cafile:
            return 1
        ranges = {}
        for i in range(n):
            key, lo, hi = struct.unpack(">hhh", resp[6 + 6 * i : 12 + 6 * i])
            ranges[key] = (lo, hi)
        lo, hi = ranges.get(METADATA, (0, -1))
        version = max(lo, 4)
        if version > min(hi, 8):
            raise OSError(f"broker offers Metadata v{lo}..v{hi}, probe speaks v4..v8")
        body = struct.pack(">i", -1) + b"\x00"  # all topics; no auto-creation
        if version >= 8:
            body += b"\x00\x00"  # include cluster / topic authorized operations: false
        resp = _request(sock, METADATA, version, 2, body)
        return struct.unpack(">i", resp[4:8])[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("address", help="HOST:PORT")
    ap.add_argument("--wait", type=float, default=0.0, help="keep trying for this many seconds")
    ap.add_argument("--tls-cafile", help="connect over TLS, trusting this CA (PEM); ApiVersions only")
    args = ap.parse_args()
    host, _, port = args.address.rpartition(":")
    deadline = time.monotonic() + args.wait
    while True:
        try:
            brokers = probe(host, int(port), tls_cafile=args.tls_cafile)
            if brokers > 0:
                print(f"{args.address}: metadata lists {brokers} broker(s)")
                return 0
        except OSError as exc:
            last = exc
        if time.monotonic() >= deadline:
            print(
                f"{args.address}: no metadata answer ({last if 'last' in locals() else 'no brokers'})", file=sys.stderr
            )
            return 1
        time.sleep(0.25)


if __name__ == "__main__":
    sys.exit(main())
