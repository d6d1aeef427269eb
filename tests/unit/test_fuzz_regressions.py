"""Defects the fuzz campaign (``make fuzz``) found, each pinned by the input that showed it."""

from __future__ import annotations

import pytest

from worker.feedback.records import BadRecord, decode_label, decode_score


@pytest.mark.parametrize("decode", [decode_score, decode_label])
def test_feedback_record_nested_too_deep_is_a_bad_record_not_a_recursion_error(decode):
    # Found by the records target: msgspec raises RecursionError past its depth limit, which the
    # consumer did not catch.
    for value in (b"[" * 100_000, b'{"transaction_id": ' + b"[" * 5000 + b"]" * 5000 + b"}"):
        with pytest.raises(BadRecord) as caught:
            decode(value)
        assert caught.value.reason in ("not_json", "schema")
