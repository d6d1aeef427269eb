"""Defects the fuzz campaign (``make fuzz``) found, each pinned by the input that showed it."""

from __future__ import annotations

import pytest

from worker.feedback.records import BadRecord, decode_label, decode_score


@pytest.mark.parametrize("decode", [decode_score, decode_label])
def test_feedback_record_nested_too_deep_is_a_bad_record_not_a_recursion_error(decode):
    # Found by the records target: msgspec raises RecursionError past its depth limit (in a field it
    # skips, a field the record does not have), which the consumer did not catch.
    deep = b"[" * 100_000
    for value in (b'{"transaction_id": "tx-1", "extra": ' + deep, b'{"extra": ' + deep + b"]" * 100_000 + b"}"):
        with pytest.raises(BadRecord) as caught:
            decode(value)
        assert caught.value.reason in ("not_json", "schema")


def _rows(n: int) -> bytes:
    return ("V1,V2,Class\n" + "".join(f"{i * 0.37 % 5:.4f},{i * 1.3 % 7:.4f},{i % 2}\n" for i in range(n))).encode()


@pytest.mark.parametrize(
    "name,tail,needle",
    [
        ("late-latin1.csv", b"1,\xff,0\n", "codec can't decode"),
        ("late-huge-field.csv", b'1,"' + b"x" * 200_000 + b'",0\n', "field larger than field limit"),
        ("cut.csv.gz", None, "Compressed file ended"),
    ],
)
def test_training_csv_trouble_past_the_sampled_rows_is_a_data_error(tmp_path, name, tail, needle):
    # Found by the training_data target: the first 1,000 rows are read under a DataError guard, the
    # second pass was not, so a bad byte, field or gzip end further down escaped as a traceback.
    import gzip

    from training.data import load_csv, read_header
    from training.errors import DataError

    path = tmp_path / name
    path.write_bytes(_rows(3000) + tail if tail is not None else gzip.compress(_rows(3000))[:-300])
    with pytest.raises(DataError, match=needle):
        load_csv(path, min_rows=2)
    assert read_header(path) == ["V1", "V2", "Class"]


def test_training_label_not_found_error_escapes_control_characters_in_column_names(tmp_path):
    from training.data import load_csv
    from training.errors import DataError

    path = tmp_path / "d.csv"
    path.write_bytes(b"V1,\x1b]0;owned\x07V2\r\n1,2\r\n")
    with pytest.raises(DataError) as caught:
        load_csv(path, min_rows=1)
    assert "\x1b" not in str(caught.value) and "\\x1b]0;owned\\x07V2" in str(caught.value)


def test_health_http09_request_with_keep_alive_header_is_closed_after_its_bare_answer():
    # Found by the health target: a two-word request line is answered HTTP/0.9-style (a body with no
    # status line or length), yet a "Connection: keep-alive" header kept the connection open.
    import socket
    import time

    from prometheus_client import CollectorRegistry

    from worker.edges.health import HealthState
    from worker.edges.health_server import HealthServer, _Conn

    server = HealthServer("127.0.0.1", 0, CollectorRegistry(), HealthState(30.0))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    try:
        for head, keep in ((b"GET /healthz\r\nConnection: keep-alive\r\n\r\n", False),
                           (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", True)):  # fmt: skip
            conn = _Conn(ours, time.monotonic() + 5)
            conn.buf = bytearray(head)
            assert server._answer(conn) is keep, head
    finally:
        server.close()
        ours.close()
        client.close()


def test_a_rule_set_of_deeply_nested_toml_or_a_huge_integer_is_one_line_not_a_crash():
    # Found by the rules target: tomllib raises RecursionError on deeply nested arrays and ValueError on an
    # integer of more than 4,300 digits, neither of them a TOMLDecodeError.
    from worker.core.rules import RuleSetError, parse_rule_set

    for doc in (b"x = " + b"[" * 5000, b"x = " + b"9" * 5001, b"[[rule]]\nid = 'a'\naction = 'block'\nwhen = '"
                + b"not " * 900 + b"score > 0.5'\n"):  # fmt: skip
        with pytest.raises(RuleSetError) as caught:
            parse_rule_set(doc, "rules.toml")
        assert "\n" not in str(caught.value)


def test_reading_a_small_list_file_sets_aside_no_more_than_its_size(tmp_path):
    # Found by the rules target: read(cap + 1) set 64 MiB aside for a list file of a few bytes.
    import tracemalloc

    from worker.core.rule_lists import read_list

    path = tmp_path / "deny.txt"
    path.write_text("t1\nt2\n")
    tracemalloc.start()
    try:
        assert read_list(str(path)) == frozenset({"t1", "t2"})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak
