"""The pure parts of worker/edges/access.py: the SCRAM messages and the one-line refusals.

The probe against a real SASL_SSL broker (each misconfiguration and its line) is
tests/integration/test_secured_kafka.py.
"""

from __future__ import annotations

import hashlib
import socket
import threading

import pytest
from kafka import errors

from worker.edges.access import _scram_steps, diagnose, refusal


def test_scram_client_final_message_matches_rfc_7677():
    # RFC 7677, section 3: SCRAM-SHA-256 with user "user", password "pencil".
    first, final = _scram_steps("user", "pencil", hashlib.sha256, nonce="rOprNGfwEbeRWgbNEkqO")
    assert first(b"") == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    assert final(server_first) == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )


def test_scram_refuses_a_server_nonce_that_does_not_extend_the_clients():
    _, final = _scram_steps("user", "pencil", hashlib.sha256, nonce="abc")
    with pytest.raises(ValueError, match="nonce"):
        final(b"r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")


@pytest.mark.parametrize(
    "exc, phrase",
    [
        (errors.SaslAuthenticationFailedError("invalid credentials"), "authentication failed: invalid credentials"),
        (errors.GroupAuthorizationFailedError("g1"), "not authorised for consumer group g1"),
        (errors.TopicAuthorizationFailedError("t1"), "not authorised for topic t1"),
        (errors.TransactionalIdAuthorizationFailedError("x"), "not authorised for transactional id x"),
        (errors.ClusterAuthorizationFailedError(), "not authorised for a cluster operation"),
    ],
)
def test_each_refusal_is_one_line_naming_what(exc, phrase):
    line = refusal(exc, group_id="g1")
    assert line is not None and phrase in line and "\n" not in line


def test_other_errors_are_no_refusal():
    assert refusal(errors.KafkaTimeoutError("Unable to bootstrap")) is None
    assert refusal(errors.KafkaConnectionError("socket disconnected")) is None
    assert refusal(ValueError("x")) is None


def test_a_server_that_cannot_be_reached_is_not_a_refusal():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    assert diagnose(f"127.0.0.1:{port}", {"security_protocol": "SASL_SSL"}) is None


def test_a_tls_client_at_a_server_that_hangs_up_is_told_it_may_not_be_tls():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def hang_up() -> None:
        for _ in range(2):  # the reachability check, then the handshake
            conn, _ = server.accept()
            conn.recv(1024)
            conn.close()

    t = threading.Thread(target=hang_up, daemon=True)
    t.start()
    try:
        line = diagnose(f"127.0.0.1:{port}", {"security_protocol": "SSL"}, timeout=2)
    finally:
        server.close()
    assert line is not None and "TLS handshake" in line and "may not be a TLS one" in line
