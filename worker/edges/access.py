"""Why the cluster refused this client, in one line: authentication, TLS trust, protocol, ACLs.

kafka-python reports a wrong password, an untrusted broker certificate or a plaintext client at a
TLS port only in its own log, and then raises "Unable to bootstrap" after its bootstrap timeout:
the same error as a broker that is down. After such a failure ``diagnose`` asks the bootstrap
server itself, with the client's own security settings and the standard library alone: TCP, then
TLS, then the SASL handshake and authentication (PLAIN and SCRAM; other mechanisms are not
probed). It returns what refused the client, or None when nothing did (the server cannot be
reached at all, or answers every step: the caller retries as for a broker that is down).
``refusal`` turns kafka-python's authorisation and authentication errors into the same kind of
line, and ``check_topics`` asks the broker what this client may do with each topic (the
authorised operations of a Metadata answer) before the first poll.

Nothing here shows a secret: the probe sends the password only inside the SASL exchange, and
every line is passed through ``credentials.redact``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import ssl
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from worker.edges.credentials import SECRET_KEYS, redact

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED, TOPIC_AUTHORIZATION_FAILED = 33, 58, 29
PROBE_TIMEOUT = 3.0
SCRAM_HASHES = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}


def diagnose(bootstrap_servers: str, options: Mapping[str, Any], timeout: float = PROBE_TIMEOUT) -> str | None:
    """What refused a client with these kafka-python ``options`` at the first reachable server, or None."""
    protocol = str(options.get("security_protocol") or "PLAINTEXT").upper()
    for address in _addresses(bootstrap_servers):
        try:
            socket.create_connection(address, timeout=timeout).close()
        except OSError:
            continue  # down or unreachable: not a refusal, try the next one
        try:
            problem = _probe(address, protocol, options, timeout)
        except (OSError, ValueError, struct.error):
            problem = None  # the server went away mid-probe: nothing to say
        return None if problem is None else redact(problem, _secrets(options))
    return None


def refusal(exc: BaseException, group_id: str | None = None) -> str | None:
    """A one-line description of a kafka-python refusal that retrying cannot cure, else None."""
    from kafka import errors

    detail = ", ".join(str(a) for a in exc.args if a) if exc.args else ""
    if isinstance(exc, errors.SaslAuthenticationFailedError):
        return f"authentication failed: {detail or exc}"
    if isinstance(exc, errors.UnsupportedSaslMechanismError):
        return f"the broker does not accept this SASL mechanism: {detail or exc}"
    if isinstance(exc, errors.GroupAuthorizationFailedError):
        return f"not authorised for consumer group {detail or group_id}: the principal needs READ on it"
    if isinstance(exc, errors.TransactionalIdAuthorizationFailedError):
        return f"not authorised for transactional id {detail or '(this one)'}: the principal needs WRITE on it"
    if isinstance(exc, errors.TopicAuthorizationFailedError):
        return f"not authorised for topic {detail or '(unnamed)'}"
    if isinstance(exc, errors.ClusterAuthorizationFailedError):
        return f"not authorised for a cluster operation: {detail or exc}"
    return None


def check_topics(
    admin_options: Mapping[str, Any], read: Sequence[str], write: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Ask the broker what this client may do: (topics it cannot read, topics it cannot write).

    Each entry is a line such as ``not authorised to read topic transactions``. A topic the client
    may not even describe is listed as such (the broker then does not say whether it exists); a
    topic that does not exist is left out (the caller handles missing topics as before).
    """
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(**admin_options)
    try:
        described = {t["name"]: t for t in admin.describe_topics(sorted(set(read) | set(write)))}
    finally:
        admin.close()
    lines: dict[str, list[str]] = {"read": [], "write": []}
    for need, topics in (("read", read), ("write", write)):
        for topic in topics:
            t = described.get(topic)
            if t is None:
                continue
            if t.get("error_code") == TOPIC_AUTHORIZATION_FAILED:
                lines[need].append(
                    f"not authorised for topic {topic} (not even to describe it; it needs {need.upper()})"
                )
                continue
            allowed = t.get("authorized_operations")
            if t.get("error_code") == 0 and allowed is not None and need.upper() not in allowed:
                lines[need].append(
                    f"not authorised to {need} topic {topic} (allowed: {', '.join(allowed) or 'nothing'})"
                )
    return lines["read"], lines["write"]


# -- the probe ----------------------------------------------------------------------------------


def _addresses(bootstrap_servers: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap_servers.split(","):
        host, _, port = item.strip().rpartition(":")
        if host and port.isdigit():
            out.append((host.strip("[]"), int(port)))
    return out


def _secrets(options: Mapping[str, Any]) -> Iterable[str]:
    return [str.__str__(v) for k, v in options.items() if k in SECRET_KEYS and isinstance(v, str)]


def _probe(address: tuple[str, int], protocol: str, options: Mapping[str, Any], timeout: float) -> str | None:
    where = f"{address[0]}:{address[1]}"
    tls = protocol in ("SSL", "SASL_SSL")
    if not tls and _speaks_tls(address, timeout):
        return (
            f"the listener at {where} speaks TLS but security_protocol is {protocol}: set "
            "FRAUD_KAFKA_SECURITY_PROTOCOL to SASL_SSL (or SSL) and FRAUD_KAFKA_SSL_CAFILE to the CA"
        )
    raw = socket.create_connection(address, timeout=timeout)
    try:
        sock: socket.socket = raw
        if tls:
            context = _ssl_context(options)
            try:
                sock = context.wrap_socket(raw, server_hostname=address[0])
            except ssl.SSLCertVerificationError as exc:
                cafile = options.get("ssl_cafile") or "the system's CA bundle"
                return (
                    f"certificate not trusted: the broker at {where} presented a certificate that fails "
                    f"verification against {cafile} ({exc.verify_message}); set FRAUD_KAFKA_SSL_CAFILE to its CA"
                )
            except (ssl.SSLError, OSError) as exc:
                return (
                    f"the TLS handshake with {where} failed ({exc.__class__.__name__}: {exc}): the listener may "
                    f"not be a TLS one while security_protocol is {protocol}"
                )
        sock.settimeout(timeout)
        sasl = protocol.startswith("SASL_")
        mechanism = str(options.get("sasl_mechanism") or "PLAIN").upper()
        offered = _handshake(sock, mechanism if sasl else "PLAIN")
        if not sasl:
            if offered is not None:
                return (
                    f"the listener at {where} expects SASL authentication ({', '.join(offered) or 'SASL'}) but "
                    f"security_protocol is {protocol}: use SASL_{'SSL' if tls else 'PLAINTEXT'} with the user's "
                    "credentials"
                )
            return None
        if offered is None:
            return f"the listener at {where} does not take SASL authentication but security_protocol is {protocol}"
        if mechanism not in offered:
            return f"the broker at {where} does not accept SASL mechanism {mechanism} (it offers {', '.join(offered)})"
        return _authenticate(sock, where, mechanism, options)
    finally:
        raw.close()


def _ssl_context(options: Mapping[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.get("ssl_cafile") or None)
    context.check_hostname = bool(options.get("ssl_check_hostname", True))
    if options.get("ssl_certfile"):
        context.load_cert_chain(
            options["ssl_certfile"], options.get("ssl_keyfile") or None, options.get("ssl_password") or None
        )
    return context


def _speaks_tls(address: tuple[str, int], timeout: float) -> bool:
    """True if a TLS handshake (no verification: only the protocol is in question) completes."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(address, timeout=timeout) as raw, context.wrap_socket(raw):
            return True
    except (ssl.SSLError, OSError):
        return False


def _handshake(sock: socket.socket, mechanism: str) -> list[str] | None:
    """SaslHandshake v1: the mechanisms the listener offers, or None if it takes no SASL (it hung up)."""
    try:
        resp = _request(sock, SASL_HANDSHAKE, 1, 1, _string(mechanism))
    except (OSError, struct.error):
        return None
    error, n = struct.unpack(">hi", resp[:6])
    offered, pos = [], 6
    for _ in range(max(0, n)):
        size = struct.unpack(">h", resp[pos : pos + 2])[0]
        offered.append(resp[pos + 2 : pos + 2 + size].decode())
        pos += 2 + size
    if error not in (0, UNSUPPORTED_SASL_MECHANISM):
        return None
    return offered


def _authenticate(sock: socket.socket, where: str, mechanism: str, options: Mapping[str, Any]) -> str | None:
    user = str(options.get("sasl_plain_username") or "")
    password = options.get("sasl_plain_password")
    password = str.__str__(password) if isinstance(password, str) else ""
    if mechanism == "PLAIN":
        steps = [lambda _: ("\0".join([user, user, password])).encode()]
    elif mechanism in SCRAM_HASHES:
        steps = _scram_steps(user, password, SCRAM_HASHES[mechanism])
    else:
        return None  # GSSAPI, OAUTHBEARER: not probed here
    challenge = b""
    for i, step in enumerate(steps):
        resp = _request(sock, SASL_AUTHENTICATE, 0, 10 + i, _bytes(step(challenge)))
        error = struct.unpack(">h", resp[:2])[0]
        size = struct.unpack(">h", resp[2:4])[0]
        message = resp[4 : 4 + size].decode(errors="replace") if size >= 0 else ""
        pos = 4 + max(size, 0)
        if error == SASL_AUTHENTICATION_FAILED:
            return f"authentication failed for user {user!r} at {where} with {mechanism}: {message or 'refused'}"
        if error:
            return f"SASL authentication at {where} ended with Kafka error {error}: {message}"
        challenge = resp[pos + 4 : pos + 4 + struct.unpack(">i", resp[pos : pos + 4])[0]]
    return None


def _scram_steps(user: str, password: str, hash_fn: Any, nonce: str | None = None) -> list:
    """The two client messages of RFC 5802, each computed from the server's previous one."""
    nonce = nonce or base64.b64encode(os.urandom(18)).decode()
    bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={nonce}"

    def final(server_first_raw: bytes) -> bytes:
        server_first = server_first_raw.decode()
        fields = dict(part.split("=", 1) for part in server_first.split(","))
        if not fields.get("r", "").startswith(nonce):
            raise ValueError("SCRAM server nonce does not extend the client's")
        salted = hashlib.pbkdf2_hmac(hash_fn().name, password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
        client_key = hmac.new(salted, b"Client Key", hash_fn).digest()
        without_proof = f"c=biws,r={fields['r']}"
        auth_message = f"{bare},{server_first},{without_proof}".encode()
        signature = hmac.new(hash_fn(client_key).digest(), auth_message, hash_fn).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    return [lambda _: f"n,,{bare}".encode(), final]


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def _bytes(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    client = b"fraud-access-probe"
    msg = struct.pack(">hhih", api_key, version, corr, len(client)) + client + body
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
